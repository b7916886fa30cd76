-- Deal properties reach portals only through plans and rollouts now: the per-property
-- change requests and their version bookkeeping are gone.
DROP TABLE IF EXISTS applied_property_versions;
