-- `deals_by_pipeline` served one rare read (GetStageUsage: a company's live deals per stage,
-- which the primary key's company prefix serves as well) and cost every deal write an index
-- entry. Its key held the stage, so no stage move of a deal could be a HOT update either.
DROP INDEX IF EXISTS deals_by_pipeline;

-- Room on each page for a deal's next version: an update that changes no key column then
-- stays on its page (HOT) and writes no index entry at all.
ALTER TABLE deals SET (fillfactor = 80);
