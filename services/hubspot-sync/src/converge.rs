//! The one planner and applier for HubSpot: read the portal, plan with gtm-config, and
//! apply what the plan says; for a saved plan, only what it approved.
//!
//! Every run starts from a fresh read, so a run after a crash (or a second run) only does
//! what is still missing: a completed write is never repeated. A portal that changed so
//! that it needs an action the saved plan did not approve is not touched: the run stops
//! with "plan is stale".

use crate::portals::{Portal, Portals};
use gomark_storage::{Database, StorageError};
use gtm_config::wire::action_id;
use gtm_config::{Action, DealsInStages, EffectiveConfig, Op, PipelineIdMap, Plan, Target, order_or_index};
use hubspot_client::{
    HubSpotClient, PipelineCreate, PipelineStageInput, PipelineStageUpdate, PipelineUpdate, PropertyCreate,
    PropertyGroupCreate, PropertyGroupUpdate, PropertyOption, PropertyUpdate, stage_metadata,
};
use sqlx::Row;
use std::collections::BTreeSet;

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
    /// Set when HubSpot became unavailable or the portal's budget ran out part-way: the
    /// rest is for a later run.
    pub interrupted: Option<hubspot_client::Error>,
}

pub struct Converger {
    pub db: Database,
    pub portals: Portals,
    pub client: HubSpotClient,
}

