//! Drift: a portal changed by hand since GoMark applied its configuration.
//!
//! A company has drifted when the latest revision was applied to it in full and a fresh
//! plan against its portal is no longer empty (HubSpot's own normalisations plan to
//! nothing, so they are never drift). Each drift is recorded, audited, published as
//! `drift.detected`, and handled by the company's policy: `enforce` rolls the revision out
//! to it again, `alert` only reports, `adopt` imports reality as a new revision.

use crate::import::Importer;
use crate::planning::Planner;
use crate::revisions::Revisions;
use crate::rollout::Rollouts;
use crate::store::{AuditRecord, Store};
use crate::{Actor, Result};
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_events::relay::RelayWaker;
use gomark_platform::Shutdown;
use gomark_proto::events::v1::DriftDetected;
use gomark_proto::orchestrator::v1 as pb;
use gtm_config::DriftPolicy;
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

pub struct DriftWatch {
    pub store: Store,
    pub revisions: Arc<Revisions>,
    pub planner: Arc<Planner>,
    pub rollouts: Arc<Rollouts>,
    pub relay: RelayWaker,
    /// Every company is checked once per interval, the checks spread across it.
    pub interval: Duration,
    /// Companies whose portals showed activity (a webhook), to check soon.
    pub triggered: Mutex<HashMap<String, Instant>>,
    pub wake: Notify,
}

/// A portal's activity triggers a check this long after the first event (more events in
/// between ride along), and at most once per [`TRIGGER_COOLDOWN`].
const TRIGGER_DEBOUNCE: Duration = Duration::from_secs(2);
const TRIGGER_COOLDOWN: Duration = Duration::from_secs(60);

impl DriftWatch {
    pub fn new(
        store: Store,
        revisions: Arc<Revisions>,
        planner: Arc<Planner>,
        rollouts: Arc<Rollouts>,
        relay: RelayWaker,
        interval: Duration,
    ) -> Self {
        Self {
            store,
            revisions,
            planner,
            rollouts,
            relay,
            interval,
            triggered: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// Asks for a check of `company_id` soon: HubSpot sends no webhook when a property or
    /// pipeline definition changes, so activity in the portal is the signal to look.
    pub fn trigger(&self, company_id: &str) {
        let mut triggered = self.triggered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        triggered.entry(company_id.to_owned()).or_insert_with(|| Instant::now() + TRIGGER_DEBOUNCE);
        drop(triggered);
        self.wake.notify_one();
    }

    /// Checks the triggered companies that are due; returns when the next one will be.
    async fn check_triggered(&self, cooldown: &mut HashMap<String, Instant>) -> Option<Instant> {
        let now = Instant::now();
        let due: Vec<String> = {
            let mut triggered = self.triggered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let due: Vec<String> = triggered.iter().filter(|(_, at)| **at <= now).map(|(c, _)| c.clone()).collect();
            for company in &due {
                triggered.remove(company);
            }
            due
        };
        for company in due {
            if cooldown.get(&company).is_some_and(|until| *until > now) {
                continue;
            }
            cooldown.insert(company.clone(), now + TRIGGER_COOLDOWN);
            if let Err(err) = self.check(std::slice::from_ref(&company)).await {
                tracing::warn!(company_id = %company, error = %err, "triggered drift check failed");
            }
        }
        self.triggered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().min().copied()
    }
}

fn policy_name(p: DriftPolicy) -> &'static str {
    match p {
        DriftPolicy::Enforce => "enforce",
        DriftPolicy::Alert => "alert",
        DriftPolicy::Adopt => "adopt",
    }
}

fn record(r: &AnyRow) -> Result<pb::DriftRecord> {
    Ok(pb::DriftRecord {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        revision: r.try_get("revision")?,
        detected_at: Some(crate::desired::timestamp(r.try_get("detected_at")?)),
        actions_json: r.try_get("actions")?,
        policy: r.try_get("policy")?,
        resolution: r.try_get("resolution")?,
    })
}

impl DriftWatch {
    async fn applied_revision(&self, company_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT revision FROM applied_revisions WHERE company_id = $1")
            .bind(company_id)
            .fetch_optional(self.store.db().pool())
            .await?;
        Ok(row.map(|r| r.try_get("revision")).transpose()?)
    }

