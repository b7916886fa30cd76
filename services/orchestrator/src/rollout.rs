//! Rollouts: applying a revision to many companies as a durable job.
//!
//! One step per company, run wave by wave (the canary wave 0 first), at most `concurrency`
//! at a time. A step asks hubspot-sync to converge the company's portal on its effective
//! configuration; convergence re-reads the portal first, so a step re-run after a crash
//! never repeats a write that was done. Transient failures are retried with jittered
//! backoff up to [`MAX_ATTEMPTS`]; when more than the threshold of finished steps failed,
//! the rollout halts. Every state lives in the database, so any orchestrator replica (or a
//! restarted one) picks the work up where it stopped.

use crate::revisions::{PORTFOLIO, Revisions};
use crate::store::{AuditRecord, Store};
use crate::{Actor, Error, Result};
use gomark_platform::grpc_client::TracedChannel;
use gomark_platform::{Caller, ErrorKind, PublicError, Shutdown};
use gomark_proto::hubspot_sync::v1::ConvergeRequest;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient;
use gomark_proto::orchestrator::v1 as pb;
use gomark_proto::upso_cadence::v1::ApplyCadencesRequest;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use gomark_storage::Engine;
use serde_json::json;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub const MAX_ATTEMPTS: i64 = 5;
const TICK: Duration = Duration::from_millis(250);
/// The Postgres advisory lock that serialises rollout starts (any constant, used only here).
const ROLLOUT_START_LOCK: i64 = 0x6d61_726b_726f_6c6c;

pub struct Rollouts {
    store: Store,
    revisions: Arc<Revisions>,
    hubspot_sync: HubspotSyncServiceClient<TracedChannel>,
    /// None when upso-cadence is not configured: steps converge HubSpot only.
    upso_cadence: Option<UpsoCadenceServiceClient<TracedChannel>>,
    wake: Notify,
}

fn backoff_ms(attempts: i64) -> i64 {
    let base = 500i64.saturating_mul(1 << attempts.clamp(0, 6));
    base + rand::random_range(0..=base / 2)
}

impl Rollouts {
    pub fn new(
        store: Store,
        revisions: Arc<Revisions>,
        hubspot_sync: TracedChannel,
        upso_cadence: Option<TracedChannel>,
    ) -> Self {
        Self {
            store,
            revisions,
            hubspot_sync: HubspotSyncServiceClient::new(hubspot_sync),
            upso_cadence: upso_cadence.map(UpsoCadenceServiceClient::new),
            wake: Notify::new(),
        }
    }

