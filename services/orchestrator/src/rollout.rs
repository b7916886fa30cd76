//! Rollouts: applying a revision to many companies as a durable job.
//!
//! One step per company, run wave by wave (the canary wave 0 first), at most `concurrency`
//! at a time. A step asks hubspot-sync, then upso-cadence, to apply the company's effective
//! configuration; each plans afresh with its one planning function and writes only what is
//! missing, so a step run again never repeats a write. A rollout of a saved plan passes the
//! action ids the plan approved: a portal that now needs anything else fails its step with
//! "plan is stale" instead of doing it.
//!
//! A replica runs a step under a lease it renews; another replica takes the step over only
//! once the lease has expired, so any number of replicas, restarted at any moment, run each
//! step once at a time. Waiting for a portal's HubSpot budget is progress, not failure;
//! other transient failures are retried with jittered backoff up to [`MAX_ATTEMPTS`]. When
//! more than the threshold of finished steps failed, the rollout halts.

use crate::revisions::{PORTFOLIO, Revisions};
use crate::store::{AuditRecord, Store};
use crate::{Actor, Error, Result};
use gomark_platform::grpc_client::TracedChannel;
use gomark_platform::{Caller, ErrorKind, PublicError, Shutdown};
use gomark_proto::config::v1 as config_pb;
use gomark_proto::hubspot_sync::v1::ApplyPortalRequest;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient;
use gomark_proto::orchestrator::v1 as pb;
use gomark_proto::upso_cadence::v1::ApplyCadencesRequest;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use gomark_storage::Engine;
use prost::Message;
use serde_json::json;
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// Transient failures a step may have before it fails.
pub const MAX_ATTEMPTS: i64 = 5;
const TICK: Duration = Duration::from_millis(250);
/// How long a replica owns a step it runs without renewing; renewed every third of it.
const LEASE_MS: i64 = 30_000;
/// How long a step's outcome is retried when the database is away, before the lease
/// expiry hands the step to whichever replica claims it next.
const RECORD_FOR: Duration = Duration::from_secs(60);
/// The Postgres advisory lock that serialises rollout starts (any constant, used only here).
const ROLLOUT_START_LOCK: i64 = 0x6d61_726b_726f_6c6c;

/// What to roll out.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// 0 means the latest revision.
    pub revision: i64,
    /// Every company of the revision when empty.
    pub company_ids: Vec<String>,
    /// 0 means the default (4).
    pub concurrency: u32,
    /// 0 means the default (20).
    pub failure_threshold_pct: u32,
    /// A saved plan: its id, and the action ids it approved per company.
    pub plan: Option<(String, BTreeMap<String, Vec<String>>)>,
    /// Wait behind a company's unfinished rollout instead of refusing (edits of one company).
    pub queue_if_busy: bool,
}

pub struct Rollouts {
    store: Store,
    revisions: Arc<Revisions>,
    hubspot_sync: HubspotSyncServiceClient<TracedChannel>,
    /// None when upso-cadence is not configured: steps apply HubSpot only.
    upso_cadence: Option<UpsoCadenceServiceClient<TracedChannel>>,
    wake: Notify,
    /// This replica, as step leases name it.
    replica: String,
    /// How long a call to another service may take; told to it, so it can stop in time.
    call_timeout: Duration,
}

/// A step this replica claimed.
#[derive(Debug, Clone)]
struct Claimed {
    rollout: String,
    revision: i64,
    company_id: String,
    company_key: String,
    /// The saved plan's approved action ids; None when the step plans as it runs.
    approved: Option<Vec<String>>,
}

/// How a run of a step ended.
enum Outcome {
    Done {
        performed: Vec<config_pb::PlannedAction>,
        blocked: Vec<String>,
    },
    Failed {
        performed: Vec<config_pb::PlannedAction>,
        reason: String,
    },
    /// Try again at `at` (epoch ms); `counts` when it uses up an attempt; `waiting` when
    /// it waits for its portal's HubSpot budget.
    Later {
        performed: Vec<config_pb::PlannedAction>,
        reason: String,
        at: i64,
        counts: bool,
        waiting: bool,
    },
}

fn backoff_ms(attempts: i64) -> i64 {
    let base = 500i64.saturating_mul(1 << attempts.clamp(0, 6));
    base + rand::random_range(0..=base / 2)
}

fn transient(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Unavailable | ErrorKind::RateLimited | ErrorKind::Timeout | ErrorKind::Internal)
}

fn decode_performed(bytes: Option<Vec<u8>>) -> Vec<config_pb::PlannedAction> {
    bytes.and_then(|b| pb::RolloutStep::decode(b.as_slice()).ok()).map(|s| s.performed).unwrap_or_default()
}

/// Upso's action in the plan's terms.
fn cadence_action(a: gomark_proto::upso_cadence::v1::CadenceAction) -> config_pb::PlannedAction {
    let op = match a.op.as_str() {
        "create" => config_pb::Op::Create,
        "archive" => config_pb::Op::Archive,
        _ => config_pb::Op::Update,
    };
    config_pb::PlannedAction {
        warnings: Vec::new(),
        id: a.id,
        target_kind: "cadence".into(),
        target: a.cadence_key,
        op: op as i32,
        changes: a
            .fields
            .into_iter()
            .map(|field| config_pb::FieldChange { field, before: None, after: None })
            .collect(),
        blocked: None,
    }
}

