//! Which HubSpot portal, which (sealed) credentials and which pinned API version each
//! company uses.

use crate::credentials::{ClientCredentials, Credential, Vault, VaultError};
use gomark_storage::{Database, StorageError};
use hubspot_client::{AccessToken, ApiVersion};
use sqlx::Row;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("stored API version: {0}")]
    Version(#[from] hubspot_client::UnknownApiVersion),
}

impl From<sqlx::Error> for PortalError {
    fn from(err: sqlx::Error) -> Self {
        PortalError::Storage(err.into())
    }
}

#[derive(Clone, Debug)]
pub struct Portals {
    db: Database,
    vault: Arc<Vault>,
    /// The version a newly registered portal is pinned to.
    default_version: ApiVersion,
}

/// A company's portal, credentials opened.
#[derive(Debug, Clone)]
pub struct Portal {
    pub company_id: String,
    pub portal_id: String,
    pub credential: Credential,
    /// The HubSpot API version every call for this portal uses.
    pub api_version: ApiVersion,
    /// Client credentials to read the portal's webhooks journal; `None`: no journal.
    pub journal: Option<ClientCredentials>,
}

impl Portal {
    /// The token to call HubSpot with, labelled with the portal (per-portal budgets) and
    /// pinned to its API version (every path the client builds follows it).
    pub fn token(&self) -> AccessToken {
        self.credential.bearer().for_portal(self.portal_id.clone()).with_api_version(self.api_version)
    }

    /// [`Self::token`] pinned to another version: the conformance probe of a version move.
    pub fn token_for(&self, version: ApiVersion) -> AccessToken {
        self.token().with_api_version(version)
    }
}

const COLUMNS: &str = "company_id, portal_id, credential, key_id, api_version, journal_credential";

impl Portals {
    pub fn new(db: Database, vault: Arc<Vault>) -> Self {
        Self { db, vault, default_version: ApiVersion::default() }
    }

    /// Pins newly registered portals to `version` (existing pins are never changed by it).
    #[must_use]
    pub fn with_default_version(mut self, version: ApiVersion) -> Self {
        self.default_version = version;
        self
    }