    pub async fn start(&self, actor: &Actor, req: pb::StartRolloutRequest) -> Result<pb::Rollout> {
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
        let revision = self.revisions.get(req.revision).await?;
        let document = revision.parse()?;
        let mut steps = Vec::new();
        for (key, config) in document.effective_all() {
            if req.company_ids.is_empty() || req.company_ids.contains(&config.company_id) {
                steps.push((key, config.company_id.clone(), i64::from(config.settings.rollout_wave)));
            }
        }
        if let Some(missing) = req.company_ids.iter().find(|id| !steps.iter().any(|(_, c, _)| c == *id)) {
            return Err(Error::invalid(
                "companyIds",
                format!("company {missing} is not in revision {}", revision.number),
            ));
        }
        if steps.is_empty() {
            return Err(Error::invalid("revision", "names no company to roll out to"));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let now = gomark_storage::now_ms();
        let mut tx = self.store.db().begin().await?;
        // Starts are serialised so two cannot both find their companies free. (SQLite:
        // the first INSERT below takes the database's write lock before the check reads.)
        if self.store.db().engine() == Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ROLLOUT_START_LOCK).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO rollouts (id, revision, state, concurrency, failure_threshold_pct, created_by, created_at, updated_at) \
             VALUES ($1, $2, 'running', $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(revision.number)
        .bind(concurrency)
        .bind(threshold)
        .bind(&actor.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (key, company, wave) in &steps {
            sqlx::query(
                "INSERT INTO rollout_steps (rollout_id, company_id, company_key, wave, state, updated_at) VALUES ($1, $2, $3, $4, 'pending', $5)",
            )
            .bind(&id)
            .bind(company)
            .bind(key)
            .bind(wave)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Two rollouts converging one portal on different revisions would leave whichever
        // ran last: a company is in at most one unfinished rollout.
        let busy = sqlx::query(
            "SELECT s.company_id, r.id, r.state FROM rollout_steps s JOIN rollouts r ON r.id = s.rollout_id \
             WHERE r.id <> $1 AND r.state IN ('running', 'paused', 'halted') \
             AND s.company_id IN (SELECT company_id FROM rollout_steps WHERE rollout_id = $1) LIMIT 1",
        )
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = busy {
            let (company, other, state): (String, String, String) =
                (row.try_get("company_id")?, row.try_get("id")?, row.try_get("state")?);
            return Err(Error::kind_of(
                ErrorKind::FailedPrecondition,
                format!("company {company} is in rollout {other}, which is {state}: let it finish, or cancel it first"),
            ));
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
                    after: Some(
                        json!({"revision": revision.number, "companies": steps.len(), "concurrency": concurrency}),
                    ),
                },
            )
            .await?;
        tx.commit().await?;
        self.wake.notify_one();
        tracing::info!(rollout = %id, revision = revision.number, companies = steps.len(), "rollout started");
        self.get(&id).await
    }

    pub async fn get(&self, id: &str) -> Result<pb::Rollout> {
        let row = sqlx::query(
            "SELECT id, revision, state, reason, concurrency, failure_threshold_pct, created_by, created_at FROM rollouts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.db().pool())
        .await?
        .ok_or_else(|| PublicError::not_found(format!("rollout {id}")))?;
        let steps = sqlx::query(
            "SELECT company_id, company_key, wave, state, attempts, applied, detail FROM rollout_steps WHERE rollout_id = $1 ORDER BY wave, company_key",
        )
        .bind(id)
        .fetch_all(self.store.db().pool())
        .await?;
        let mut rollout = pb::Rollout {
            id: row.try_get("id")?,
            revision: row.try_get("revision")?,
            state: row.try_get("state")?,
            reason: row.try_get("reason")?,
            concurrency: row.try_get::<i64, _>("concurrency")? as u32,
            failure_threshold_pct: row.try_get::<i64, _>("failure_threshold_pct")? as u32,
            created_by: row.try_get("created_by")?,
            created_at: Some(crate::desired::timestamp(row.try_get("created_at")?)),
            ..pb::Rollout::default()
        };
        for s in &steps {
            let step = pb::RolloutStep {
                company_id: s.try_get("company_id")?,
                company_key: s.try_get("company_key")?,
                wave: s.try_get::<i64, _>("wave")? as u32,
                state: s.try_get("state")?,
                attempts: s.try_get::<i64, _>("attempts")? as u32,
                applied: s.try_get::<i64, _>("applied")? as u32,
                detail: s.try_get("detail")?,
            };
            match step.state.as_str() {
                "done" => rollout.done += 1,
                "failed" => rollout.failed += 1,
                "running" => rollout.running += 1,
                "pending" => rollout.pending += 1,
                _ => {}
            }
            rollout.steps.push(step);
        }
        rollout.total = rollout.steps.len() as u32;
        Ok(rollout)
    }

    pub async fn list(&self, before: Option<&str>, limit: i64) -> Result<Vec<pb::Rollout>> {
        let rows = sqlx::query("SELECT id FROM rollouts WHERE id < $1 ORDER BY id DESC LIMIT $2")
            .bind(before.unwrap_or("~"))
            .bind(limit)
            .fetch_all(self.store.db().pool())
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let mut rollout = self.get(&r.try_get::<String, _>("id")?).await?;
            rollout.steps.clear();
            out.push(rollout);
        }
        Ok(out)
    }

    /// Pause, resume or cancel: allowed only from the states that make sense.
    pub async fn control(&self, actor: &Actor, id: &str, to: &str) -> Result<pb::Rollout> {
        let allowed_from: &[&str] = match to {
            "paused" => &["running"],
            "running" => &["paused", "halted"],
            _ => &["running", "paused", "halted"],
        };
        let current = self.get(id).await?;
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
            sqlx::query("UPDATE rollout_steps SET state = 'cancelled' WHERE rollout_id = $1 AND state = 'pending'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
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

    /// Steps a crash left running are started again (converging is idempotent).
    async fn recover(&self) -> Result<()> {
        sqlx::query("UPDATE rollout_steps SET state = 'pending' WHERE state = 'running'")
            .execute(self.store.db().pool())
            .await?;
        Ok(())
    }

    /// Starts what may start, and settles finished rollouts; returns the step tasks begun.
    async fn tick(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) -> Result<()> {
        let running = sqlx::query(
            "SELECT id, revision, concurrency, failure_threshold_pct FROM rollouts WHERE state = 'running'",
        )
        .fetch_all(self.store.db().pool())
        .await?;
        for r in &running {
            let id: String = r.try_get("id")?;
            let revision: i64 = r.try_get("revision")?;
            let concurrency: i64 = r.try_get("concurrency")?;
            let threshold: i64 = r.try_get("failure_threshold_pct")?;
            let counts = sqlx::query("SELECT state, COUNT(*) AS n, MIN(wave) AS wave FROM rollout_steps WHERE rollout_id = $1 GROUP BY state")
                .bind(&id)
                .fetch_all(self.store.db().pool())
                .await?;
            let (mut done, mut failed, mut in_flight, mut open_wave) = (0i64, 0i64, 0i64, i64::MAX);
            for c in &counts {
                let state: String = c.try_get("state")?;
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
            if failed > 0 && failed * 100 > threshold * finished.max(1) && finished >= 1 {
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
            let due = sqlx::query(
                "SELECT company_id FROM rollout_steps WHERE rollout_id = $1 AND state = 'pending' AND wave = $2 AND next_attempt_at <= $3 \
                 ORDER BY company_key LIMIT $4",
            )
            .bind(&id)
            .bind(open_wave)
            .bind(gomark_storage::now_ms())
            .bind(free)
            .fetch_all(self.store.db().pool())
            .await?;
            for d in &due {
                let company: String = d.try_get("company_id")?;
                // Claiming is conditional, so two replicas never run the same step at once.
                let claimed = sqlx::query(
                    "UPDATE rollout_steps SET state = 'running', attempts = attempts + 1, updated_at = $1 \
                     WHERE rollout_id = $2 AND company_id = $3 AND state = 'pending'",
                )
                .bind(gomark_storage::now_ms())
                .bind(&id)
                .bind(&company)
                .execute(self.store.db().pool())
                .await?
                .rows_affected()
                    == 1;
                if claimed {
                    let this = self.clone();
                    let id = id.clone();
                    tasks.spawn(async move {
                        if let Err(err) = this.run_step(&id, revision, &company).await {
                            tracing::warn!(rollout = %id, company_id = %company, error = %err, "rollout step not recorded; it will run again");
                        }
                        this.wake.notify_one();
                    });
                }
            }
        }
        Ok(())
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

    async fn run_step(&self, id: &str, revision: i64, company_id: &str) -> Result<()> {
        let document = self.revisions.get(revision).await?.parse()?;
        let desired = document.effective_all().into_values().find(|c| c.company_id == company_id);
        let outcome = match desired {
            None => Err(format!("company {company_id} is no longer in revision {revision}")),
            Some(desired) => {
                let desired_json = serde_json::to_string(&desired).map_err(Error::from)?;
                let request =
                    ConvergeRequest { company_id: company_id.to_owned(), revision, desired_json: desired_json.clone() };
                let converged =
                    match self.hubspot_sync.clone().converge(Caller::system("orchestrator").request(request)).await {
                        // HubSpot first, then Upso: both re-read before writing, so a retry
                        // of the whole step repeats nothing that was done.
                        Ok(r) if r.get_ref().failed.is_empty() => match &self.upso_cadence {
                            None => Ok(r.into_inner()),
                            Some(upso) => {
                                let request =
                                    ApplyCadencesRequest { company_id: company_id.to_owned(), desired_json, revision };
                                let applied =
                                    upso.clone().apply_cadences(Caller::system("orchestrator").request(request)).await;
                                applied.map(|a| {
                                    let a = a.into_inner();
                                    let mut r = r.into_inner();
                                    r.applied += a.created + a.updated + a.archived;
                                    r
                                })
                            }
                        },
                        other => other.map(tonic::Response::into_inner),
                    };
                match converged {
                    Ok(r) => Ok(r),
                    Err(status) => {
                        let kind = ErrorKind::from_grpc(status.code());
                        let public = PublicError::from(status);
                        if matches!(
                            kind,
                            ErrorKind::Unavailable | ErrorKind::RateLimited | ErrorKind::Timeout | ErrorKind::Internal
                        ) {
                            return self.retry_later(id, company_id, &public.message).await;
                        }
                        Err(public.message)
                    }
                }
            }
        };
        let (state, applied, detail) = match &outcome {
            Ok(r) if r.failed.is_empty() => ("done", i64::from(r.applied), r.blocked.join("; ")),
            Ok(r) => ("failed", i64::from(r.applied), r.failed.join("; ")),
            Err(reason) => ("failed", 0, reason.clone()),
        };
        let mut tx = self.store.db().begin().await?;
        if state == "done" {
            // Drift is measured against what was last applied in full.
            sqlx::query(
                "INSERT INTO applied_revisions (company_id, revision, applied_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (company_id) DO UPDATE SET revision = excluded.revision, applied_at = excluded.applied_at",
            )
            .bind(company_id)
            .bind(revision)
            .bind(gomark_storage::now_ms())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE rollout_steps SET state = $1, applied = applied + $2, detail = $3, updated_at = $4 WHERE rollout_id = $5 AND company_id = $6")
            .bind(state)
            .bind(applied)
            .bind(&detail)
            .bind(gomark_storage::now_ms())
            .bind(id)
            .bind(company_id)
            .execute(&mut *tx)
            .await?;
        self.store
            .append_audit(
                &mut tx,
                &AuditRecord {
                    company_id: company_id.to_owned(),
                    actor: "system:rollout".into(),
                    action: "config.apply".into(),
                    resource: format!("rollout/{id}"),
                    before: None,
                    after: Some(json!({"revision": revision, "state": state, "applied": applied, "detail": detail})),
                },
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retry_later(&self, id: &str, company_id: &str, reason: &str) -> Result<()> {
        let attempts: i64 = sqlx::query("SELECT attempts FROM rollout_steps WHERE rollout_id = $1 AND company_id = $2")
            .bind(id)
            .bind(company_id)
            .fetch_one(self.store.db().pool())
            .await?
            .try_get("attempts")?;
        let (state, next) = if attempts >= MAX_ATTEMPTS {
            ("failed", 0)
        } else {
            ("pending", gomark_storage::now_ms() + backoff_ms(attempts))
        };
        sqlx::query("UPDATE rollout_steps SET state = $1, next_attempt_at = $2, detail = $3, updated_at = $4 WHERE rollout_id = $5 AND company_id = $6")
            .bind(state)
            .bind(next)
            .bind(format!("attempt {attempts}: {reason}"))
            .bind(gomark_storage::now_ms())
            .bind(id)
            .bind(company_id)
            .execute(self.store.db().pool())
            .await?;
        Ok(())
    }

    /// Drives every rollout until shutdown; steps in flight are allowed to finish.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        if let Err(err) = self.recover().await {
            tracing::error!(error = %err, "cannot recover rollouts");
        }
        let mut tasks = tokio::task::JoinSet::new();
        while !shutdown.is_triggered() {
            if let Err(err) = self.tick(&mut tasks).await {
                tracing::warn!(error = %err, "rollout tick failed");
            }
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
