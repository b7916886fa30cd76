-- `deals_by_pipeline` served one rare read (GetStageUsage: a company's live deals per stage,
-- which the primary key's company prefix serves as well) and cost every deal write an index
-- entry.
DROP INDEX IF EXISTS deals_by_pipeline;