/// The order plans are shown and applied in, which keeps dependencies satisfied: groups
/// before the properties in them (new properties first, created in batches), pipelines
/// before their stages, and removals last.
fn rank(action: &Action) -> (u8, u8, u8) {
    let kind = match action.target {
        Target::PropertyGroup(_) => 0,
        Target::DealProperty(_) => 1,
        Target::Pipeline(_) => 2,
        Target::Stage(..) => 3,
    };
    (u8::from(action.op == Op::Archive), kind, u8::from(action.op != Op::Create))
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
    async fn portal(&self, company_id: &str) -> Result<Portal, ConvergeError> {
        self.portals.get(company_id).await?.ok_or_else(|| ConvergeError::NoPortal(company_id.to_owned()))
    }

    /// The plan that makes the company's portal hold `desired`, in the order it would be
    /// applied. Stages a deletion would hit are checked for deals first (HubSpot refuses
    /// to delete those), so such deletions come out blocked.
    pub async fn plan(&self, company_id: &str, desired: &EffectiveConfig) -> Result<Plan, ConvergeError> {
        let portal = self.portal(company_id).await?;
        Ok(self.plan_portal(&portal, desired).await?.0)
    }

    async fn plan_portal(
        &self,
        portal: &Portal,
        desired: &EffectiveConfig,
    ) -> Result<(Plan, PipelineIdMap), ConvergeError> {
        let (_, observed) = crate::observed::read(&self.client, &portal.token()).await?;
        let mut ids = self.recorded_ids(&portal.company_id).await?;
        ids.match_by_label(desired, &observed);
        let managed = self.managed(&portal.company_id).await?;
        let mut plan = gtm_config::plan(desired, &observed, &ids, &DealsInStages::new(), &managed);
        let deleted = plan.deleted_stages(&ids, &observed);
        if !deleted.is_empty() {
            let used = crate::stage_usage::stages_in_use(&self.client, &portal.token(), &deleted).await?;
            if !used.is_empty() {
                plan = gtm_config::plan(desired, &observed, &ids, &used, &managed);
            }
        }
        plan.actions.sort_by_key(rank);
        Ok((plan, ids))
    }

    /// Plans `desired` afresh and applies the plan. With `approved` (a saved plan's action
    /// ids), an applicable action outside it stops the run before any write. HubSpot
    /// refusing an action is reported with it; HubSpot being unavailable or out of budget
    /// ends the run early with what was done so far.
    pub async fn apply(
        &self,
        company_id: &str,
        desired: &EffectiveConfig,
        approved: Option<&BTreeSet<String>>,
    ) -> Result<Applied, ConvergeError> {
        let portal = self.portal(company_id).await?;
        let (plan, ids) = self.plan_portal(&portal, desired).await?;
        let (blocked, actions): (Vec<Action>, Vec<Action>) =
            plan.actions.into_iter().partition(|a| a.blocked.is_some());
        if let Some(approved) = approved
            && let Some(extra) = actions.iter().find(|a| !approved.contains(&action_id(a)))
        {
            return Err(ConvergeError::Stale(format!(
                "the portal changed since the plan was made and now needs `{extra}`, which the plan does not hold; plan again"
            )));
        }
        let mut outcome = Applied { blocked, ..Applied::default() };
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
            if !self.apply_one(&portal, desired, &ids, action, &mut outcome).await? {
                return Ok(outcome);
            }
        }
        if !self.create_properties(&portal, desired, creates, &mut outcome).await? {
            return Ok(outcome);
        }
        for action in rest {
            if !self.apply_one(&portal, desired, &ids, action, &mut outcome).await? {
                return Ok(outcome);
            }
        }
        tracing::info!(company_id, portal_id = %portal.portal_id, performed = outcome.performed.len(), blocked = outcome.blocked.len(), failed = outcome.failed.len(), "portal converged");
        Ok(outcome)
    }

    /// Applies one action and records how it went; false when the run must stop (HubSpot
    /// unavailable or out of budget).
    async fn apply_one(
        &self,
        portal: &Portal,
        desired: &EffectiveConfig,
        ids: &PipelineIdMap,
        action: &Action,
        outcome: &mut Applied,
    ) -> Result<bool, ConvergeError> {
        match self.apply_action(portal, desired, ids, action).await {
            Ok(()) => outcome.performed.push(action.clone()),
            Err(ConvergeError::HubSpot(e)) if refused(&e) => outcome.failed.push((action.clone(), reason(&e))),
            Err(ConvergeError::HubSpot(e)) => {
                outcome.interrupted = Some(e);
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
        let result = match self.client.batch_create_deal_properties(&portal.token(), &inputs).await {
            Ok(result) => result,
            Err(e) if refused(&e) => {
                let why = reason(&e);
                outcome.failed.extend(creates.into_iter().map(|a| (a, why.clone())));
                return Ok(true);
            }
            Err(e) => {
                outcome.interrupted = Some(e);
                return Ok(false);
            }
        };
        let errors: Vec<String> = result.errors.iter().map(|e| e.message.chars().take(300).collect()).collect();
        for action in creates {
            let Target::DealProperty(name) = &action.target else { continue };
            if result.results.iter().any(|created| &created.name == name) {
                self.remember_managed(&portal.company_id, name).await?;
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

    async fn remember_managed(&self, company_id: &str, name: &str) -> Result<(), ConvergeError> {
        sqlx::query("INSERT INTO managed_properties (company_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(company_id)
            .bind(name)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    async fn apply_action(
        &self,
        portal: &Portal,
        desired: &EffectiveConfig,
        ids: &PipelineIdMap,
        action: &Action,
    ) -> Result<(), ConvergeError> {
        let token = portal.token();
        let company = portal.company_id.as_str();
        match (&action.target, action.op) {
            (Target::PropertyGroup(name), op) => {
                let group = desired.group(name);
                let label = group.map(|g| g.label.clone()).unwrap_or_default();
                let display_order = group.and_then(|g| g.display_order).map(i64::from);
                match op {
                    Op::Create => {
                        let input = PropertyGroupCreate { name: name.clone(), label, display_order };
                        self.client.create_deal_property_group(&token, &input).await?;
                    }
                    Op::Update => {
                        let input = PropertyGroupUpdate { label: Some(label), display_order };
                        self.client.update_deal_property_group(&token, name, &input).await?;
                    }
                    Op::Archive => self.client.archive_deal_property_group(&token, name).await?,
                }
            }
            (Target::DealProperty(name), Op::Archive) => match self.client.archive_deal_property(&token, name).await {
                Err(e) if e.status() == Some(404) => {}
                other => other?,
            },
            (Target::DealProperty(name), op) => {
                let Some(p) = desired.property(name) else { return Ok(()) };
                if op == Op::Create {
                    self.client.create_deal_property(&token, &property_create(p)).await?;
                    self.remember_managed(company, name).await?;
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
                    self.client.update_deal_property(&token, name, &input).await?;
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
                let created = self.client.create_deal_pipeline(&token, &input).await?;
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
                    self.client.delete_deal_pipeline(&token, hubspot).await?;
                } else if let Some((index, p)) = desired.pipelines.iter().enumerate().find(|(_, p)| &p.id == id) {
                    let input = PipelineUpdate {
                        label: Some(p.label.clone()),
                        display_order: Some(i64::from(order_or_index(p.display_order, index))),
                        archived: None,
                    };
                    self.client.update_deal_pipeline(&token, hubspot, &input).await?;
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
                        self.client.update_deal_pipeline_stage(&token, hubspot_pipeline, hubspot_stage, &input).await?;
                    }
                    (Op::Archive, _) => {
                        if let Some(hubspot_stage) = ids.hubspot_stage(pipeline, stage) {
                            self.client.delete_deal_pipeline_stage(&token, hubspot_pipeline, hubspot_stage).await?;
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
