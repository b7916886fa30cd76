-- A HubSpot portal belongs to one company: two companies on one portal would count its
-- deals twice and overwrite each other's properties.
CREATE UNIQUE INDEX portals_portal_id ON portals (portal_id);
