//! Drift: a portal changed by hand since GoMark applied its configuration.
//!
//! Every company is compared with the revision last applied to it in full (whatever the
//! latest revision is): a fresh plan against its portal that is no longer empty is drift
//! (HubSpot's own normalisations plan to nothing, so they are never drift). Each drift is
//! recorded, audited, published as `drift.detected`, and handled by the company's policy:
//! `enforce` rolls the plan that undoes it out to the company, `alert` only reports, `adopt`
//! imports reality as a new revision. An `enforce` that did not make the drift go away is
//! not repeated: the drift is raised as an alert instead of looping.

use crate::import::Importer;
use crate::planning::Planner;
use crate::revisions::Revisions;
use crate::rollout::Rollouts;
use crate::store::{AuditRecord, Store};
use crate::{Actor, Result};
use futures::StreamExt;
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_events::relay::RelayWaker;
use gomark_platform::Shutdown;
use gomark_proto::events::v1::DriftDetected;
use gomark_proto::hubspot_sync::v1::ChangeSource;
use gomark_proto::orchestrator::v1 as pb;
use gtm_config::{ChangeSourceKind, DriftPolicy};
use prost::Message;
use serde_json::json;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

pub struct DriftWatch {
    pub store: Store,
    pub revisions: Arc<Revisions>,
    pub planner: Arc<Planner>,
    pub rollouts: Arc<Rollouts>,
    pub relay: RelayWaker,
    /// Every company is checked once per interval, the checks spread across it.
    pub interval: Duration,
    pub wake: Notify,
}

/// A portal's activity triggers a check this long after the first event (more events in
/// between ride along), and at most once per [`TRIGGER_COOLDOWN`].
const TRIGGER_DEBOUNCE: Duration = Duration::from_secs(2);
const TRIGGER_COOLDOWN: Duration = Duration::from_secs(60);
/// Companies checked at once by one replica (each against its own portal and budget).
const CHECK_CONCURRENCY: usize = 8;
/// The schedule is looked at at least this often (new companies, other replicas' pulls).
const SCHEDULE_POLL: Duration = Duration::from_secs(1);

impl DriftWatch {
    pub fn new(
        store: Store,
        revisions: Arc<Revisions>,
        planner: Arc<Planner>,
        rollouts: Arc<Rollouts>,
        relay: RelayWaker,
        interval: Duration,
    ) -> Self {
        Self { store, revisions, planner, rollouts, relay, interval, wake: Notify::new() }
    }

    /// Asks for a check of each of `companies` soon: HubSpot sends no webhook when a
    /// property or pipeline definition changes, so activity in the portal is the signal to
    /// look. The requests are written to the shared schedule, so whichever replica is free
    /// runs them; the schedule loop is woken only when one moved a check.
    pub async fn trigger(&self, companies: &[&str]) -> Result<()> {
        let at = gomark_storage::now_ms() + TRIGGER_DEBOUNCE.as_millis() as i64;
        if self.store.request_drift_checks(companies, at, TRIGGER_COOLDOWN.as_millis() as i64).await? {
            self.wake.notify_one();
        }
        Ok(())
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
    let actions: Option<Vec<u8>> = r.try_get("actions_pb")?;
    Ok(pb::DriftRecord {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        revision: r.try_get("revision")?,
        detected_at: Some(crate::companies::timestamp(r.try_get("detected_at")?)),
        actions: actions
            .and_then(|b| pb::DriftRecord::decode(b.as_slice()).ok())
            .map(|d| d.actions)
            .unwrap_or_default(),
        policy: r.try_get("policy")?,
        resolution: r.try_get("resolution")?,
        source: {
            let kind: String = r.try_get("source_kind")?;
            (!kind.is_empty())
                .then(|| -> Result<ChangeSource> {
                    Ok(ChangeSource {
                        kind,
                        change_source: r.try_get("change_source")?,
                        source_id: r.try_get("source_id")?,
                        occurred_at: None,
                    })
                })
                .transpose()?
        },
    })
}

/// Who made the drift, as a kind the policy can go by.
fn source_kind(source: Option<&ChangeSource>) -> ChangeSourceKind {
    source.and_then(|s| ChangeSourceKind::parse(&s.kind)).unwrap_or_default()
}

/// What the last drift record of a company said.
struct LastDrift {
    actions: String,
    detected_at: i64,
    policy: String,
    resolution: String,
}

/// A drift's identity for comparing checks: its action ids, in order.
fn action_ids(actions: &[gomark_proto::config::v1::PlannedAction]) -> String {
    actions.iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(",")
}

impl DriftWatch {
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

