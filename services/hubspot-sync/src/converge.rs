//! The one planner and applier for HubSpot: read the portal, plan with gtm-config, and
//! apply what the plan says; for a saved plan, only what it approved.
//!
//! Every run starts from a fresh read, so a run after a crash (or a second run) only does
//! what is still missing: a completed write is never repeated. A portal that changed so
//! that it needs an action the saved plan did not approve is not touched: the run stops
//! with "plan is stale".
//!
//! A run keeps within its caller's deadline: it does not wait for the portal's budget past
//! it, nor start a write it has no time to finish; it stops early with what it performed
//! and when to come back. The rest of its plan is kept for a short while, so the next run
//! for the same desired state resumes with the writes instead of reading the portal again
//! (reads cost as much of the portal's budget as writes).

use crate::portals::{Portal, Portals};
use gomark_storage::{Database, StorageError};
use gtm_config::wire::action_id;
use gtm_config::{Action, DealsInStages, EffectiveConfig, Op, PipelineIdMap, Plan, Target, order_or_index};
use hubspot_client::{
    ApiVersion, HubSpotClient, PipelineCreate, PipelineStageInput, PipelineStageUpdate, PipelineUpdate, PropertyCreate,
    PropertyGroupCreate, PropertyGroupUpdate, PropertyOption, PropertyUpdate, PropertyValidationRule, stage_metadata,
};
use sqlx::Row;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long a run may take when its caller set no deadline.
const DEFAULT_RUN: Duration = Duration::from_secs(20);
/// Time kept free before the caller's deadline, for the answer to reach it.
const ANSWER_MARGIN: Duration = Duration::from_millis(1_000);
/// How long the unfinished part of an interrupted run may be resumed without a fresh read.
/// Short, because another writer may change the portal meanwhile.
const RESUME_FOR: Duration = Duration::from_secs(120);
/// Unfinished runs kept at most (one per company; the oldest go first).
const RESUME_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Portal(#[from] crate::portals::PortalError),
    #[error("HubSpot: {0}")]
    HubSpot(#[from] hubspot_client::Error),
    #[error("no HubSpot portal is registered for company {0}")]
    NoPortal(String),
    /// The portal needs an action the saved plan did not approve.
    #[error("plan is stale: {0}")]
    Stale(String),
    /// The conformance probe of an API version move found the portal unusable on it.
    #[error("API version probe failed: {0}")]
    Probe(String),
}

impl From<sqlx::Error> for ConvergeError {
    fn from(err: sqlx::Error) -> Self {
        ConvergeError::Storage(err.into())
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Written to HubSpot, in order.
    pub performed: Vec<Action>,
    /// What HubSpot cannot do; not attempted.
    pub blocked: Vec<Action>,
    /// What HubSpot refused, with its reason.
    pub failed: Vec<(Action, String)>,
    /// Set when the run stopped part-way: the rest is for a later run.
    pub interrupted: Option<Interrupted>,
}

/// Why a run stopped before its plan was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// The portal's HubSpot budget has no room before the caller's deadline: come back
    /// after this long (None: HubSpot did not say).
    Budget(Option<Duration>),
    /// The caller's deadline is too near to start another write; `progress` when this run
    /// wrote something or made a plan the next run resumes.
    OutOfTime { progress: bool },
    /// HubSpot is unavailable.
    Unavailable,
}

impl Interrupted {
    fn from_error(err: &hubspot_client::Error) -> Self {
        match err {
            hubspot_client::Error::RateLimited { retry_after, .. } => Interrupted::Budget(*retry_after),
            _ => Interrupted::Unavailable,
        }
    }
}

/// The part of an interrupted run's plan not done yet, with what it was planned from.
struct Unfinished {
    desired: EffectiveConfig,
    approved: Option<BTreeSet<String>>,
    observed: gtm_config::Observed,
    remaining: Vec<Action>,
    blocked: Vec<Action>,
    /// The slowest HubSpot exchange of the run: what the next one is expected to take.
    slowest: Duration,
    saved_at: Instant,
}

/// A run's clock: its deadline, and the slowest HubSpot exchange seen so far, which is
/// what the next one is assumed to take.
struct Clock {
    until: Instant,
    slowest: Duration,
}

impl Clock {
    fn new(deadline: Option<Instant>, slowest: Duration) -> Self {
        let default = Instant::now() + DEFAULT_RUN;
        let until =
            deadline.map_or(default, |d| d.checked_sub(ANSWER_MARGIN).unwrap_or_else(Instant::now).min(default));
        Self { until, slowest }
    }

    /// The latest moment a request may still start and be answered in time.
    fn last_start(&self) -> Instant {
        self.until.checked_sub(self.slowest).unwrap_or_else(Instant::now)
    }

    fn has_time(&self) -> bool {
        Instant::now() < self.last_start()
    }

    /// A client that does not wait for a budget slot past the last useful start.
    fn client(&self, base: &HubSpotClient) -> HubSpotClient {
        base.clone().with_budget_wait_until(self.last_start())
    }

    fn took(&mut self, started: Instant) {
        self.slowest = self.slowest.max(started.elapsed());
    }
}

pub struct Converger {
    db: Database,
    portals: Portals,
    client: HubSpotClient,
    unfinished: Mutex<HashMap<String, Unfinished>>,
}

/// The order plans are shown and applied in, which keeps dependencies satisfied: groups
/// before the properties in them (new properties first, created in batches), pipelines
/// before their stages, and removals last.
fn rank(action: &Action) -> (u8, u8, u8) {
    let kind = match action.target {
        Target::PropertyGroup(_) => 0,
        Target::DealProperty(_) => 1,
        // Rules after the properties they are on; before stages, whose deal moves they
        // may refuse.
        Target::ValidationRule(..) => 2,
        Target::Pipeline(_) => 3,
        Target::Stage(..) => 4,
        // Deal moves after the stages they go to exist; the emptied stage is deleted after
        // them, with the other removals.
        // Rules once the stages they name exist; before the deal moves they may refuse.
        Target::PipelineRules(_) => 5,
        Target::StageDeals(..) => 6,
        // Last: the configuration is written on the version known to work, then the probe
        // runs and the pin moves.
        Target::ApiVersion => return (2, 0, 0),
    };
    (u8::from(action.op == Op::Archive), kind, u8::from(action.op != Op::Create))
}

/// For the deletion of a stage whose deals could not be moved out: why it is not attempted.
fn failed_move(action: &Action, outcome: &Applied) -> Option<String> {
    let Target::Stage(pipeline, stage) = &action.target else { return None };
    (action.op == Op::Archive)
        .then(|| {
            outcome
                .failed
                .iter()
                .find(|(a, _)| matches!(&a.target, Target::StageDeals(p, s) if p == pipeline && s == stage))
        })
        .flatten()
        .map(|_| "not attempted: its deals could not be moved".to_owned())
}

/// HubSpot refused the action itself (as opposed to being unavailable or out of budget).
fn refused(err: &hubspot_client::Error) -> bool {
    !err.is_retryable() && !matches!(err, hubspot_client::Error::RateLimited { .. })
}

fn reason(err: &hubspot_client::Error) -> String {
    err.to_string().chars().take(300).collect()
}

fn options(property: &gtm_config::DealProperty) -> Vec<PropertyOption> {
    property
        .options
        .iter()
        .enumerate()
        .map(|(i, o)| PropertyOption {
            label: o.label.clone(),
            value: o.value.clone(),
            description: None,
            display_order: Some(i64::from(order_or_index(o.display_order, i))),
            hidden: o.hidden,
        })
        .collect()
}

fn property_create(p: &gtm_config::DealProperty) -> PropertyCreate {
    PropertyCreate {
        name: p.name.clone(),
        label: p.label.clone(),
        r#type: p.property_type.as_str().to_owned(),
        field_type: p.field_type.as_str().to_owned(),
        group_name: p.group_name.clone(),
        description: p.description.clone(),
        options: options(p),
        has_unique_value: p.has_unique_value.then_some(true),
        ..PropertyCreate::default()
    }
}

fn stage_input(stage: &gtm_config::Stage, position: usize) -> PipelineStageInput {
    PipelineStageInput {
        label: stage.label.clone(),
        display_order: i64::from(order_or_index(stage.display_order, position)),
        metadata: stage_metadata(stage.probability, stage.closed),
        stage_id: None,
    }
}

impl Converger {
    pub fn new(db: Database, portals: Portals, client: HubSpotClient) -> Self {
        Self { db, portals, client, unfinished: Mutex::new(HashMap::new()) }
    }

    fn unfinished(&self) -> std::sync::MutexGuard<'_, HashMap<String, Unfinished>> {
        self.unfinished.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The unfinished part of the company's last run, when it was planned for this same
    /// desired state and approval, recently.
    fn take_unfinished(
        &self,
        company_id: &str,
        desired: &EffectiveConfig,
        approved: Option<&BTreeSet<String>>,
    ) -> Option<Unfinished> {
        let u = self.unfinished().remove(company_id)?;
        (u.saved_at.elapsed() < RESUME_FOR && &u.desired == desired && u.approved.as_ref() == approved).then_some(u)
    }

    fn keep_unfinished(&self, company_id: &str, u: Unfinished) {
        let mut all = self.unfinished();
        all.retain(|_, u| u.saved_at.elapsed() < RESUME_FOR);
        if all.len() >= RESUME_MAX {
            return;
        }
        all.insert(company_id.to_owned(), u);
    }

    async fn portal(&self, company_id: &str) -> Result<Portal, ConvergeError> {
        self.portals.get(company_id).await?.ok_or_else(|| ConvergeError::NoPortal(company_id.to_owned()))
    }

    /// The plan that makes the company's portal hold `desired`, in the order it would be
    /// applied. Stages a deletion would hit are checked for deals first (HubSpot refuses
    /// to delete those), so such deletions come out blocked.
    pub async fn plan(&self, company_id: &str, desired: &EffectiveConfig) -> Result<Plan, ConvergeError> {
        let portal = self.portal(company_id).await?;
        Ok(self.plan_portal(&self.client, &portal, desired).await?.0)
    }

    async fn plan_portal(
        &self,
        client: &HubSpotClient,
        portal: &Portal,
        desired: &EffectiveConfig,
    ) -> Result<(Plan, gtm_config::Observed, PipelineIdMap), ConvergeError> {
        let mut ids = self.recorded_ids(&portal.company_id).await?;
        let managed = self.managed(&portal.company_id).await?;
        // Only what the plan can touch is read: declared kinds, and kinds GoMark created
        // before (they may have to be archived).
        // Rules on declared properties are desired state too (a rule added by hand is
        // drift), and a stage's deals move only where no rule refuses them. A property
        // that is not in the portal holds no rule, so when only properties are declared
        // and GoMark created none of them yet (a first rollout), the rules are read only
        // once the properties show one of them exists: one read fewer per portal.
        let rules_always = !desired.validation_rules.is_empty() || !desired.pipelines.is_empty();
        let rules_maybe = !desired.deal_properties.is_empty();
        let rules_now =
            rules_always || (rules_maybe && desired.deal_properties.iter().any(|p| managed.contains(&p.name)));
        let scope = crate::observed::Scope {
            properties: !desired.deal_properties.is_empty() || !managed.is_empty(),
            groups: !desired.property_groups.is_empty(),
            pipelines: !desired.pipelines.is_empty() || !ids.pipelines.is_empty(),
            validations: rules_now,
            // Declared pipeline rules, and the portal's rules on pipelines whose deals GoMark
            // may move (a rule may refuse the move).
            pipeline_rules: desired.pipelines.iter().any(|p| p.rules.is_some() || !p.removed_stages.is_empty()),
        };
        let (raw, mut observed) = crate::observed::read_scoped(client, &portal.token(), scope).await?;
        // Archived properties count: whether HubSpot keeps their rules is not for us to guess.
        if !rules_now && rules_maybe && raw.iter().any(|p| desired.property(&p.name).is_some()) {
            let validations = client.list_deal_property_validations(&portal.token()).await?;
            observed.validation_rules = crate::observed::validation_rules(validations);
        }
        observed.api_version = Some(portal.api_version.as_str().to_owned());
        ids.match_by_label(desired, &observed);
        let mut plan = gtm_config::plan(desired, &observed, &ids, &DealsInStages::new(), &managed);
        let deleted = plan.deleted_stages(&ids, &observed);
        if !deleted.is_empty() {
            let used = crate::stage_usage::stages_in_use(client, &portal.token(), &deleted).await?;
            if !used.is_empty() {
                plan = gtm_config::plan(desired, &observed, &ids, &used, &managed);
                // Stages whose deals the config moves elsewhere: counted (with the deals a
                // rule at the destination would refuse), then planned as moves.
                let needed = plan.deal_counts_needed(desired, &observed, &ids);
                if !needed.is_empty() {
                    observed.stage_deals = crate::stage_usage::count_deals(client, &portal.token(), &needed).await?;
                    plan = gtm_config::plan(desired, &observed, &ids, &used, &managed);
                }
            }
        }
        plan.actions.sort_by_key(rank);
        Ok((plan, observed, ids))
    }

    /// The HubSpot ids of the company's pipelines and stages: recorded, or matched by label.
    async fn ids(
        &self,
        company_id: &str,
        desired: &EffectiveConfig,
        observed: &gtm_config::Observed,
    ) -> Result<PipelineIdMap, ConvergeError> {
        let mut ids = self.recorded_ids(company_id).await?;
        ids.match_by_label(desired, observed);
        Ok(ids)
    }

    /// Plans `desired` afresh (or resumes the unfinished part of the last run for it) and
    /// applies the plan, finishing before `deadline`. With `approved` (a saved plan's action
    /// ids), an applicable action outside it stops the run before any write. HubSpot
    /// refusing an action is reported with it; HubSpot being unavailable, the portal's
    /// budget being spent or the deadline coming near ends the run early with what was done
    /// so far.
    pub async fn apply(
        &self,
        company_id: &str,
        desired: &EffectiveConfig,
        approved: Option<&BTreeSet<String>>,
        deadline: Option<Instant>,
    ) -> Result<Applied, ConvergeError> {
        let portal = self.portal(company_id).await?;
        let resumed = self.take_unfinished(company_id, desired, approved);
        let mut clock = Clock::new(deadline, resumed.as_ref().map_or(Duration::ZERO, |u| u.slowest));
        let fresh = resumed.is_none();
        let (actions, blocked, observed, ids) = match resumed {
            Some(u) => {
                tracing::debug!(company_id, remaining = u.remaining.len(), "resuming an interrupted apply");
                let ids = self.ids(company_id, desired, &u.observed).await?;
                (u.remaining, u.blocked, u.observed, ids)
            }
            None => {
                let started = Instant::now();
                let planned = self.plan_portal(&clock.client(&self.client), &portal, desired).await;
                clock.took(started);
                let (plan, observed, ids) = match planned {
                    Ok(planned) => planned,
                    Err(ConvergeError::HubSpot(e)) if !refused(&e) => {
                        return Ok(Applied { interrupted: Some(Interrupted::from_error(&e)), ..Applied::default() });
                    }
                    Err(other) => return Err(other),
                };
                let (blocked, actions): (Vec<Action>, Vec<Action>) =
                    plan.actions.into_iter().partition(|a| a.blocked.is_some());
                if let Some(approved) = approved
                    && let Some(extra) = actions.iter().find(|a| !approved.contains(&action_id(a)))
                {
                    return Err(ConvergeError::Stale(format!(
                        "the portal changed since the plan was made and now needs `{extra}`, which the plan does not hold; plan again"
                    )));
                }
                (actions, blocked, observed, ids)
            }
        };
        let mut outcome = Applied { blocked, ..Applied::default() };
        self.apply_actions(&portal, desired, &ids, actions.clone(), &mut clock, &mut outcome).await?;
        if let Some(Interrupted::OutOfTime { progress }) = &mut outcome.interrupted {
            *progress = fresh || !outcome.performed.is_empty();
        }
        match outcome.interrupted {
            // Nothing was sent for what is left: it can be resumed as planned.
            Some(Interrupted::Budget(_) | Interrupted::OutOfTime { .. }) => {
                let attempted: BTreeSet<String> =
                    outcome.performed.iter().chain(outcome.failed.iter().map(|(a, _)| a)).map(action_id).collect();
                let remaining = actions.into_iter().filter(|a| !attempted.contains(&action_id(a))).collect();
                let unfinished = Unfinished {
                    desired: desired.clone(),
                    approved: approved.cloned(),
                    observed,
                    remaining,
                    blocked: outcome.blocked.clone(),
                    slowest: clock.slowest,
                    saved_at: Instant::now(),
                };
                self.keep_unfinished(company_id, unfinished);
            }
            Some(Interrupted::Unavailable) => {}
            None => {
                tracing::info!(company_id, portal_id = %portal.portal_id, performed = outcome.performed.len(), blocked = outcome.blocked.len(), failed = outcome.failed.len(), "portal converged");
            }
        }
        Ok(outcome)
    }

    /// Applies `actions` in dependency order until done or interrupted.
    async fn apply_actions(
        &self,
        portal: &Portal,
        desired: &EffectiveConfig,
        ids: &PipelineIdMap,
        actions: Vec<Action>,
        clock: &mut Clock,
        outcome: &mut Applied,
    ) -> Result<(), ConvergeError> {
        // New properties go in batch calls (HubSpot's batch create takes 100), not one call
        // each: after the groups they belong to, before everything else.
        let (creates, others): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(|a| matches!(a.target, Target::DealProperty(_)) && a.op == Op::Create);
        let groups_end = others
            .iter()
            .position(|a| !matches!(a.target, Target::PropertyGroup(_)) || a.op == Op::Archive)
            .unwrap_or(others.len());
        let (groups, rest) = others.split_at(groups_end);
        for action in groups {
            if !self.apply_one(portal, desired, ids, action, clock, outcome).await? {
                return Ok(());
            }
        }
        if !self.create_properties(portal, desired, creates, clock, outcome).await? {
            return Ok(());
        }
        for action in rest {
            if let Some(move_failed) = failed_move(action, outcome) {
                // HubSpot would refuse it (the stage still holds deals); it is reported once,
                // with the refused move.
                outcome.failed.push((action.clone(), move_failed));
                continue;
            }
            if !self.apply_one(portal, desired, ids, action, clock, outcome).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Applies one action and records how it went; false when the run must stop (HubSpot
    /// unavailable, out of budget, or no time left).
    async fn apply_one(
        &self,
        portal: &Portal,
        desired: &EffectiveConfig,
        ids: &PipelineIdMap,
        action: &Action,
        clock: &mut Clock,
        outcome: &mut Applied,
    ) -> Result<bool, ConvergeError> {
        if !clock.has_time() {
            outcome.interrupted = Some(Interrupted::OutOfTime { progress: false });
            return Ok(false);
        }
        let started = Instant::now();
        let result = self.apply_action(&clock.client(&self.client), portal, desired, ids, action).await;
        clock.took(started);
        match result {
            Ok(()) => outcome.performed.push(action.clone()),
            Err(ConvergeError::HubSpot(e)) if refused(&e) => outcome.failed.push((action.clone(), reason(&e))),
            Err(ConvergeError::Probe(why)) => {
                tracing::warn!(company_id = %portal.company_id, portal_id = %portal.portal_id, reason = %why, "API version probe failed; pin kept");
                outcome.failed.push((action.clone(), why.chars().take(300).collect()));
            }
            Err(ConvergeError::HubSpot(e)) => {
                outcome.interrupted = Some(Interrupted::from_error(&e));
                return Ok(false);
            }
            Err(other) => return Err(other),
        }
        Ok(true)
    }

    /// Creates properties in batch calls; a property HubSpot refuses is reported, not fatal.
    async fn create_properties(
        &self,
        portal: &Portal,
        desired: &EffectiveConfig,
        creates: Vec<Action>,
        clock: &mut Clock,
        outcome: &mut Applied,
    ) -> Result<bool, ConvergeError> {
        let inputs: Vec<PropertyCreate> = creates
            .iter()
            .filter_map(|a| match &a.target {
                Target::DealProperty(name) => desired.property(name).map(property_create),
                _ => None,
            })
            .collect();
        if inputs.is_empty() {
            return Ok(true);
        }
        if !clock.has_time() {
            outcome.interrupted = Some(Interrupted::OutOfTime { progress: false });
            return Ok(false);
        }
        let started = Instant::now();
        let created = clock.client(&self.client).batch_create_deal_properties(&portal.token(), &inputs).await;
        clock.took(started);
        let result = match created {
            Ok(result) => result,
            Err(e) if refused(&e) => {
                let why = reason(&e);
                outcome.failed.extend(creates.into_iter().map(|a| (a, why.clone())));
                return Ok(true);
            }
            Err(e) => {
                outcome.interrupted = Some(Interrupted::from_error(&e));
                return Ok(false);
            }
        };
        let errors: Vec<String> = result.errors.iter().map(|e| e.message.chars().take(300).collect()).collect();
        let created: Vec<&str> = result.results.iter().map(|p| p.name.as_str()).collect();
        self.remember_managed(&portal.company_id, &created).await?;
        for action in creates {
            let Target::DealProperty(name) = &action.target else { continue };
            if created.contains(&name.as_str()) {
                outcome.performed.push(action);
            } else {
                let why = errors.iter().find(|e| e.contains(name.as_str())).or(errors.first()).cloned();
                outcome.failed.push((action, why.unwrap_or_else(|| "HubSpot did not create it".into())));
            }
        }
        Ok(true)
    }

    /// The HubSpot ids of the pipelines and stages GoMark created (or adopted) in the
    /// company's portal, by GoMark id; kept after the config drops them.
    pub async fn recorded_ids(&self, company_id: &str) -> Result<PipelineIdMap, ConvergeError> {
        let mut ids = PipelineIdMap::default();
        let rows =
            sqlx::query("SELECT gomark_pipeline_id, hubspot_pipeline_id FROM pipeline_ids WHERE company_id = $1")
                .bind(company_id)
                .fetch_all(self.db.pool())
                .await?;
        for r in &rows {
            let gomark: String = r.try_get("gomark_pipeline_id")?;
            let hubspot: String = r.try_get("hubspot_pipeline_id")?;
            ids.insert_pipeline(&gomark, &hubspot);
        }
        let rows = sqlx::query(
            "SELECT gomark_pipeline_id, gomark_stage_id, hubspot_stage_id FROM stage_ids WHERE company_id = $1",
        )
        .bind(company_id)
        .fetch_all(self.db.pool())
        .await?;
        for r in &rows {
            let pipeline: String = r.try_get("gomark_pipeline_id")?;
            let stage: String = r.try_get("gomark_stage_id")?;
            let hubspot: String = r.try_get("hubspot_stage_id")?;
            ids.insert_stage(&pipeline, &stage, &hubspot);
        }
        Ok(ids)
    }

    async fn remember_pipeline(&self, company_id: &str, gomark: &str, hubspot: &str) -> Result<(), ConvergeError> {
        sqlx::query(
            "INSERT INTO pipeline_ids (company_id, gomark_pipeline_id, hubspot_pipeline_id) VALUES ($1, $2, $3) \
             ON CONFLICT (company_id, gomark_pipeline_id) DO UPDATE SET hubspot_pipeline_id = excluded.hubspot_pipeline_id",
        )
        .bind(company_id)
        .bind(gomark)
        .bind(hubspot)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    async fn remember_stage(
        &self,
        company_id: &str,
        pipeline: &str,
        stage: &str,
        hubspot: &str,
    ) -> Result<(), ConvergeError> {
        sqlx::query(
            "INSERT INTO stage_ids (company_id, gomark_pipeline_id, gomark_stage_id, hubspot_stage_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (company_id, gomark_pipeline_id, gomark_stage_id) DO UPDATE SET hubspot_stage_id = excluded.hubspot_stage_id",
        )
        .bind(company_id)
        .bind(pipeline)
        .bind(stage)
        .bind(hubspot)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    async fn managed(&self, company_id: &str) -> Result<BTreeSet<String>, ConvergeError> {
        let rows = sqlx::query("SELECT name FROM managed_properties WHERE company_id = $1")
            .bind(company_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(|r| r.try_get("name")).collect::<Result<_, _>>()?)
    }

    /// Records the properties GoMark created, in one statement per hundred: a batch create
    /// of a baseline is one write, not one per property.
    async fn remember_managed(&self, company_id: &str, names: &[&str]) -> Result<(), ConvergeError> {
        for chunk in names.chunks(100) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${})", i + 2)).collect();
            let sql = format!(
                "INSERT INTO managed_properties (company_id, name) VALUES {} ON CONFLICT DO NOTHING",
                values.join(", ")
            );
            // Safe: the statement holds only numbered placeholders; the names are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(company_id);
            for name in chunk {
                query = query.bind(*name);
            }
            query.execute(self.db.pool()).await?;
        }
        Ok(())
    }

    async fn apply_action(
        &self,
        client: &HubSpotClient,
        portal: &Portal,
        desired: &EffectiveConfig,
        ids: &PipelineIdMap,
        action: &Action,
    ) -> Result<(), ConvergeError> {
        let token = portal.token();
        let company = portal.company_id.as_str();
        match (&action.target, action.op) {
            (Target::ApiVersion, _) => {
                let Some(version) = desired.api_version.as_deref() else { return Ok(()) };
                let version: ApiVersion = version
                    .parse()
                    .map_err(|e: hubspot_client::UnknownApiVersion| ConvergeError::Probe(e.to_string()))?;
                crate::probe::conformance(client, portal, version).await?;
                self.portals.set_api_version(company, version).await?;
                tracing::info!(company_id = company, portal_id = %portal.portal_id, from = %portal.api_version, to = %version, "portal moved to a new HubSpot API version");
            }
            (Target::PropertyGroup(name), op) => {
                let group = desired.group(name);
                let label = group.map(|g| g.label.clone()).unwrap_or_default();
                let display_order = group.and_then(|g| g.display_order).map(i64::from);
                match op {
                    Op::Create => {
                        let input = PropertyGroupCreate { name: name.clone(), label, display_order };
                        client.create_deal_property_group(&token, &input).await?;
                    }
                    Op::Update => {
                        let input = PropertyGroupUpdate { label: Some(label), display_order };
                        client.update_deal_property_group(&token, name, &input).await?;
                    }
                    Op::Archive => client.archive_deal_property_group(&token, name).await?,
                }
            }
            (Target::DealProperty(name), Op::Archive) => match client.archive_deal_property(&token, name).await {
                Err(e) if e.status() == Some(404) => {}
                other => other?,
            },
            (Target::DealProperty(name), op) => {
                let Some(p) = desired.property(name) else { return Ok(()) };
                if op == Op::Create {
                    client.create_deal_property(&token, &property_create(p)).await?;
                    self.remember_managed(company, &[name.as_str()]).await?;
                } else {
                    let input = PropertyUpdate {
                        label: Some(p.label.clone()),
                        description: Some(p.description.clone().unwrap_or_default()),
                        group_name: Some(p.group_name.clone()),
                        options: (!p.options.is_empty()).then(|| options(p)),
                        r#type: Some(p.property_type.as_str().to_owned()),
                        field_type: Some(p.field_type.as_str().to_owned()),
                        ..PropertyUpdate::default()
                    };
                    client.update_deal_property(&token, name, &input).await?;
                }
            }
            (Target::Pipeline(id), Op::Create) => {
                let Some((index, p)) = desired.pipelines.iter().enumerate().find(|(_, p)| &p.id == id) else {
                    return Ok(());
                };
                // The plan expects the list position when no order is declared; HubSpot's
                // default (0) would read as drift forever.
                let input = PipelineCreate {
                    label: p.label.clone(),
                    display_order: i64::from(order_or_index(p.display_order, index)),
                    stages: p.stages.iter().enumerate().map(|(i, s)| stage_input(s, i)).collect(),
                    pipeline_id: None,
                };
                let created = client.create_deal_pipeline(&token, &input).await?;
                self.remember_pipeline(company, id, &created.id).await?;
                for stage in &p.stages {
                    if let Some(s) = created.stages.iter().find(|s| s.label == stage.label) {
                        self.remember_stage(company, id, &stage.id, &s.id).await?;
                    }
                }
            }
            (Target::Pipeline(id), op) => {
                let Some(hubspot) = ids.hubspot_pipeline(id) else { return Ok(()) };
                if op == Op::Archive {
                    client.delete_deal_pipeline(&token, hubspot).await?;
                } else if let Some((index, p)) = desired.pipelines.iter().enumerate().find(|(_, p)| &p.id == id) {
                    let input = PipelineUpdate {
                        label: Some(p.label.clone()),
                        display_order: Some(i64::from(order_or_index(p.display_order, index))),
                        archived: None,
                    };
                    client.update_deal_pipeline(&token, hubspot, &input).await?;
                }
            }
            (Target::ValidationRule(property, rule_type), Op::Archive) => {
                client.delete_deal_property_validation(&token, property, rule_type).await?;
            }
            (Target::ValidationRule(property, rule_type), _) => {
                let Some(rule) = desired
                    .validation_rules
                    .iter()
                    .find(|r| &r.property == property && r.rule_type.as_str() == rule_type)
                else {
                    return Ok(());
                };
                let input = PropertyValidationRule {
                    rule_type: rule_type.clone(),
                    rule_arguments: rule.rule_arguments.clone(),
                    should_apply_normalization: rule.should_apply_normalization,
                };
                client.put_deal_property_validation(&token, property, &input).await?;
            }
            (Target::PipelineRules(pipeline), _) => {
                let Some(rules) = desired.pipeline(pipeline).and_then(|p| p.rules.as_ref()) else { return Ok(()) };
                // Stages created earlier in this run are recorded, not in `ids` yet.
                let mut ids = ids.clone();
                for (gomark, recorded) in self.recorded_ids(company).await?.pipelines {
                    if !recorded.hubspot_id.is_empty() {
                        ids.insert_pipeline(&gomark, &recorded.hubspot_id);
                    }
                    for (stage, hubspot_stage) in &recorded.stages {
                        ids.insert_stage(&gomark, stage, hubspot_stage);
                    }
                }
                let Some(hubspot_pipeline) = ids.hubspot_pipeline(pipeline) else { return Ok(()) };
                let stages = |stages: &[String]| -> Vec<String> {
                    stages.iter().filter_map(|s| ids.hubspot_stage(pipeline, s)).map(str::to_owned).collect()
                };
                let stage_rule = |r: &gtm_config::StageRule| hubspot_client::StageRuleSpec {
                    enabled_for_all_stages: r.all_stages,
                    pipeline_stage_ids: stages(&r.stages),
                };
                let input = hubspot_client::GovernanceRules {
                    no_backwards_movement_rule: rules.no_backwards_movement.as_ref().map(stage_rule),
                    no_skipping_stages_rule: rules.no_skipping_stages.as_ref().map(stage_rule),
                    object_creation_rule: (!rules.creation_stages.is_empty()).then(|| {
                        hubspot_client::CreationRuleSpec { pipeline_stage_ids: stages(&rules.creation_stages) }
                    }),
                };
                // Through the version the plan moves the pin to, if it does (the pin moves last).
                let version = desired.api_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(portal.api_version);
                client.put_deal_pipeline_rules(&portal.token_for(version), hubspot_pipeline, &input).await?;
            }
            (Target::StageDeals(pipeline, stage), _) => {
                let to = desired
                    .pipeline(pipeline)
                    .and_then(|p| p.removed_stages.iter().find(|r| &r.id == stage))
                    .and_then(|r| ids.hubspot_stage(pipeline, &r.move_deals_to));
                let (Some(hubspot_pipeline), Some(from), Some(to)) =
                    (ids.hubspot_pipeline(pipeline), ids.hubspot_stage(pipeline, stage), to)
                else {
                    return Ok(());
                };
                let deals = crate::stage_usage::deals_in_stage(client, &token, hubspot_pipeline, from).await?;
                if !deals.is_empty() {
                    let properties = [("dealstage".to_owned(), to.to_owned())].into();
                    let result = client.batch_update_deals(&token, &deals, &properties).await?;
                    if let Some(e) = result.errors.first() {
                        // E.g. deals deleted meanwhile; any left behind make the stage's
                        // deletion fail, which is reported.
                        tracing::warn!(company, category = %e.category, "some deals were not moved");
                    }
                }
            }
            (Target::Stage(pipeline, stage), op) => {
                let Some(hubspot_pipeline) = ids.hubspot_pipeline(pipeline) else { return Ok(()) };
                let desired_stage =
                    desired.pipeline(pipeline).and_then(|p| p.stages.iter().enumerate().find(|(_, s)| &s.id == stage));
                match (op, desired_stage) {
                    (Op::Create, Some((i, s))) => {
                        let created = self
                            .client
                            .create_deal_pipeline_stage(&token, hubspot_pipeline, &stage_input(s, i))
                            .await?;
                        self.remember_stage(company, pipeline, stage, &created.id).await?;
                    }
                    (Op::Update, Some((i, s))) => {
                        let Some(hubspot_stage) = ids.hubspot_stage(pipeline, stage) else { return Ok(()) };
                        let input = PipelineStageUpdate {
                            metadata: stage_metadata(s.probability, s.closed),
                            label: Some(s.label.clone()),
                            display_order: Some(i64::from(order_or_index(s.display_order, i))),
                            ..PipelineStageUpdate::default()
                        };
                        client.update_deal_pipeline_stage(&token, hubspot_pipeline, hubspot_stage, &input).await?;
                    }
                    (Op::Archive, _) => {
                        if let Some(hubspot_stage) = ids.hubspot_stage(pipeline, stage) {
                            client.delete_deal_pipeline_stage(&token, hubspot_pipeline, hubspot_stage).await?;
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
