-- Money is exact and typed: amounts become NUMERIC (never floating point) with the deal's
-- currency beside them; each company's currency is declared in the configuration; dated exchange rates convert the
-- portfolio roll-up into the reporting currency.

-- The view reads deal_history.amount, whose type changes: dropped and recreated below.
DROP VIEW stage_transitions;

-- Doubles written before this migration convert to the decimal they print as.
ALTER TABLE deal_history ALTER COLUMN amount TYPE NUMERIC USING amount::numeric;
ALTER TABLE deals ALTER COLUMN amount TYPE NUMERIC USING amount::numeric;

-- ISO 4217 code of the deal's amount; '' for versions stored before currencies were
-- known, which count in the company's currency.
ALTER TABLE deal_history ADD COLUMN currency TEXT NOT NULL DEFAULT '';
ALTER TABLE deals ADD COLUMN currency TEXT NOT NULL DEFAULT '';

CREATE VIEW stage_transitions AS
SELECT company_id, deal_id, pipeline_id, from_stage, stage_id AS to_stage, modified_ms AS at_ms, amount, currency
FROM (
    SELECT h.*, LAG(stage_id) OVER (PARTITION BY company_id, deal_id ORDER BY modified_ms) AS from_stage
    FROM deal_history h
) t
WHERE from_stage IS NULL OR from_stage <> stage_id;

-- Exchange rates by date: 1 from_currency = rate to_currency on rate_date (YYYY-MM-DD,
-- UTC). A roll-up uses the latest rate on or before its as-of date.
CREATE TABLE fx_rates (
    from_currency TEXT NOT NULL,
    to_currency TEXT NOT NULL,
    rate_date TEXT NOT NULL,
    rate NUMERIC NOT NULL,
    PRIMARY KEY (from_currency, to_currency, rate_date)
);
