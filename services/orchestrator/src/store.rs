//! The orchestrator's tables, in portable SQL (runs on Postgres and SQLite alike).

use crate::{Error, Result};
use gomark_platform::ErrorKind;
use gomark_storage::Database;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

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
}

/// A saved plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub id: String,
    /// The revision planned; 0 for a proposed document.
    pub revision: i64,
    /// The latest revision when the plan was made.
    pub base_revision: i64,
    /// A proposed document, as canonical JSON.
    pub document: Option<String>,
    pub message: String,
    pub rolled_back_to: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    /// The plan as answered (`gomark.orchestrator.v1.PlanResponse`, protobuf).
    pub body: Vec<u8>,
    pub rollout_id: Option<String>,
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
    /// Exact: actions are a closed vocabulary (`rollout.start`), not free text.
    pub action: String,
}

/// One line of the audit log as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub company_id: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    /// `None` when the resource did not exist before the change.
    pub before: Option<serde_json::Value>,
    /// `None` when the change removed the resource.
    pub after: Option<serde_json::Value>,
    pub at: i64,
}

/// Companies per drift request statement: well under both engines' bind-parameter limits.
const REQUESTS_PER_STATEMENT: usize = 500;

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
             AND ($7 = '' OR substr(resource, 1, length($7)) = $7) AND ($8 = '' OR action = $8) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(company_id)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .bind(filter.actor.clone())
        .bind(filter.from_ms)
        .bind(if filter.to_ms == 0 { i64::MAX } else { filter.to_ms })
        .bind(filter.resource_prefix.clone())
        .bind(filter.action.clone())
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
                    before: stored_json(r.try_get("before_json")?),
                    after: stored_json(r.try_get("after_json")?),
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    pub async fn insert_plan(&self, plan: &PlanRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO plans (id, revision, base_revision, document, message, rolled_back_to, created_by, created_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&plan.id)
        .bind(plan.revision)
        .bind(plan.base_revision)
        .bind(&plan.document)
        .bind(&plan.message)
        .bind(plan.rolled_back_to)
        .bind(&plan.created_by)
        .bind(plan.created_at)
        .bind(&plan.body)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn get_plan(&self, id: &str) -> Result<Option<PlanRow>> {
        let row = sqlx::query(
            "SELECT id, revision, base_revision, document, message, rolled_back_to, created_by, created_at, body, rollout_id \
             FROM plans WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| {
            Ok(PlanRow {
                id: r.try_get("id")?,
                revision: r.try_get("revision")?,
                base_revision: r.try_get("base_revision")?,
                document: r.try_get("document")?,
                message: r.try_get("message")?,
                rolled_back_to: r.try_get("rolled_back_to")?,
                created_by: r.try_get("created_by")?,
                created_at: r.try_get("created_at")?,
                body: r.try_get("body")?,
                rollout_id: r.try_get("rollout_id")?,
            })
        })
        .transpose()
    }

    /// Marks the plan applied by `rollout_id`; false when it already was (a plan applies once).
    pub async fn mark_plan_applied(&self, conn: &mut AnyConnection, id: &str, rollout_id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE plans SET rollout_id = $1 WHERE id = $2 AND rollout_id IS NULL")
            .bind(rollout_id)
            .bind(id)
            .execute(conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives every company with an applied revision a drift check time, spread over the
    /// first `interval_ms`; returns how many were added.
    pub async fn schedule_new_drift_checks(&self, now: i64, interval_ms: i64) -> Result<usize> {
        let rows = sqlx::query(
            "SELECT a.company_id FROM applied_revisions a LEFT JOIN drift_schedule d ON d.company_id = a.company_id \
             WHERE d.company_id IS NULL",
        )
        .fetch_all(self.db.pool())
        .await?;
        for r in &rows {
            let company: String = r.try_get("company_id")?;
            sqlx::query(
                "INSERT INTO drift_schedule (company_id, next_check_at) VALUES ($1, $2) ON CONFLICT (company_id) DO NOTHING",
            )
            .bind(&company)
            .bind(now + rand::random_range(0..interval_ms.max(1)))
            .execute(self.db.pool())
            .await?;
        }
        Ok(rows.len())
    }

    /// Claims up to `limit` due drift checks for this replica: each is moved to its next
    /// time by a conditional update, so two replicas never claim the same check.
    pub async fn claim_drift_checks(&self, now: i64, interval_ms: i64, limit: i64) -> Result<Vec<String>> {
        let due = sqlx::query(
            "SELECT company_id FROM drift_schedule WHERE next_check_at <= $1 ORDER BY next_check_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        let mut claimed = Vec::new();
        for r in &due {
            let company: String = r.try_get("company_id")?;
            let won = sqlx::query(
                "UPDATE drift_schedule SET next_check_at = $1, last_checked_at = $2 WHERE company_id = $3 AND next_check_at <= $2",
            )
            .bind(now + interval_ms)
            .bind(now)
            .bind(&company)
            .execute(self.db.pool())
            .await?
            .rows_affected()
                == 1;
            if won {
                claimed.push(company);
            }
        }
        Ok(claimed)
    }

    /// Pulls the next drift check of each of `companies` in to `at`, but not sooner than
    /// `cooldown_ms` after its last check (then it is due when the cooldown ends: never
    /// dropped); a company not scheduled yet (just applied) is scheduled at `at`, if it has
    /// anything to check. Says whether any check moved: a repeated request moves none.
    ///
    /// Two statements for any number of companies: a busy portfolio sends thousands of deal
    /// events a second, and a read and a write per company and batch were a fifth of the
    /// distributed mode's statements at 2,000 changes a second.
    pub async fn request_drift_checks(&self, companies: &[&str], at: i64, cooldown_ms: i64) -> Result<bool> {
        let mut moved = 0;
        for chunk in companies.chunks(REQUESTS_PER_STATEMENT) {
            // Only numbered placeholders are spliced in; the values are bound.
            let list = |from: usize| (from..from + chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let schedule = format!(
                "INSERT INTO drift_schedule (company_id, next_check_at) SELECT company_id, $1 FROM applied_revisions \
                 WHERE company_id IN ({}) ON CONFLICT (company_id) DO NOTHING",
                list(2)
            );
            let due = "CASE WHEN last_checked_at + $2 > $1 THEN last_checked_at + $2 ELSE $1 END";
            let pull_in = format!(
                "UPDATE drift_schedule SET next_check_at = {due} WHERE company_id IN ({}) AND next_check_at > {due}",
                list(3)
            );
            let mut schedule = sqlx::query(sqlx::AssertSqlSafe(schedule)).bind(at);
            let mut pull_in = sqlx::query(sqlx::AssertSqlSafe(pull_in)).bind(at).bind(cooldown_ms);
            for company in chunk {
                schedule = schedule.bind((*company).to_owned());
                pull_in = pull_in.bind((*company).to_owned());
            }
            moved += schedule.execute(self.db.pool()).await?.rows_affected();
            moved += pull_in.execute(self.db.pool()).await?.rows_affected();
        }
        Ok(moved > 0)
    }

    /// When the next drift check is due, if any is scheduled.
    pub async fn next_drift_check_at(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(next_check_at) AS at FROM drift_schedule").fetch_one(self.db.pool()).await?;
        Ok(row.try_get("at")?)
    }

    /// The revision last applied to each company in full, with when.
    pub async fn applied_revisions(&self) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query("SELECT company_id, revision, applied_at FROM applied_revisions ORDER BY company_id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("company_id")?, r.try_get("revision")?, r.try_get("applied_at")?))).collect()
    }

    pub async fn applied_revision(&self, company_id: &str) -> Result<Option<(i64, i64)>> {
        let row = sqlx::query("SELECT revision, applied_at FROM applied_revisions WHERE company_id = $1")
            .bind(company_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| Ok((r.try_get("revision")?, r.try_get("applied_at")?))).transpose()
    }

    /// Records that `revision` is what the company's portal now holds.
    pub async fn set_applied_revision(&self, conn: &mut AnyConnection, company_id: &str, revision: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO applied_revisions (company_id, revision, applied_at) VALUES ($1, $2, $3) \
             ON CONFLICT (company_id) DO UPDATE SET revision = excluded.revision, applied_at = excluded.applied_at",
        )
        .bind(company_id)
        .bind(revision)
        .bind(gomark_storage::now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }
}

fn company(r: &AnyRow) -> Result<CompanyRow> {
    Ok(CompanyRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        hubspot_portal_id: r.try_get("hubspot_portal_id")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A before/after column as `append_audit` wrote it: empty for "absent". Text that is not
/// JSON (this code never writes any) reads as null rather than failing the whole page.
fn stored_json(text: String) -> Option<serde_json::Value> {
    (!text.is_empty()).then(|| serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}
