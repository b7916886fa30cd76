-- An Upso account belongs to one company: two companies on one account would enroll its
-- customers twice and overwrite each other's cadences.
CREATE UNIQUE INDEX accounts_upso_account_id ON accounts (upso_account_id);
