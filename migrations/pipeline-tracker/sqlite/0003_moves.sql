-- Versions a `deal.stage_changed` webhook made before the deal's re-read arrived: the new
-- stage or pipeline over the deal as last known. The next version of the deal that HubSpot
-- gives (the re-read) replaces each such version at or before its own instant, so in the
-- end the history holds HubSpot's versions only.
ALTER TABLE deal_history ADD COLUMN guessed BIGINT NOT NULL DEFAULT 0;

-- Usually empty: a version's write looks here for the guesses it replaces.
CREATE INDEX deal_history_guessed ON deal_history (company_id, deal_id, modified_ms) WHERE guessed = 1;