impl Rollouts {
    pub fn new(
        store: Store,
        revisions: Arc<Revisions>,
        hubspot_sync: TracedChannel,
        upso_cadence: Option<TracedChannel>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            store,
            revisions,
            hubspot_sync: HubspotSyncServiceClient::new(hubspot_sync),
            upso_cadence: upso_cadence.map(UpsoCadenceServiceClient::new),
            wake: Notify::new(),
            replica: uuid::Uuid::new_v4().to_string(),
            call_timeout,
        }
    }

    pub async fn start(&self, actor: &Actor, req: StartRequest) -> Result<pb::Rollout> {
        let concurrency = match req.concurrency {
            0 => 4,
            n if n <= 64 => i64::from(n),
            _ => return Err(Error::invalid("concurrency", "must be 1 to 64")),
        };
        let threshold = match req.failure_threshold_pct {
            0 => 20,
            n if n <= 100 => i64::from(n),
            _ => return Err(Error::invalid("failureThresholdPct", "must be 1 to 100")),
        };
        let (revision, document) = self.revisions.document(req.revision).await?;
        let mut steps = Vec::new();
        for (key, overlay) in &document.companies {
            if req.company_ids.is_empty() || req.company_ids.contains(&overlay.company_id) {
                steps.push((key.clone(), overlay.company_id.clone(), i64::from(overlay.settings.rollout_wave)));
            }
        }
        if let Some(missing) = req.company_ids.iter().find(|id| !steps.iter().any(|(_, c, _)| c == *id)) {
            return Err(Error::invalid("companyIds", format!("company {missing} is not in revision {revision}")));
        }
        if steps.is_empty() {
            return Err(Error::invalid("revision", "names no company to roll out to"));
        }
        let (plan_id, approved) = match &req.plan {
            Some((id, approved)) => (id.clone(), Some(approved)),
            None => (String::new(), None),
        };
        let id = uuid::Uuid::now_v7().to_string();
        let now = gomark_storage::now_ms();
        let mut tx = self.store.db().begin().await?;
        // Starts are serialised so two cannot both find their companies free. (SQLite:
        // the first INSERT below takes the database's write lock before the check reads.)
        if self.store.db().engine() == Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ROLLOUT_START_LOCK).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO rollouts (id, revision, state, concurrency, failure_threshold_pct, created_by, created_at, updated_at, plan_id) \
             VALUES ($1, $2, 'running', $3, $4, $5, $6, $6, $7)",
        )
        .bind(&id)
        .bind(revision)
        .bind(concurrency)
        .bind(threshold)
        .bind(&actor.0)
        .bind(now)
        .bind(&plan_id)
        .execute(&mut *tx)
        .await?;
        for (key, company, wave) in &steps {
            let approved =
                approved.map(|a| serde_json::to_string(&a.get(company).cloned().unwrap_or_default())).transpose()?;
            sqlx::query(
                "INSERT INTO rollout_steps (rollout_id, company_id, company_key, wave, state, updated_at, approved) \
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6)",
            )
            .bind(&id)
            .bind(company)
            .bind(key)
            .bind(wave)
            .bind(now)
            .bind(approved)
            .execute(&mut *tx)
            .await?;
        }
        if plan_id.is_empty() {
            self.supersede(&mut tx, actor, &id, revision).await?;
        }
        let overtaken = match plan_id.is_empty() && req.queue_if_busy {
            true => self.overtaken_by(&mut tx, &id, revision).await?,
            false => None,
        };
        // Two rollouts applying one portal at once would leave whichever ran last: a
        // company is in at most one unfinished rollout; edits of one company queue behind.
        // (One overtaken by a newer edit's rollout would queue too: it is superseded below.)
        let waits_for = match &overtaken {
            Some((newer, _)) => Some(format!("waiting for rollout {newer}")),
            None => match self.busy(&mut tx, &id).await? {
                Some((company, other, state)) if !req.queue_if_busy => {
                    return Err(Error::kind_of(
                        ErrorKind::FailedPrecondition,
                        format!(
                            "company {company} is in rollout {other}, which is {state}: let it finish, or cancel it first"
                        ),
                    ));
                }
                Some((_, other, state)) => Some(format!("waiting for rollout {other} ({state})")),
                None => None,
            },
        };
        if let Some(reason) = waits_for {
            sqlx::query("UPDATE rollouts SET state = 'queued', reason = $1 WHERE id = $2")
                .bind(reason)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        if !plan_id.is_empty() && !self.store.mark_plan_applied(&mut tx, &plan_id, &id).await? {
            return Err(Error::kind_of(ErrorKind::FailedPrecondition, format!("plan {plan_id} was already applied")));
        }
        self.store
            .append_audit(
                &mut tx,
                &AuditRecord {
                    company_id: PORTFOLIO.into(),
                    actor: actor.0.clone(),
                    action: "rollout.start".into(),
                    resource: format!("rollout/{id}"),
                    before: None,
                    after: Some(json!({
                        "revision": revision,
                        "companies": steps.len(),
                        "concurrency": concurrency,
                        "plan": (!plan_id.is_empty()).then_some(&plan_id),
                    })),
                },
            )
            .await?;
        if let Some((newer, newer_revision)) = &overtaken {
            self.mark_superseded(&mut tx, actor, (&id, revision), (newer, *newer_revision)).await?;
        }
        tx.commit().await?;
        self.wake.notify_one();
        tracing::info!(rollout = %id, revision, companies = steps.len(), plan = %plan_id, "rollout started");
        self.get(&id).await
    }

    /// Rolls `revision` out to the one company an edit changed: queued behind the company's
    /// unfinished rollout, if any, and superseded by (or superseding) the rollouts of its
    /// other edits.
    pub async fn start_for_edit(&self, actor: &Actor, revision: i64, company_id: &str) -> Result<pb::Rollout> {
        let request = StartRequest {
            revision,
            company_ids: vec![company_id.to_owned()],
            queue_if_busy: true,
            ..StartRequest::default()
        };
        self.start(actor, request).await
    }

    /// Ends the queued rollouts that rollout `id` (of `revision`, planning as it runs) makes
    /// moot: those that plan as they run too, of this revision or an earlier one, for companies
    /// all in `id`. Each step converges its company to the whole of its revision, so `id`
    /// applies everything they would have. Without this, a burst of edits to one company
    /// converges its portal once per edit; and a queued rollout promoted after `id` ran would
    /// take the portal back to its older revision.
    async fn supersede(&self, tx: &mut sqlx::AnyConnection, actor: &Actor, id: &str, revision: i64) -> Result<()> {
        let moot = sqlx::query(
            "SELECT r.id, r.revision FROM rollouts r WHERE r.state = 'queued' AND r.plan_id = '' AND r.revision <= $2 \
             AND r.id <> $1 AND NOT EXISTS (SELECT 1 FROM rollout_steps s WHERE s.rollout_id = r.id \
             AND s.company_id NOT IN (SELECT company_id FROM rollout_steps WHERE rollout_id = $1))",
        )
        .bind(id)
        .bind(revision)
        .fetch_all(&mut *tx)
        .await?;
        for row in &moot {
            let old: String = row.try_get("id")?;
            self.mark_superseded(&mut *tx, actor, (&old, row.try_get("revision")?), (id, revision)).await?;
        }
        Ok(())
    }

    /// The unfinished rollout, planning as it runs, of a newer revision than `revision` and
    /// covering every company of rollout `id`: it makes `id` moot on arrival. That happens
    /// when two edits of one company start their rollouts out of revision order (two requests
    /// at once, on one replica or two); run after it, `id` would take the portal back.
    async fn overtaken_by(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        revision: i64,
    ) -> Result<Option<(String, i64)>> {
        let newer = sqlx::query(
            "SELECT r.id, r.revision FROM rollouts r WHERE r.state IN ('queued', 'running', 'paused', 'halted') \
             AND r.plan_id = '' AND r.revision > $2 AND r.id <> $1 AND NOT EXISTS (SELECT 1 FROM rollout_steps s \
             WHERE s.rollout_id = $1 AND s.company_id NOT IN (SELECT company_id FROM rollout_steps WHERE rollout_id = r.id)) \
             ORDER BY r.revision DESC, r.id LIMIT 1",
        )
        .bind(id)
        .bind(revision)
        .fetch_optional(&mut *tx)
        .await?;
        newer.map(|r| Ok((r.try_get("id")?, r.try_get("revision")?))).transpose()
    }

    /// Ends queued rollout `old` (of its revision), which `by` (of its own) applies, with its
    /// audit record; nothing when `old` has already left the queue (a cancel does not take the
    /// start lock, so it may have just ended).
    async fn mark_superseded(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        (old, old_revision): (&str, i64),
        (by, revision): (&str, i64),
    ) -> Result<()> {
        let ended = sqlx::query(
            "UPDATE rollouts SET state = 'superseded', reason = $1, updated_at = $2 WHERE id = $3 AND state = 'queued'",
        )
        .bind(format!("superseded by rollout {by} (revision {revision}), which applies it"))
        .bind(gomark_storage::now_ms())
        .bind(old)
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() == 0 {
            return Ok(());
        }
        cancel_pending_steps(&mut *tx, old).await?;
        self.store
            .append_audit(
                &mut *tx,
                &AuditRecord {
                    company_id: PORTFOLIO.into(),
                    actor: actor.0.clone(),
                    action: "rollout.supersede".into(),
                    resource: format!("rollout/{old}"),
                    before: Some(json!({"state": "queued", "revision": old_revision})),
                    after: Some(json!({"state": "superseded", "by": by, "revision": revision})),
                },
            )
            .await?;
        tracing::info!(rollout = %old, by = %by, revision, "rollout superseded before it ran");
        Ok(())
    }

    /// A company of rollout `id` that another unfinished rollout holds, with that rollout.
    async fn busy(&self, conn: &mut sqlx::AnyConnection, id: &str) -> Result<Option<(String, String, String)>> {
        let row = sqlx::query(
            "SELECT s.company_id, r.id, r.state FROM rollout_steps s JOIN rollouts r ON r.id = s.rollout_id \
             WHERE r.id <> $1 AND r.state IN ('running', 'paused', 'halted') \
             AND s.company_id IN (SELECT company_id FROM rollout_steps WHERE rollout_id = $1) LIMIT 1",
        )
        .bind(id)
        .fetch_optional(conn)
        .await?;
        row.map(|r| Ok((r.try_get("company_id")?, r.try_get("id")?, r.try_get("state")?))).transpose()
    }

    pub async fn get(&self, id: &str) -> Result<pb::Rollout> {
        let mut rollout = self.header(id).await?;
        let steps = sqlx::query(
            "SELECT company_id, company_key, wave, state, attempts, applied, detail, performed, waiting_until FROM rollout_steps \
             WHERE rollout_id = $1 ORDER BY wave, company_key",
        )
        .bind(id)
        .fetch_all(self.store.db().pool())
        .await?;
        let now = gomark_storage::now_ms();
        for s in &steps {
            let state: String = s.try_get("state")?;
            let waiting_until: i64 = s.try_get("waiting_until")?;
            let waiting = state == "pending" && waiting_until > now;
            let step = pb::RolloutStep {
                company_id: s.try_get("company_id")?,
                company_key: s.try_get("company_key")?,
                wave: s.try_get::<i64, _>("wave")? as u32,
                state,
                attempts: s.try_get::<i64, _>("attempts")? as u32,
                applied: s.try_get::<i64, _>("applied")? as u32,
                detail: s.try_get("detail")?,
                performed: decode_performed(s.try_get("performed")?),
                waiting_until: waiting.then(|| crate::companies::timestamp(waiting_until)),
            };
            rollout.waiting += u32::from(waiting);
            count(&mut rollout, &step.state, 1);
            rollout.steps.push(step);
        }
        rollout.total = rollout.steps.len() as u32;
        Ok(rollout)
    }

    /// A rollout with its step counts but not its steps: what a listing shows. The counts
    /// come from the database, so a listing of many large rollouts reads no step's actions.
    async fn summary(&self, id: &str) -> Result<pb::Rollout> {
        let mut rollout = self.header(id).await?;
        let counts = sqlx::query(
            "SELECT state, COUNT(*) AS n, SUM(CASE WHEN state = 'pending' AND waiting_until > $2 THEN 1 ELSE 0 END) AS waiting \
             FROM rollout_steps WHERE rollout_id = $1 GROUP BY state",
        )
        .bind(id)
        .bind(gomark_storage::now_ms())
        .fetch_all(self.store.db().pool())
        .await?;
        for c in &counts {
            let state: String = c.try_get("state")?;
            let n = u32::try_from(c.try_get::<i64, _>("n")?).unwrap_or(u32::MAX);
            rollout.waiting += u32::try_from(c.try_get::<i64, _>("waiting")?).unwrap_or(u32::MAX);
            rollout.total += n;
            count(&mut rollout, &state, n);
        }
        Ok(rollout)
    }

    /// A rollout's own row, without its steps or their counts.
    async fn header(&self, id: &str) -> Result<pb::Rollout> {
        let row = sqlx::query(
            "SELECT id, revision, state, reason, concurrency, failure_threshold_pct, created_by, created_at, updated_at, plan_id FROM rollouts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.db().pool())
        .await?
        .ok_or_else(|| PublicError::not_found(format!("rollout {id}")))?;
        let mut rollout = pb::Rollout {
            id: row.try_get("id")?,
            revision: row.try_get("revision")?,
            state: row.try_get("state")?,
            reason: row.try_get("reason")?,
            concurrency: row.try_get::<i64, _>("concurrency")? as u32,
            failure_threshold_pct: row.try_get::<i64, _>("failure_threshold_pct")? as u32,
            created_by: row.try_get("created_by")?,
            created_at: Some(crate::companies::timestamp(row.try_get("created_at")?)),
            plan_id: row.try_get("plan_id")?,
            ..pb::Rollout::default()
        };
        // Nothing changes a completed, cancelled or superseded rollout, so its last update is its end.
        if matches!(rollout.state.as_str(), "completed" | "cancelled" | "superseded") {
            rollout.finished_at = Some(crate::companies::timestamp(row.try_get("updated_at")?));
        }
        Ok(rollout)
    }

    /// Rollouts newest first, before the cursor, each with its step counts but not its steps.
    pub async fn list(&self, before: Option<&str>, limit: i64) -> Result<Vec<pb::Rollout>> {
        let rows = sqlx::query("SELECT id FROM rollouts WHERE id < $1 ORDER BY id DESC LIMIT $2")
            .bind(before.unwrap_or("~"))
            .bind(limit)
            .fetch_all(self.store.db().pool())
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            out.push(self.summary(&r.try_get::<String, _>("id")?).await?);
        }
        Ok(out)
    }

    /// Pause, resume or cancel: allowed only from the states that make sense.
    pub async fn control(&self, actor: &Actor, id: &str, to: &str) -> Result<pb::Rollout> {
        let allowed_from: &[&str] = match to {
            "paused" => &["running"],
            "running" => &["paused", "halted"],
            _ => &["running", "paused", "halted", "queued"],
        };
        let current = self.header(id).await?;
        if !allowed_from.contains(&current.state.as_str()) {
            return Err(Error::kind_of(
                ErrorKind::FailedPrecondition,
                format!("rollout {id} is {}; it cannot become {to}", current.state),
            ));
        }
        let mut tx = self.store.db().begin().await?;
        sqlx::query("UPDATE rollouts SET state = $1, reason = '', updated_at = $2 WHERE id = $3")
            .bind(to)
            .bind(gomark_storage::now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if to == "cancelled" {
            cancel_pending_steps(&mut tx, id).await?;
        }
        if to == "running" && current.state == "halted" {
            // Resuming after a halt gives the failed steps another chance.
            sqlx::query(
                "UPDATE rollout_steps SET state = 'pending', attempts = 0 WHERE rollout_id = $1 AND state = 'failed'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let action = match to {
            "paused" => "rollout.pause",
            "running" => "rollout.resume",
            _ => "rollout.cancel",
        };
        self.store
            .append_audit(
                &mut tx,
                &AuditRecord {
                    company_id: PORTFOLIO.into(),
                    actor: actor.0.clone(),
                    action: action.into(),
                    resource: format!("rollout/{id}"),
                    before: Some(json!({"state": current.state})),
                    after: Some(json!({"state": to})),
                },
            )
            .await?;
        tx.commit().await?;
        self.wake.notify_one();
        self.get(id).await
    }

    /// Starts queued rollouts whose companies are free, oldest first.
    async fn promote_queued(&self) -> Result<()> {
        let queued = sqlx::query("SELECT id FROM rollouts WHERE state = 'queued' ORDER BY created_at, id")
            .fetch_all(self.store.db().pool())
            .await?;
        for r in &queued {
            let id: String = r.try_get("id")?;
            let mut tx = self.store.db().begin().await?;
            if self.store.db().engine() == Engine::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ROLLOUT_START_LOCK).execute(&mut *tx).await?;
            }
            if self.busy(&mut tx, &id).await?.is_none() {
                sqlx::query("UPDATE rollouts SET state = 'running', reason = '', updated_at = $1 WHERE id = $2 AND state = 'queued'")
                    .bind(gomark_storage::now_ms())
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Starts what may start, and settles finished rollouts.
    async fn tick(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>, shutdown: &Shutdown) -> Result<()> {
        self.promote_queued().await?;
        let running = sqlx::query(
            "SELECT id, revision, concurrency, failure_threshold_pct FROM rollouts WHERE state = 'running'",
        )
        .fetch_all(self.store.db().pool())
        .await?;
        let now = gomark_storage::now_ms();
        for r in &running {
            let id: String = r.try_get("id")?;
            let revision: i64 = r.try_get("revision")?;
            let concurrency: i64 = r.try_get("concurrency")?;
            let threshold: i64 = r.try_get("failure_threshold_pct")?;
            // A running step whose lease expired is as good as pending: its replica is gone.
            let counts = sqlx::query(
                "SELECT CASE WHEN state = 'running' AND lease_until < $2 THEN 'pending' ELSE state END AS s, \
                 COUNT(*) AS n, MIN(wave) AS wave FROM rollout_steps WHERE rollout_id = $1 \
                 GROUP BY CASE WHEN state = 'running' AND lease_until < $2 THEN 'pending' ELSE state END",
            )
            .bind(&id)
            .bind(now)
            .fetch_all(self.store.db().pool())
            .await?;
            let (mut done, mut failed, mut in_flight, mut open_wave) = (0i64, 0i64, 0i64, i64::MAX);
            for c in &counts {
                let state: String = c.try_get("s")?;
                let n: i64 = c.try_get("n")?;
                let wave: i64 = c.try_get("wave")?;
                match state.as_str() {
                    "done" => done += n,
                    "failed" => failed += n,
                    "running" => {
                        in_flight += n;
                        open_wave = open_wave.min(wave);
                    }
                    "pending" => open_wave = open_wave.min(wave),
                    _ => {}
                }
            }
            let finished = done + failed;
            if over_threshold(failed, finished, threshold) {
                let reason = format!("{failed} of {finished} finished steps failed (threshold {threshold}%)");
                self.settle(&id, "halted", &reason).await?;
                continue;
            }
            if open_wave == i64::MAX {
                let reason = if failed > 0 { format!("{failed} step(s) failed") } else { String::new() };
                self.settle(&id, "completed", &reason).await?;
                continue;
            }
            let free = (concurrency - in_flight).max(0);
            if free == 0 {
                continue;
            }
            // Only the lowest unfinished wave runs: the canary must succeed before the rest.
            let mut conn = self.store.db().pool().acquire().await?;
            for step in self.claim(&mut conn, &id, revision, open_wave, free).await? {
                let this = self.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    this.run_claimed(step, &shutdown).await;
                    this.wake.notify_one();
                });
            }
        }
        Ok(())
    }

    /// Claims up to `limit` due steps of `wave`, in one statement: a tick is one write however
    /// many slots are free. The claim is conditional: a step another replica holds under a
    /// live lease is never taken (Postgres re-checks the outer condition on each row it
    /// locks, so two replicas claiming at once split the steps between them).
    async fn claim(
        &self,
        conn: &mut sqlx::AnyConnection,
        rollout: &str,
        revision: i64,
        wave: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>> {
        let now = gomark_storage::now_ms();
        let rows = sqlx::query(
            "UPDATE rollout_steps SET state = 'running', lease_owner = $1, lease_until = $2, updated_at = $3, waiting_until = 0 \
             WHERE rollout_id = $4 AND wave = $5 \
             AND ((state = 'pending' AND next_attempt_at <= $3) OR (state = 'running' AND lease_until < $3)) \
             AND company_id IN (SELECT company_id FROM rollout_steps WHERE rollout_id = $4 AND wave = $5 \
             AND ((state = 'pending' AND next_attempt_at <= $3) OR (state = 'running' AND lease_until < $3)) \
             ORDER BY company_key LIMIT $6) \
             RETURNING company_id, company_key, approved",
        )
        .bind(&self.replica)
        .bind(now + LEASE_MS)
        .bind(now)
        .bind(rollout)
        .bind(wave)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|d| {
                let approved: Option<String> = d.try_get("approved")?;
                Ok(Claimed {
                    rollout: rollout.to_owned(),
                    revision,
                    company_id: d.try_get("company_id")?,
                    company_key: d.try_get("company_key")?,
                    approved: approved.map(|a| serde_json::from_str(&a)).transpose()?,
                })
            })
            .collect()
    }

    /// The step that takes over the slot of a step just done, claimed in the transaction that
    /// records it: the next due step of the rollout's lowest unfinished wave, if the rollout
    /// still runs and is under its failure threshold. Without it a slot stays idle until the
    /// next tick, which waits behind every other step's record for the write lock.
    async fn hand_off(&self, conn: &mut sqlx::AnyConnection, done: &Claimed) -> Result<Option<Claimed>> {
        let rollout = sqlx::query("SELECT failure_threshold_pct FROM rollouts WHERE id = $1 AND state = 'running'")
            .bind(&done.rollout)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(rollout) = rollout else { return Ok(None) };
        let threshold: i64 = rollout.try_get("failure_threshold_pct")?;
        let progress = sqlx::query(
            "SELECT SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed, \
             SUM(CASE WHEN state IN ('done', 'failed') THEN 1 ELSE 0 END) AS finished, \
             MIN(CASE WHEN state IN ('pending', 'running') THEN wave END) AS open_wave \
             FROM rollout_steps WHERE rollout_id = $1",
        )
        .bind(&done.rollout)
        .fetch_one(&mut *conn)
        .await?;
        let failed: i64 = progress.try_get::<Option<i64>, _>("failed")?.unwrap_or(0);
        let finished: i64 = progress.try_get::<Option<i64>, _>("finished")?.unwrap_or(0);
        let Some(wave) = progress.try_get::<Option<i64>, _>("open_wave")? else { return Ok(None) };
        // The tick halts such a rollout; nothing more starts meanwhile.
        if over_threshold(failed, finished, threshold) {
            return Ok(None);
        }
        Ok(self.claim(conn, &done.rollout, done.revision, wave, 1).await?.pop())
    }

    async fn settle(&self, id: &str, state: &str, reason: &str) -> Result<()> {
        sqlx::query("UPDATE rollouts SET state = $1, reason = $2, updated_at = $3 WHERE id = $4 AND state = 'running'")
            .bind(state)
            .bind(reason)
            .bind(gomark_storage::now_ms())
            .bind(id)
            .execute(self.store.db().pool())
            .await?;
        tracing::info!(rollout = %id, state, reason, "rollout settled");
        metrics::counter!("rollouts_settled_total", "state" => state.to_owned()).increment(1);
        Ok(())
    }

    /// Runs a claimed step, then each step handed over to it (see [`Rollouts::hand_off`]),
    /// until there is none or shutdown starts. Each step is a trace of its own.
    async fn run_claimed(&self, step: Claimed, shutdown: &Shutdown) {
        let mut next = Some(step);
        while let Some(step) = next.take() {
            let span = gomark_platform::telemetry::root_span("rollout step");
            next = self.run_one(step, shutdown).instrument(span).await;
        }
    }

    /// Runs a claimed step while renewing its lease, and records its outcome; gives the step
    /// up if the lease is lost. Returns the step handed over to this one when it was done
    /// (none once shutdown has started).
    async fn run_one(&self, step: Claimed, shutdown: &Shutdown) -> Option<Claimed> {
        let outcome = tokio::select! {
            outcome = self.run_step(&step) => outcome,
            () = self.keep_lease(&step) => {
                tracing::warn!(rollout = %step.rollout, company_id = %step.company_id, "rollout step lease lost; another replica will run it");
                return None;
            }
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => Outcome::Later {
                performed: Vec::new(),
                reason: err.to_public().message,
                at: gomark_storage::now_ms() + backoff_ms(1),
                counts: true,
                waiting: false,
            },
        };
        // The outcome is recorded even through a database outage; if it cannot be, the
        // lease runs out and the step runs again, which finds nothing left to write.
        let deadline = tokio::time::Instant::now() + RECORD_FOR;
        let mut wait = Duration::from_millis(200);
        loop {
            match self.record(&step, &outcome, !shutdown.is_triggered()).await {
                Ok(next) => return next,
                Err(err) if tokio::time::Instant::now() + wait < deadline => {
                    tracing::debug!(rollout = %step.rollout, error = %err, "rollout step not recorded yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(err) => {
                    tracing::warn!(rollout = %step.rollout, company_id = %step.company_id, error = %err, "rollout step not recorded; it will run again once its lease expires");
                    return None;
                }
            }
        }
    }

    /// Ends the leases of the steps an earlier process left running, so that they run again
    /// at once rather than when their leases run out. Only for a database no other process
    /// uses ([`gomark_service::Backends::exclusive`]), before this replica claims anything:
    /// then every running step is a dead process's. Returns how many were taken back.
    pub async fn take_back_leases(&self) -> Result<u64> {
        let taken =
            sqlx::query("UPDATE rollout_steps SET lease_until = 0 WHERE state = 'running' AND lease_owner <> $1")
                .bind(&self.replica)
                .execute(self.store.db().pool())
                .await?;
        Ok(taken.rows_affected())
    }

    /// Renews the step's lease until it is lost (another replica holds it, or it could not
    /// be renewed in time); never returns while the lease holds.
    async fn keep_lease(&self, step: &Claimed) {
        let mut held_until = gomark_storage::now_ms() + LEASE_MS;
        loop {
            tokio::time::sleep(Duration::from_millis((LEASE_MS / 3) as u64)).await;
            let now = gomark_storage::now_ms();
            let renewed = sqlx::query(
                "UPDATE rollout_steps SET lease_until = $1 WHERE rollout_id = $2 AND company_id = $3 \
                 AND lease_owner = $4 AND state = 'running'",
            )
            .bind(now + LEASE_MS)
            .bind(&step.rollout)
            .bind(&step.company_id)
            .bind(&self.replica)
            .execute(self.store.db().pool())
            .await;
            match renewed {
                Ok(r) if r.rows_affected() == 1 => held_until = now + LEASE_MS,
                Ok(_) => return,
                // The database is away: the lease still holds until it runs out.
                Err(_) if now < held_until - LEASE_MS / 6 => {}
                Err(_) => return,
            }
        }
    }

    async fn run_step(&self, step: &Claimed) -> Result<Outcome> {
        let (_, document) = self.revisions.document(step.revision).await?;
        let desired = match document.effective(&step.company_key) {
            Ok(d) if d.company_id == step.company_id => d,
            _ => {
                return Ok(Outcome::Failed {
                    performed: Vec::new(),
                    reason: format!("company {} is no longer in revision {}", step.company_id, step.revision),
                });
            }
        };
        let approved = step.approved.clone().unwrap_or_default();
        let request = ApplyPortalRequest {
            company_id: step.company_id.clone(),
            desired: Some(gtm_config::wire::hubspot_config(&desired)),
            saved_plan: step.approved.is_some(),
            approved_action_ids: approved.clone(),
        };
        // HubSpot first, then Upso: both plan afresh before writing, so a retry of the
        // whole step repeats nothing that was done.
        // hubspot-sync learns the deadline (grpc-timeout) and answers before it, with what
        // it did and when to come back, rather than being cut off.
        let mut request = Caller::system("orchestrator").request(request);
        request.set_timeout(self.call_timeout);
        let applied = match self.hubspot_sync.clone().apply_portal(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Ok(failure(status, Vec::new())),
        };
        let mut performed = applied.performed;
        let blocked: Vec<String> = applied.blocked.iter().map(gtm_config::wire::action_line).collect();
        if !applied.failed.is_empty() {
            let reasons: Vec<String> = applied
                .failed
                .iter()
                .map(|f| {
                    let what = f.action.as_ref().map(gtm_config::wire::action_line).unwrap_or_default();
                    format!("{what}: {}", f.reason)
                })
                .collect();
            return Ok(Outcome::Failed { performed, reason: reasons.join("; ") });
        }
        if !applied.interrupted.is_empty() {
            // A stop with a time to come back (waiting for the portal's budget, or out of
            // time after progress), or after real progress, is not a failure.
            let retry_at = gomark_proto::time::millis_opt(applied.retry_at.as_ref());
            let resume = retry_at > 0;
            let at = if resume { retry_at } else { gomark_storage::now_ms() + backoff_ms(1) };
            let counts = !resume && performed.is_empty();
            let waiting = applied.waiting_for_budget;
            return Ok(Outcome::Later { performed, reason: applied.interrupted, at, counts, waiting });
        }
        if let Some(upso) = &self.upso_cadence {
            let request = ApplyCadencesRequest {
                company_id: step.company_id.clone(),
                desired: Some(gtm_config::wire::outreach_config(&desired)),
                revision: step.revision,
                saved_plan: step.approved.is_some(),
                approved_action_ids: approved,
            };
            match upso.clone().apply_cadences(Caller::system("orchestrator").request(request)).await {
                Ok(r) => performed.extend(r.into_inner().performed.into_iter().map(cadence_action)),
                Err(status) => return Ok(failure(status, performed)),
            }
        }
        Ok(Outcome::Done { performed, blocked })
    }

    /// Writes a step's outcome, if this replica still holds its lease; with `hand_off`, a
    /// step that is done also claims the step that takes its slot.
    async fn record(&self, step: &Claimed, outcome: &Outcome, hand_off: bool) -> Result<Option<Claimed>> {
        let mut tx = self.store.db().begin().await?;
        let row = sqlx::query(
            "SELECT attempts, performed FROM rollout_steps WHERE rollout_id = $1 AND company_id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(&step.rollout)
        .bind(&step.company_id)
        .bind(&self.replica)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tracing::warn!(rollout = %step.rollout, company_id = %step.company_id, "rollout step taken over by another replica; outcome dropped");
            return Ok(None);
        };
        let attempts: i64 = row.try_get("attempts")?;
        let mut all = decode_performed(row.try_get("performed")?);
        let mut waiting_until = 0;
        let (state, detail, next, attempts, now_performed) = match outcome {
            Outcome::Done { performed, blocked } => ("done", blocked.join("; "), 0, attempts, performed),
            Outcome::Failed { performed, reason } => ("failed", reason.clone(), 0, attempts, performed),
            Outcome::Later { performed, reason, at, counts, waiting } => {
                let attempts = attempts + i64::from(*counts);
                if attempts >= MAX_ATTEMPTS {
                    ("failed", format!("attempt {attempts}: {reason}"), 0, attempts, performed)
                } else if *counts {
                    let next = gomark_storage::now_ms() + backoff_ms(attempts);
                    ("pending", format!("attempt {attempts}: {reason}; retrying"), next, attempts, performed)
                } else if *waiting {
                    waiting_until = *at;
                    let until = chrono::DateTime::from_timestamp_millis(*at)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                        .unwrap_or_default();
                    ("pending", format!("{reason} until {until}"), *at, attempts, performed)
                } else {
                    ("pending", reason.clone(), *at, attempts, performed)
                }
            }
        };
        all.extend(now_performed.iter().cloned());
        let applied = all.len() as i64;
        let lines: Vec<String> =
            if state == "pending" { Vec::new() } else { all.iter().map(gtm_config::wire::action_line).collect() };
        let encoded = pb::RolloutStep { performed: all, ..pb::RolloutStep::default() }.encode_to_vec();
        sqlx::query(
            "UPDATE rollout_steps SET state = $1, attempts = $2, applied = $3, detail = $4, next_attempt_at = $5, \
             performed = $6, lease_owner = '', lease_until = 0, updated_at = $7, waiting_until = $8 \
             WHERE rollout_id = $9 AND company_id = $10",
        )
        .bind(state)
        .bind(attempts)
        .bind(applied)
        .bind(&detail)
        .bind(next)
        .bind(encoded)
        .bind(gomark_storage::now_ms())
        .bind(waiting_until)
        .bind(&step.rollout)
        .bind(&step.company_id)
        .execute(&mut *tx)
        .await?;
        if state == "done" {
            // Drift is measured against what was last applied in full.
            self.store.set_applied_revision(&mut tx, &step.company_id, step.revision).await?;
        }
        if state != "pending" {
            self.store
                .append_audit(
                    &mut tx,
                    &AuditRecord {
                        company_id: step.company_id.clone(),
                        actor: "system:rollout".into(),
                        action: "config.apply".into(),
                        resource: format!("rollout/{}", step.rollout),
                        before: None,
                        after: Some(json!({
                            "revision": step.revision,
                            "state": state,
                            "performed": lines,
                            "detail": detail,
                        })),
                    },
                )
                .await?;
        }
        let next = if hand_off && state == "done" { self.hand_off(&mut tx, step).await? } else { None };
        tx.commit().await?;
        Ok(next)
    }

    /// Drives every rollout until shutdown; steps in flight are allowed to finish.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut failing = false;
        while !shutdown.is_triggered() {
            let tick = async {
                match self.tick(&mut tasks, &shutdown).await {
                    Ok(()) if failing => {
                        tracing::info!("rollouts: the database is back");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(err) if !failing => {
                        tracing::warn!(error = %err, "rollouts: cannot reach the database; retrying");
                        failing = true;
                    }
                    Err(_) => {}
                }
            };
            tick.instrument(gomark_platform::telemetry::poll_span("rollout tick")).await;
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                () = shutdown.wait() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Marks the steps of rollout `id` that have not started as cancelled (a cancelled or
/// superseded rollout runs no more of them).
async fn cancel_pending_steps(conn: &mut sqlx::AnyConnection, id: &str) -> Result<()> {
    sqlx::query("UPDATE rollout_steps SET state = 'cancelled' WHERE rollout_id = $1 AND state = 'pending'")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether more than `threshold_pct` of a rollout's finished steps failed: it halts.
fn over_threshold(failed: i64, finished: i64, threshold_pct: i64) -> bool {
    failed > 0 && failed * 100 > threshold_pct * finished.max(1)
}

/// Adds `n` steps in `state` to the rollout's counts.
fn count(rollout: &mut pb::Rollout, state: &str, n: u32) {
    match state {
        "done" => rollout.done += n,
        "failed" => rollout.failed += n,
        "running" => rollout.running += n,
        "pending" => rollout.pending += n,
        _ => {}
    }
}

/// A call that failed: transient ones are retried later, the rest fail the step.
fn failure(status: tonic::Status, performed: Vec<config_pb::PlannedAction>) -> Outcome {
    let kind = ErrorKind::from_grpc(status.code());
    let public = PublicError::from(status);
    if transient(kind) {
        let waiting = kind == ErrorKind::RateLimited;
        // The service's RetryInfo, when it knew how long the limit lasts, beats a guess.
        let delay_ms =
            public.retry_after.map_or_else(|| backoff_ms(1), |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        return Outcome::Later {
            counts: !waiting && performed.is_empty(),
            performed,
            reason: public.message,
            at: gomark_storage::now_ms().saturating_add(delay_ms),
            waiting,
        };
    }
    Outcome::Failed { performed, reason: public.message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_with_retry_info_is_retried_when_it_says() {
        let limited = |retry: Option<std::time::Duration>| {
            let error = PublicError::new(ErrorKind::RateLimited, "limit");
            tonic::Status::from(match retry {
                Some(delay) => error.with_retry_after(delay),
                None => error,
            })
        };
        let before = gomark_storage::now_ms();
        let Outcome::Later { at, waiting, .. } =
            failure(limited(Some(std::time::Duration::from_secs(600))), Vec::new())
        else {
            panic!("a rate limit is retried");
        };
        assert!(waiting);
        assert!((before + 600_000..=gomark_storage::now_ms() + 600_000).contains(&at), "{at}");
        // Without RetryInfo, the usual backoff (at most 1.5 s for a first attempt).
        let Outcome::Later { at, .. } = failure(limited(None), Vec::new()) else { panic!("retried") };
        assert!(at <= gomark_storage::now_ms() + 1_500, "{at}");
    }
}