    /// Stores or replaces a company's portal and API credential, sealed. A portal already
    /// registered keeps its pinned version and journal credentials.
    pub async fn register(
        &self,
        company_id: &str,
        portal_id: &str,
        credential: &Credential,
    ) -> Result<(), PortalError> {
        let sealed = self.vault.seal(company_id, credential)?;
        sqlx::query(
            "INSERT INTO portals (company_id, portal_id, credential, key_id, expires_at, updated_at, api_version) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (company_id) DO UPDATE SET portal_id = excluded.portal_id, credential = excluded.credential, \
             key_id = excluded.key_id, expires_at = excluded.expires_at, updated_at = excluded.updated_at",
        )
        .bind(company_id)
        .bind(portal_id)
        .bind(sealed)
        .bind(self.vault.current_key_id())
        .bind(credential.expires_at_ms())
        .bind(gomark_storage::now_ms())
        .bind(self.default_version.as_str())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Sets (or with `None` clears) the client credentials the company's journal is read with.
    /// The row must exist (register first); sealed with the key the row's credential uses
    /// (re-sealing keeps both on one key).
    pub async fn set_journal_credential(
        &self,
        company_id: &str,
        journal: Option<&ClientCredentials>,
    ) -> Result<(), PortalError> {
        // Sealing with the current key means the row's key_id must be current too: re-seal the
        // API credential first if it is not (rare: right after a key rotation).
        if let Some(portal) = self.get(company_id).await?
            && self.key_id(company_id).await?.as_deref() != Some(self.vault.current_key_id())
        {
            self.register(&portal.company_id, &portal.portal_id, &portal.credential).await?;
        }
        let sealed = journal.map(|j| self.vault.seal(company_id, j)).transpose()?;
        sqlx::query("UPDATE portals SET journal_credential = $1, updated_at = $2 WHERE company_id = $3")
            .bind(sealed)
            .bind(gomark_storage::now_ms())
            .bind(company_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn key_id(&self, company_id: &str) -> Result<Option<String>, PortalError> {
        let row = sqlx::query("SELECT key_id FROM portals WHERE company_id = $1")
            .bind(company_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("key_id")).transpose()?)
    }

    /// Pins the company's portal to `version`. Only after a conformance probe passed.
    pub async fn set_api_version(&self, company_id: &str, version: ApiVersion) -> Result<(), PortalError> {
        sqlx::query("UPDATE portals SET api_version = $1, updated_at = $2 WHERE company_id = $3")
            .bind(version.as_str())
            .bind(gomark_storage::now_ms())
            .bind(company_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    fn open(&self, r: &sqlx::any::AnyRow) -> Result<Portal, PortalError> {
        let company_id: String = r.try_get("company_id")?;
        let stored: String = r.try_get("credential")?;
        let key_id: String = r.try_get("key_id")?;
        let version: String = r.try_get("api_version")?;
        let journal: Option<String> = r.try_get("journal_credential")?;
        // Rows written before sealing existed hold the bare private-app token.
        let credential = if key_id.is_empty() {
            Credential::PrivateApp { token: stored }
        } else {
            self.vault.open(&company_id, &stored)?
        };
        let journal = journal.map(|sealed| self.vault.open(&company_id, &sealed)).transpose()?;
        Ok(Portal {
            company_id,
            portal_id: r.try_get("portal_id")?,
            credential,
            api_version: version.parse()?,
            journal,
        })
    }

    pub async fn get(&self, company_id: &str) -> Result<Option<Portal>, PortalError> {
        let sql = format!("SELECT {COLUMNS} FROM portals WHERE company_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(company_id).fetch_optional(self.db.pool()).await?;
        row.map(|r| self.open(&r)).transpose()
    }

    /// The company a HubSpot portal belongs to.
    pub async fn company_of_portal(&self, portal_id: &str) -> Result<Option<String>, PortalError> {
        let row = sqlx::query("SELECT company_id FROM portals WHERE portal_id = $1")
            .bind(portal_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("company_id")).transpose()?)
    }

    /// The companies of `portal_ids` that GoMark holds, by portal id (portals it does not
    /// hold are absent), in one statement per hundred portals.
    pub async fn companies_of_portals(
        &self,
        portal_ids: &[String],
    ) -> Result<std::collections::HashMap<String, String>, PortalError> {
        let mut conn = self.db.pool().acquire().await?;
        Ok(companies_of_portals(&mut conn, portal_ids).await?)
    }

    /// Every registered company, for the periodic loops.
    pub async fn company_ids(&self) -> Result<Vec<String>, PortalError> {
        let rows = sqlx::query("SELECT company_id FROM portals ORDER BY company_id").fetch_all(self.db.pool()).await?;
        Ok(rows.iter().map(|r| r.try_get("company_id")).collect::<Result<_, _>>()?)
    }

    /// The companies whose portal is read through its webhooks journal.
    pub async fn journal_company_ids(&self) -> Result<Vec<String>, PortalError> {
        let rows =
            sqlx::query("SELECT company_id FROM portals WHERE journal_credential IS NOT NULL ORDER BY company_id")
                .fetch_all(self.db.pool())
                .await?;
        Ok(rows.iter().map(|r| r.try_get("company_id")).collect::<Result<_, _>>()?)
    }

    /// OAuth grants expiring before `before_ms`.
    pub async fn expiring(&self, before_ms: i64) -> Result<Vec<Portal>, PortalError> {
        let sql = format!("SELECT {COLUMNS} FROM portals WHERE expires_at IS NOT NULL AND expires_at < $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(before_ms).fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| self.open(r)).collect()
    }

    /// Re-seals every credential not sealed with the current key; returns how many.
    pub async fn reseal(&self) -> Result<usize, PortalError> {
        let sql = format!("SELECT {COLUMNS} FROM portals WHERE key_id <> $1");
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.vault.current_key_id()).fetch_all(self.db.pool()).await?;
        for r in &rows {
            let portal = self.open(r)?;
            self.register(&portal.company_id, &portal.portal_id, &portal.credential).await?;
            if portal.journal.is_some() {
                self.set_journal_credential(&portal.company_id, portal.journal.as_ref()).await?;
            }
        }
        Ok(rows.len())
    }
}

/// [`Portals::companies_of_portals`] on a given connection (a caller's transaction).
pub(crate) async fn companies_of_portals(
    conn: &mut sqlx::AnyConnection,
    portal_ids: &[String],
) -> Result<std::collections::HashMap<String, String>, sqlx::Error> {
    let mut ids: Vec<&String> = portal_ids.iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut companies = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(100) {
        // Only numbered placeholders are spliced in; the values are bound.
        let sql = format!(
            "SELECT portal_id, company_id FROM portals WHERE portal_id IN (VALUES {})",
            crate::deals::placeholders(chunk.len(), 1, 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind((*id).clone());
        }
        for row in query.fetch_all(&mut *conn).await? {
            companies.insert(row.try_get("portal_id")?, row.try_get("company_id")?);
        }
    }
    Ok(companies)
}
