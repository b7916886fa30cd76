//! Which HubSpot portal, and which token, each company uses.

use gomark_storage::{Database, StorageError};
use hubspot_client::AccessToken;
use sqlx::Row;

#[derive(Clone, Debug)]
pub struct Portals {
    db: Database,
}

/// A company's portal; the token is only readable through `hubspot_client::AccessToken`,
/// which never prints it.
#[derive(Debug, Clone)]
pub struct Portal {
    pub company_id: String,
    pub portal_id: String,
    pub token: AccessToken,
}

impl Portals {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Stores or replaces a company's portal and token.
    pub async fn register(&self, company_id: &str, portal_id: &str, token: &str) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO portals (company_id, portal_id, token, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (company_id) DO UPDATE SET portal_id = excluded.portal_id, token = excluded.token, updated_at = excluded.updated_at",
        )
        .bind(company_id)
        .bind(portal_id)
        .bind(token)
        .bind(gomark_storage::now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn get(&self, company_id: &str) -> Result<Option<Portal>, StorageError> {
        let row = sqlx::query("SELECT company_id, portal_id, token FROM portals WHERE company_id = $1")
            .bind(company_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| {
            Ok(Portal {
                company_id: r.try_get("company_id")?,
                portal_id: r.try_get("portal_id")?,
                token: AccessToken::new(r.try_get::<String, _>("token")?),
            })
        })
        .transpose()
    }
}
