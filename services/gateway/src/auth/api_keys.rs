//! API keys: random, shown once, stored as a SHA-256 hash, scoped to a role on a company
//! or the portfolio, optionally expiring, revocable.

use gomark_platform::{Caller, Role, Scope};
use gomark_storage::{Database, StorageError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every key starts with this, so a leaked one is recognisable by secret scanners.
pub const KEY_PREFIX: &str = "gmk_";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    pub role: Role,
    pub company_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl ApiKeyRecord {
    pub fn scope(&self) -> Scope {
        self.company_id.clone().map_or(Scope::Portfolio, Scope::Company)
    }
}

/// A key just created: `key` is the only copy of the secret there will ever be.
#[derive(Debug)]
pub struct NewApiKey {
    pub key: String,
    pub record: ApiKeyRecord,
}

#[derive(Clone, Debug)]
pub struct ApiKeys {
    db: Database,
    recent: Arc<Mutex<HashMap<String, Recent>>>,
}

/// A key that authenticated a moment ago. Hashing and looking up the key on every request
/// was a quarter of the gateway's CPU; for [`RECENT_FOR`] the answer is reused instead.
/// Revocation on this replica clears it at once; another replica's revocation is seen
/// within [`RECENT_FOR`] (SECURITY.md).
#[derive(Debug, Clone)]
struct Recent {
    caller: Caller,
    expires_at: Option<i64>,
    checked: Instant,
}

const RECENT_FOR: Duration = Duration::from_secs(1);
/// Bounds the memory: beyond this many distinct keys in one second, start over.
const RECENT_MAX: usize = 10_000;

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

fn record(r: &AnyRow) -> Result<ApiKeyRecord, StorageError> {
    let role: String = r.try_get("role")?;
    let company: String = r.try_get("company_id")?;
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        key_prefix: r.try_get("key_prefix")?,
        role: role.parse().map_err(|_| StorageError::Corrupt(format!("role {role:?}")))?,
        company_id: (!company.is_empty()).then_some(company),
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const COLUMNS: &str = "id, name, key_prefix, role, company_id, created_by, created_at, expires_at, revoked_at";

impl ApiKeys {
    pub fn new(db: Database) -> Self {
        Self { db, recent: Arc::default() }
    }

    pub async fn create(
        &self,
        name: &str,
        role: Role,
        company_id: Option<&str>,
        expires_at: Option<i64>,
        created_by: &str,
    ) -> Result<NewApiKey, StorageError> {
        let key = generate();
        let record = self.insert_known(name, &key, role, company_id, created_by).await?;
        if let Some(expires_at) = expires_at {
            sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
                .bind(expires_at)
                .bind(&record.id)
                .execute(self.db.pool())
                .await?;
        }
        Ok(NewApiKey { key, record: ApiKeyRecord { expires_at, ..record } })
    }

    /// Stores a key whose secret the caller already has (a configured bootstrap key).
    pub async fn insert_known(
        &self,
        name: &str,
        key: &str,
        role: Role,
        company_id: Option<&str>,
        created_by: &str,
    ) -> Result<ApiKeyRecord, StorageError> {
        let record = ApiKeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_owned(),
            key_prefix: key.chars().take(KEY_PREFIX.len() + 8).collect(),
            role,
            company_id: company_id.map(str::to_owned),
            created_by: created_by.to_owned(),
            created_at: gomark_storage::now_ms(),
            expires_at: None,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, role, company_id, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(hash(key))
        .bind(&record.key_prefix)
        .bind(record.role.as_str())
        .bind(record.company_id.clone().unwrap_or_default())
        .bind(&record.created_by)
        .bind(record.created_at)
        .execute(self.db.pool())
        .await?;
        Ok(record)
    }

    /// The caller a key stands for, if it is known, unexpired and not revoked.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Caller>, StorageError> {
        let now = gomark_storage::now_ms();
        if let Some(hit) = self.recent(key)
            && hit.expires_at.is_none_or(|at| at > now)
        {
            return Ok(Some(hit.caller));
        }
        let found = self.look_up(key).await?;
        if let Some((caller, expires_at)) = &found {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= RECENT_MAX {
                recent.clear();
            }
            recent.insert(
                key.to_owned(),
                Recent { caller: caller.clone(), expires_at: *expires_at, checked: Instant::now() },
            );
        }
        Ok(found.map(|(caller, _)| caller))
    }

    fn recent(&self, key: &str) -> Option<Recent> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.get(key).filter(|r| r.checked.elapsed() < RECENT_FOR).cloned()
    }

    /// Forgets every recent answer, so a revocation here holds from the next request.
    fn forget_recent(&self) {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    async fn look_up(&self, key: &str) -> Result<Option<(Caller, Option<i64>)>, StorageError> {
        let row = sqlx::query("SELECT id, name, key_prefix, role, company_id, created_by, created_at, expires_at, revoked_at FROM api_keys WHERE key_hash = $1")
            .bind(hash(key))
            .fetch_optional(self.db.pool())
            .await?;
        let Some(record) = row.as_ref().map(record).transpose()? else { return Ok(None) };
        let now = gomark_storage::now_ms();
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        let caller = Caller { actor: format!("apikey:{}", record.id), role: record.role, scope: record.scope() };
        Ok(Some((caller, record.expires_at)))
    }

    pub async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>, StorageError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// One page of the keys in `scope`, newest id first: at most `limit` keys with ids
    /// below `before` (the last id of the previous page).
    pub async fn list(
        &self,
        scope: &Scope,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApiKeyRecord>, StorageError> {
        // Placeholders are numbered in bind order: company, then cursor, then limit.
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut placeholder = || {
            n += 1;
            format!("${n}")
        };
        if matches!(scope, Scope::Company(_)) {
            conditions.push(format!("company_id = {}", placeholder()));
        }
        if before.is_some() {
            conditions.push(format!("id < {}", placeholder()));
        }
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let sql = format!("SELECT {COLUMNS} FROM api_keys {filter} ORDER BY id DESC LIMIT {}", placeholder());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Scope::Company(id) = scope {
            query = query.bind(id.clone());
        }
        if let Some(before) = before {
            query = query.bind(before.to_owned());
        }
        let rows = query.bind(limit).fetch_all(self.db.pool()).await?;
        rows.iter().map(record).collect()
    }

    /// Revokes a key; true if it was active.
    pub async fn revoke(&self, id: &str) -> Result<bool, StorageError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(gomark_storage::now_ms())
            .bind(id)
            .execute(self.db.pool())
            .await?;
        self.forget_recent();
        Ok(done.rows_affected() == 1)
    }

    pub async fn has_active_portfolio_admin(&self) -> Result<bool, StorageError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_keys WHERE role = 'admin' AND company_id = '' AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(gomark_storage::now_ms())
        .fetch_one(self.db.pool())
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }
}
