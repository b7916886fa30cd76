//! Which HubSpot portal, and which (sealed) credential, each company uses.

use crate::credentials::{Credential, Vault, VaultError};
use gomark_storage::{Database, StorageError};
use hubspot_client::AccessToken;
use sqlx::Row;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Vault(#[from] VaultError),
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
}

/// A company's portal, credential opened.
#[derive(Debug, Clone)]
pub struct Portal {
    pub company_id: String,
    pub portal_id: String,
    pub credential: Credential,
}

impl Portal {
    /// The token to call HubSpot with, labelled with the portal so per-portal budgets apply.
    pub fn token(&self) -> AccessToken {
        self.credential.bearer().for_portal(self.portal_id.clone())
    }
}

impl Portals {
    pub fn new(db: Database, vault: Arc<Vault>) -> Self {
        Self { db, vault }
    }

    /// Stores or replaces a company's portal and credential, sealed.
    pub async fn register(
        &self,
        company_id: &str,
        portal_id: &str,
        credential: &Credential,
    ) -> Result<(), PortalError> {
        let sealed = self.vault.seal(company_id, credential)?;
        sqlx::query(
            "INSERT INTO portals (company_id, portal_id, credential, key_id, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (company_id) DO UPDATE SET portal_id = excluded.portal_id, credential = excluded.credential, \
             key_id = excluded.key_id, expires_at = excluded.expires_at, updated_at = excluded.updated_at",
        )
        .bind(company_id)
        .bind(portal_id)
        .bind(sealed)
        .bind(self.vault.current_key_id())
        .bind(credential.expires_at_ms())
        .bind(gomark_storage::now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    fn open(&self, company_id: String, portal_id: String, stored: &str, key_id: &str) -> Result<Portal, PortalError> {
        // Rows written before sealing existed hold the bare private-app token.
        let credential = if key_id.is_empty() {
            Credential::PrivateApp { token: stored.to_owned() }
        } else {
            self.vault.open(&company_id, stored)?
        };
        Ok(Portal { company_id, portal_id, credential })
    }

    pub async fn get(&self, company_id: &str) -> Result<Option<Portal>, PortalError> {
        let row = sqlx::query("SELECT company_id, portal_id, credential, key_id FROM portals WHERE company_id = $1")
            .bind(company_id)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(r) = row else { return Ok(None) };
        let stored: String = r.try_get("credential")?;
        let key_id: String = r.try_get("key_id")?;
        Ok(Some(self.open(r.try_get("company_id")?, r.try_get("portal_id")?, &stored, &key_id)?))
    }

    /// The company a HubSpot portal belongs to.
    pub async fn company_of_portal(&self, portal_id: &str) -> Result<Option<String>, PortalError> {
        let row = sqlx::query("SELECT company_id FROM portals WHERE portal_id = $1")
            .bind(portal_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("company_id")).transpose()?)
    }

    /// Every registered company, for the periodic loops.
    pub async fn company_ids(&self) -> Result<Vec<String>, PortalError> {
        let rows = sqlx::query("SELECT company_id FROM portals ORDER BY company_id").fetch_all(self.db.pool()).await?;
        Ok(rows.iter().map(|r| r.try_get("company_id")).collect::<Result<_, _>>()?)
    }

    /// OAuth grants expiring before `before_ms`.
    pub async fn expiring(&self, before_ms: i64) -> Result<Vec<Portal>, PortalError> {
        let rows = sqlx::query(
            "SELECT company_id, portal_id, credential, key_id FROM portals WHERE expires_at IS NOT NULL AND expires_at < $1",
        )
        .bind(before_ms)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let stored: String = r.try_get("credential")?;
                let key_id: String = r.try_get("key_id")?;
                self.open(r.try_get("company_id")?, r.try_get("portal_id")?, &stored, &key_id)
            })
            .collect()
    }

    /// Re-seals every credential not sealed with the current key; returns how many.
    pub async fn reseal(&self) -> Result<usize, PortalError> {
        let rows = sqlx::query("SELECT company_id, portal_id, credential, key_id FROM portals WHERE key_id <> $1")
            .bind(self.vault.current_key_id())
            .fetch_all(self.db.pool())
            .await?;
        for r in &rows {
            let stored: String = r.try_get("credential")?;
            let key_id: String = r.try_get("key_id")?;
            let portal = self.open(r.try_get("company_id")?, r.try_get("portal_id")?, &stored, &key_id)?;
            self.register(&portal.company_id, &portal.portal_id, &portal.credential).await?;
        }
        Ok(rows.len())
    }
}