    async fn last_drift(&self, company_id: &str) -> Result<Option<LastDrift>> {
        let row = sqlx::query(
            "SELECT actions, detected_at, policy, resolution FROM drift_records WHERE company_id = $1 ORDER BY detected_at DESC, id DESC LIMIT 1",
        )
        .bind(company_id)
        .fetch_optional(self.store.db().pool())
        .await?;
        row.map(|r| {
            Ok(LastDrift {
                actions: r.try_get("actions")?,
                detected_at: r.try_get("detected_at")?,
                policy: r.try_get("policy")?,
                resolution: r.try_get("resolution")?,
            })
        })
        .transpose()
    }

    /// Checks the given companies (every company with an applied revision when empty);
    /// returns how many were checked and the drifts found.
    pub async fn check(&self, company_ids: &[String]) -> Result<(u32, Vec<pb::DriftRecord>)> {
        let mut checked = 0;
        let mut drifted = Vec::new();
        // One company's check reads one row: a pass over the portfolio stays linear.
        let applied = if company_ids.is_empty() {
            self.store.applied_revisions().await?
        } else {
            let mut rows = Vec::new();
            for id in company_ids {
                if let Some((revision, at)) = self.store.applied_revision(id).await? {
                    rows.push((id.clone(), revision, at));
                }
            }
            rows
        };
        for (company_id, revision, applied_at) in applied {
            // Being applied: differences are expected, not drift.
            if self.rollout_in_flight(&company_id).await? {
                continue;
            }
            let (_, document) = self.revisions.document(revision).await?;
            let Some(key) = document.key_of(&company_id) else { continue };
            let Ok(desired) = document.effective(key) else { continue };
            let plan = self.planner.plan_company(key, &desired).await?;
            if !plan.error.is_empty() {
                // Not checked: saying "no drift" here would be a guess.
                tracing::warn!(company_id, error = %plan.error, "drift check could not plan the company");
                continue;
            }
            checked += 1;
            if plan.actions.is_empty() {
                continue;
            }
            let ids = action_ids(&plan.actions);
            let last = self.last_drift(&company_id).await?;
            // The same drift, still there and already handled, is not recorded again.
            if last.as_ref().is_some_and(|l| l.actions == ids && l.detected_at > applied_at) {
                continue;
            }
            // The same drift back after its enforcement was applied: enforcing again would
            // loop, so it is raised for a person instead.
            let unconverged = last
                .as_ref()
                .is_some_and(|l| l.actions == ids && l.policy == "enforce" && l.resolution.starts_with("rollout/"));
            // The policy for who made it: e.g. adopt an admin's edit, enforce against an
            // integration's.
            let policy = desired.settings.drift_policy_for(source_kind(plan.last_change.as_ref()));
            drifted.push(self.handle(revision, policy, plan, unconverged).await?);
        }
        Ok((checked, drifted))
    }

    async fn handle(
        &self,
        revision: i64,
        policy: DriftPolicy,
        plan: pb::CompanyPlan,
        unconverged: bool,
    ) -> Result<pb::DriftRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        let company_id = plan.company_id.clone();
        let now = gomark_storage::now_ms();
        let system = Actor("system:drift".into());
        let count = plan.actions.len();
        let lines: Vec<String> = plan.actions.iter().map(gtm_config::wire::action_line).collect();
        let source = plan.last_change.clone().unwrap_or_default();
        let kind = source_kind(plan.last_change.as_ref());
        if unconverged {
            tracing::error!(
                company_id,
                revision,
                actions = count,
                "drift came back after enforcement; raised as an alert instead of enforcing again"
            );
            metrics::counter!("drift_enforce_unconverged_total").increment(1);
        } else {
            tracing::warn!(
                company_id,
                revision,
                policy = policy_name(policy),
                source = kind.as_str(),
                actions = count,
                "drift detected"
            );
        }
        metrics::counter!("drift_detected_total", "policy" => policy_name(policy)).increment(1);
        let encoded = pb::DriftRecord { actions: plan.actions.clone(), ..pb::DriftRecord::default() }.encode_to_vec();

