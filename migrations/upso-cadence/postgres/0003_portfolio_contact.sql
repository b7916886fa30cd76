-- Portfolio-wide contact rules and caps exact across replicas.
--
-- Every enrollment GoMark makes is first reserved here, in the transaction that checks
-- the caps it counts against (company calendar day, mailbox, rolling windows, and per
-- person across every company): the ledger the caps are counted from.
CREATE TABLE touches (
    id TEXT PRIMARY KEY,
    -- The person: the contact's normalised email, the same in every company.
    person TEXT NOT NULL,
    company_id TEXT NOT NULL,
    cadence_key TEXT NOT NULL,
    mailbox_id TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX touches_by_person ON touches (person, at);
CREATE INDEX touches_by_company ON touches (company_id, at);

-- One row per company and per person; a reservation first updates both rows (company,
-- then person), which serialises the cap checks of racing replicas (a row lock on
-- Postgres, the write lock on SQLite).
CREATE TABLE cap_locks (
    scope TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);

-- People no company may contact: opt-outs (from any company), do-not-contact, legal holds.
CREATE TABLE portfolio_suppressions (
    person TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    -- The company whose customer opted out, or '' when set for the portfolio.
    source_company_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The person of a running enrollment, for cross-company cadence exclusivity ('' for rows
-- older than this migration).
ALTER TABLE running_enrollments ADD COLUMN person TEXT NOT NULL DEFAULT '';
CREATE INDEX running_by_person ON running_enrollments (person);
