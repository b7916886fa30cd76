-- HubSpot generates pipeline and stage ids: what GoMark's ids map to, per company.
CREATE TABLE pipeline_ids (
    company_id TEXT NOT NULL,
    gomark_pipeline_id TEXT NOT NULL,
    hubspot_pipeline_id TEXT NOT NULL,
    PRIMARY KEY (company_id, gomark_pipeline_id)
);

CREATE TABLE stage_ids (
    company_id TEXT NOT NULL,
    gomark_pipeline_id TEXT NOT NULL,
    gomark_stage_id TEXT NOT NULL,
    hubspot_stage_id TEXT NOT NULL,
    PRIMARY KEY (company_id, gomark_pipeline_id, gomark_stage_id)
);

-- Properties GoMark created in a portal: only these may it ever archive.
CREATE TABLE managed_properties (
    company_id TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (company_id, name)
);