        let mut tx = self.store.db().begin().await?;
        sqlx::query(
            "INSERT INTO drift_records (id, company_id, revision, detected_at, actions, policy, actions_pb, source_kind, change_source, source_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&id)
        .bind(&company_id)
        .bind(revision)
        .bind(now)
        .bind(action_ids(&plan.actions))
        .bind(policy_name(policy))
        .bind(encoded)
        .bind(if plan.last_change.is_some() { kind.as_str() } else { "" })
        .bind(&source.change_source)
        .bind(&source.source_id)
        .execute(&mut *tx)
        .await?;
        self.store
            .append_audit(
                &mut tx,
                &AuditRecord {
                    company_id: company_id.clone(),
                    actor: system.0.clone(),
                    action: "drift.detected".into(),
                    resource: format!("drift/{id}"),
                    before: None,
                    after: Some(json!({"revision": revision, "policy": policy_name(policy), "actions": lines, "unconverged": unconverged,
                        "source": {"kind": kind.as_str(), "changeSource": source.change_source, "sourceId": source.source_id}})),
                },
            )
            .await?;
        let event = DriftDetected {
            company_id: company_id.clone(),
            drift_id: id.clone(),
            revision,
            policy: policy_name(policy).to_owned(),
            actions: count as u32,
        };
        gomark_events::outbox::enqueue(&mut tx, &new_event(&company_id, event_types::DRIFT_DETECTED, &event)).await?;
        tx.commit().await?;
        self.relay.wake();

        let resolution = match policy {
            _ if unconverged => {
                "unconverged: enforcing did not remove it; fix the portal or the configuration".to_owned()
            }
            DriftPolicy::Alert => String::new(),
            DriftPolicy::Enforce => {
                let rollout = self.planner.roll_out_company_plan(&system, &self.rollouts, revision, plan).await?;
                format!("rollout/{}", rollout.id)
            }
            DriftPolicy::Adopt => {
                let importer = Importer { store: &self.store, planner: &self.planner, revisions: &self.revisions };
                let (adopted, _) = importer
                    .run(&system, std::slice::from_ref(&company_id), &format!("adopt drift {id}"), None)
                    .await?;
                format!("revision/{}", adopted.number)
            }
        };
        sqlx::query("UPDATE drift_records SET resolution = $1 WHERE id = $2")
            .bind(&resolution)
            .bind(&id)
            .execute(self.store.db().pool())
            .await?;
        let row = sqlx::query(
            "SELECT id, company_id, revision, detected_at, actions_pb, policy, resolution, source_kind, change_source, source_id FROM drift_records WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(self.store.db().pool())
        .await?;
        record(&row)
    }

    /// Drift records, newest first; one company's, or the portfolio's.
    pub async fn list(&self, company_id: &str, before: Option<&str>, limit: i64) -> Result<Vec<pb::DriftRecord>> {
        let rows = sqlx::query(
            "SELECT id, company_id, revision, detected_at, actions_pb, policy, resolution, source_kind, change_source, source_id FROM drift_records \
             WHERE ($1 = '' OR company_id = $1) AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(company_id)
        .bind(before.unwrap_or("~"))
        .bind(limit)
        .fetch_all(self.store.db().pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// Runs the drift checks that come due in the shared schedule, a few at a time, until
    /// shutdown: every company once per interval (spread across it), and sooner when its
    /// portal showed activity. Survives the database going away, logging it once.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let interval_ms = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX / 4);
        let mut failing = false;
        while !shutdown.is_triggered() {
            let now = gomark_storage::now_ms();
            let claimed = async {
                self.store.schedule_new_drift_checks(now, interval_ms).await?;
                self.store.claim_drift_checks(now, interval_ms, (CHECK_CONCURRENCY * 4) as i64).await
            }
            .await;
            let companies = gomark_platform::telemetry::poll_span("drift schedule").in_scope(|| match claimed {
                Ok(companies) => {
                    if failing {
                        tracing::info!("drift schedule: the database is back");
                        failing = false;
                    }
                    companies
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err, "drift schedule: cannot reach the database; retrying");
                        failing = true;
                    }
                    Vec::new()
                }
            });
            let busy = !companies.is_empty();
            futures::stream::iter(companies)
                .for_each_concurrent(CHECK_CONCURRENCY, |company| {
                    let this = self.clone();
                    // One trace per company's check, with its calls to hubspot-sync.
                    async move {
                        if let Err(err) = this.check(std::slice::from_ref(&company)).await {
                            tracing::warn!(company_id = %company, error = %err, "drift check failed");
                        }
                    }
                    .instrument(gomark_platform::telemetry::root_span("drift check"))
                })
                .await;
            if busy {
                continue;
            }
            let wait = match self.store.next_drift_check_at().await {
                Ok(Some(at)) => Duration::from_millis(u64::try_from(at - gomark_storage::now_ms()).unwrap_or(0)),
                _ => SCHEDULE_POLL,
            }
            .min(SCHEDULE_POLL);
            tokio::select! {
                () = shutdown.wait() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
