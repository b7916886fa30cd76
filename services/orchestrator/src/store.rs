//! The orchestrator's tables, in portable SQL (runs on Postgres and SQLite alike).

use crate::property_spec::PropertySpec;
use crate::{Error, Result};
use gomark_platform::ErrorKind;
use gomark_storage::Database;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

macro_rules! property_query {
    ($tail:literal) => {
        concat!(
            "SELECT company_id, spec, archived, version, sync_state, sync_error, updated_at FROM deal_properties",
            $tail
        )
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyRow {
    pub id: String,
    pub name: String,
    pub hubspot_portal_id: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SyncState {
    Pending,
    Applied,
    Failed,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Pending => "pending",
            SyncState::Applied => "applied",
            SyncState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(SyncState::Pending),
            "applied" => Ok(SyncState::Applied),
            "failed" => Ok(SyncState::Failed),
            other => Err(gomark_storage::StorageError::Corrupt(format!("sync state {other:?}")).into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PropertyRow {
    pub company_id: String,
    pub spec: PropertySpec,
    pub archived: bool,
    /// Bumped by every accepted change; hubspot-sync reports results against it.
    pub version: i64,
    pub sync_state: SyncState,
    pub sync_error: String,
    pub updated_at: i64,
}

/// One line of the audit log, before it is written.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub company_id: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Narrows an audit listing; empty strings and zeros mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub resource_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub company_id: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub before_json: String,
    pub after_json: String,
    pub at: i64,
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    pub async fn insert_company(&self, conn: &mut AnyConnection, company: &CompanyRow) -> Result<()> {
        let inserted =
            sqlx::query("INSERT INTO companies (id, name, hubspot_portal_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&company.id)
                .bind(&company.name)
                .bind(&company.hubspot_portal_id)
                .bind(company.created_at)
                .execute(conn)
                .await;
        match inserted {
            Err(e) if gomark_storage::is_unique_violation(&e) => Err(Error::kind_of(
                ErrorKind::AlreadyExists,
                format!("a company named {:?} already exists", company.name),
            )),
            other => other.map(|_| ()).map_err(Error::from),
        }
    }

    pub async fn get_company(&self, id: &str) -> Result<Option<CompanyRow>> {
        let row = sqlx::query("SELECT id, name, hubspot_portal_id, created_at FROM companies WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| company(&r)).transpose()
    }

    /// Companies in id order (ids are time-ordered UUIDv7), after the cursor `after`.
    pub async fn list_companies(&self, after: Option<&str>, limit: i64) -> Result<Vec<CompanyRow>> {
        let rows = sqlx::query(
            "SELECT id, name, hubspot_portal_id, created_at FROM companies WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(company).collect()
    }

    pub async fn count_companies(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM companies").fetch_one(self.db.pool()).await?.try_get("n")?)
    }

    pub async fn get_property(
        &self,
        conn: &mut AnyConnection,
        company_id: &str,
        name: &str,
    ) -> Result<Option<PropertyRow>> {
        let row = sqlx::query(property_query!(" WHERE company_id = $1 AND name = $2"))
            .bind(company_id)
            .bind(name)
            .fetch_optional(conn)
            .await?;
        row.map(|r| property(&r)).transpose()
    }

    pub async fn list_properties(&self, company_id: &str, include_archived: bool) -> Result<Vec<PropertyRow>> {
        let rows = sqlx::query(property_query!(" WHERE company_id = $1 AND archived <= $2 ORDER BY name"))
            .bind(company_id)
            .bind(i64::from(include_archived))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(property).collect()
    }

    /// Writes `row`; `previous_version` is the version the change was based on (None for a
    /// new property). A concurrent change in between is a conflict, never a lost update.
    pub async fn save_property(
        &self,
        conn: &mut AnyConnection,
        row: &PropertyRow,
        previous_version: Option<i64>,
    ) -> Result<()> {
        let spec = serde_json::to_string(&row.spec)?;
        let written = match previous_version {
            None => sqlx::query(
                "INSERT INTO deal_properties (company_id, name, spec, archived, version, sync_state, sync_error, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&row.company_id)
            .bind(&row.spec.name)
            .bind(&spec)
            .bind(i64::from(row.archived))
            .bind(row.version)
            .bind(row.sync_state.as_str())
            .bind(&row.sync_error)
            .bind(row.updated_at)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()),
            Some(previous) => sqlx::query(
                "UPDATE deal_properties SET spec = $1, archived = $2, version = $3, sync_state = $4, sync_error = $5, updated_at = $6 \
                 WHERE company_id = $7 AND name = $8 AND version = $9",
            )
            .bind(&spec)
            .bind(i64::from(row.archived))
            .bind(row.version)
            .bind(row.sync_state.as_str())
            .bind(&row.sync_error)
            .bind(row.updated_at)
            .bind(&row.company_id)
            .bind(&row.spec.name)
            .bind(previous)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()),
        };
        match written {
            Ok(1) => Ok(()),
            Ok(_) => Err(concurrent_change(&row.spec.name)),
            Err(e) if gomark_storage::is_unique_violation(&e) => Err(concurrent_change(&row.spec.name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Records hubspot-sync's result, if it is about the current version.
    pub async fn set_sync_result(
        &self,
        conn: &mut AnyConnection,
        company_id: &str,
        name: &str,
        version: i64,
        state: SyncState,
        error: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE deal_properties SET sync_state = $1, sync_error = $2 WHERE company_id = $3 AND name = $4 AND version = $5",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(company_id)
        .bind(name)
        .bind(version)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn append_audit(&self, conn: &mut AnyConnection, record: &AuditRecord) -> Result<()> {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
        sqlx::query(
            "INSERT INTO audit_log (company_id, actor, action, resource, before_json, after_json, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.company_id)
        .bind(&record.actor)
        .bind(&record.action)
        .bind(&record.resource)
        .bind(json(&record.before))
        .bind(json(&record.after))
        .bind(gomark_storage::now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// A company's audit entries, newest first, before the cursor `before_id`.
    pub async fn list_audit(
        &self,
        company_id: &str,
        filter: &AuditFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT id, company_id, actor, action, resource, before_json, after_json, at FROM audit_log \
             WHERE company_id = $1 AND id < $2 AND ($4 = '' OR actor = $4) AND at >= $5 AND at <= $6 \
             AND ($7 = '' OR substr(resource, 1, length($7)) = $7) ORDER BY id DESC LIMIT $3",
        )
        .bind(company_id)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .bind(filter.actor.clone())
        .bind(filter.from_ms)
        .bind(if filter.to_ms == 0 { i64::MAX } else { filter.to_ms })
        .bind(filter.resource_prefix.clone())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    company_id: r.try_get("company_id")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    resource: r.try_get("resource")?,
                    before_json: r.try_get("before_json")?,
                    after_json: r.try_get("after_json")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }
}

fn concurrent_change(name: &str) -> Error {
    Error::kind_of(
        ErrorKind::Conflict,
        format!("deal property {name} was changed concurrently; read it again and retry"),
    )
}

fn company(r: &AnyRow) -> Result<CompanyRow> {
    Ok(CompanyRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        hubspot_portal_id: r.try_get("hubspot_portal_id")?,
        created_at: r.try_get("created_at")?,
    })
}

fn property(r: &AnyRow) -> Result<PropertyRow> {
    let spec: String = r.try_get("spec")?;
    let archived: i64 = r.try_get("archived")?;
    let sync_state: String = r.try_get("sync_state")?;
    Ok(PropertyRow {
        company_id: r.try_get("company_id")?,
        spec: serde_json::from_str(&spec)?,
        archived: archived != 0,
        version: r.try_get("version")?,
        sync_state: SyncState::parse(&sync_state)?,
        sync_error: r.try_get("sync_error")?,
        updated_at: r.try_get("updated_at")?,
    })
}