    async fn rollout_in_flight(&self, company_id: &str) -> Result<bool> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM rollout_steps s JOIN rollouts r ON r.id = s.rollout_id \
             WHERE s.company_id = $1 AND s.state IN ('pending', 'running') AND r.state IN ('running', 'paused')",
        )
        .bind(company_id)
        .fetch_one(self.store.db().pool())
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }

    async fn last_actions(&self, company_id: &str) -> Result<Option<(String, i64)>> {
        let row = sqlx::query(
            "SELECT actions, detected_at FROM drift_records WHERE company_id = $1 ORDER BY detected_at DESC LIMIT 1",
        )
        .bind(company_id)
        .fetch_optional(self.store.db().pool())
        .await?;
        row.map(|r| Ok((r.try_get("actions")?, r.try_get("detected_at")?))).transpose()
    }

    /// Checks the given companies (all applied ones when empty); returns how many were
    /// checked and the drifts found.
    pub async fn check(&self, company_ids: &[String]) -> Result<(u32, Vec<pb::DriftRecord>)> {
        let Some(latest) = self.revisions.latest().await? else { return Ok((0, Vec::new())) };
        let document = latest.parse()?;
        let mut checked = 0;
        let mut drifted = Vec::new();
        for (key, desired) in document.effective_all() {
            if !company_ids.is_empty() && !company_ids.contains(&desired.company_id) {
                continue;
            }
            // Not applied yet, or being applied: differences are expected, not drift.
            if self.applied_revision(&desired.company_id).await? != Some(latest.number)
                || self.rollout_in_flight(&desired.company_id).await?
            {
                continue;
            }
            checked += 1;
            let plan = self.planner.plan_company(&key, &desired).await?;
            if !plan.error.is_empty() || plan.actions.is_empty() {
                continue;
            }
            let actions: Vec<serde_json::Value> = plan
                .actions
                .iter()
                .map(|a| json!({"targetKind": a.target_kind, "target": a.target, "op": a.op, "blocked": (!a.blocked_reason.is_empty()).then_some(&a.blocked_reason)}))
                .collect();
            let actions = serde_json::Value::Array(actions).to_string();
            let applied_at: i64 = sqlx::query("SELECT applied_at FROM applied_revisions WHERE company_id = $1")
                .bind(&desired.company_id)
                .fetch_one(self.store.db().pool())
                .await?
                .try_get("applied_at")?;
            // The same drift, still there and already handled, is not recorded again.
            if self
                .last_actions(&desired.company_id)
                .await?
                .is_some_and(|(last, at)| last == actions && at > applied_at)
            {
                continue;
            }
            drifted.push(
                self.handle(
                    &desired.company_id,
                    latest.number,
                    desired.settings.drift_policy,
                    &actions,
                    plan.actions.len(),
                )
                .await?,
            );
        }
        Ok((checked, drifted))
    }

    async fn handle(
        &self,
        company_id: &str,
        revision: i64,
        policy: DriftPolicy,
        actions: &str,
        count: usize,
    ) -> Result<pb::DriftRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = gomark_storage::now_ms();
        let system = Actor("system:drift".into());
        tracing::warn!(company_id, revision, policy = policy_name(policy), actions = count, "drift detected");
        metrics::counter!("drift_detected_total", "policy" => policy_name(policy)).increment(1);
        let mut tx = self.store.db().begin().await?;
        sqlx::query("INSERT INTO drift_records (id, company_id, revision, detected_at, actions, policy) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(company_id)
            .bind(revision)
            .bind(now)
            .bind(actions)
            .bind(policy_name(policy))
            .execute(&mut *tx)
            .await?;
        self.store
            .append_audit(
                &mut tx,
                &AuditRecord {
                    company_id: company_id.to_owned(),
                    actor: system.0.clone(),
                    action: "drift.detected".into(),
                    resource: format!("drift/{id}"),
                    before: None,
                    after: Some(json!({"revision": revision, "policy": policy_name(policy), "actions": serde_json::from_str::<serde_json::Value>(actions).unwrap_or_default()})),
                },
            )
            .await?;
        let event = DriftDetected {
            company_id: company_id.to_owned(),
            drift_id: id.clone(),
            revision,
            policy: policy_name(policy).to_owned(),
            actions: count as u32,
        };
        gomark_events::outbox::enqueue(&mut tx, &new_event(company_id, event_types::DRIFT_DETECTED, &event)).await?;
        tx.commit().await?;
        self.relay.wake();

        let resolution = match policy {
            DriftPolicy::Alert => String::new(),
            DriftPolicy::Enforce => {
                let start = pb::StartRolloutRequest {
                    revision,
                    company_ids: vec![company_id.to_owned()],
                    ..Default::default()
                };
                format!("rollout/{}", self.rollouts.start(&system, start).await?.id)
            }
            DriftPolicy::Adopt => {
                let importer = Importer { store: &self.store, planner: &self.planner, revisions: &self.revisions };
                let (adopted, _) =
                    importer.run(&system, &[company_id.to_owned()], &format!("adopt drift {id}")).await?;
                // Reality is now the configuration: nothing is left to apply.
                sqlx::query("UPDATE applied_revisions SET revision = $1, applied_at = $2 WHERE company_id = $3")
                    .bind(adopted.number)
                    .bind(gomark_storage::now_ms())
                    .bind(company_id)
                    .execute(self.store.db().pool())
                    .await?;
                format!("revision/{}", adopted.number)
            }
        };
        sqlx::query("UPDATE drift_records SET resolution = $1 WHERE id = $2")
            .bind(&resolution)
            .bind(&id)
            .execute(self.store.db().pool())
            .await?;
        let row = sqlx::query("SELECT id, company_id, revision, detected_at, actions, policy, resolution FROM drift_records WHERE id = $1")
            .bind(&id)
            .fetch_one(self.store.db().pool())
            .await?;
        record(&row)
    }

    /// Drift records, newest first; one company's, or the portfolio's.
    pub async fn list(&self, company_id: &str, before: Option<&str>, limit: i64) -> Result<Vec<pb::DriftRecord>> {
        let rows = sqlx::query(
            "SELECT id, company_id, revision, detected_at, actions, policy, resolution FROM drift_records \
             WHERE ($1 = '' OR company_id = $1) AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(company_id)
        .bind(before.unwrap_or("~"))
        .bind(limit)
        .fetch_all(self.store.db().pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// Checks companies whose portals showed activity, as they come due, until shutdown.
    pub async fn run_triggered(self: Arc<Self>, shutdown: Shutdown) {
        let mut cooldown = HashMap::new();
        while !shutdown.is_triggered() {
            let next = self.check_triggered(&mut cooldown).await;
            let wait = next.map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = shutdown.wait() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Checks every applied company once per interval, one at a time and evenly spaced, so
    /// a thousand portals are never read at once; until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            let companies: Vec<String> =
                match sqlx::query("SELECT company_id FROM applied_revisions ORDER BY company_id")
                    .fetch_all(self.store.db().pool())
                    .await
                {
                    Ok(rows) => rows.iter().filter_map(|r| r.try_get("company_id").ok()).collect(),
                    Err(err) => {
                        tracing::warn!(error = %err, "drift: applied companies unreadable");
                        Vec::new()
                    }
                };
            if companies.is_empty() {
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(self.interval) => {}
                }
                continue;
            }
            let gap = self.interval / companies.len() as u32;
            for company in &companies {
                if let Err(err) = self.check(std::slice::from_ref(company)).await {
                    tracing::warn!(company_id = %company, error = %err, "drift check failed");
                }
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(gap) => {}
                }
            }
        }
    }
}
