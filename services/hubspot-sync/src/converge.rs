//! Converging a portal on a company's effective configuration: read the portal, plan with
//! gtm-config, apply what HubSpot allows, remember HubSpot's generated ids.
//!
//! Every run starts from a fresh read, so a run after a crash (or a second run) only does
//! what is still missing: a completed write is never repeated.

use crate::portals::{Portal, Portals};
use gomark_storage::{Database, StorageError};
use gtm_config::{Action, DealsInStages, EffectiveConfig, Observed, Op, PipelineIdMap, Target};
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
}

impl From<sqlx::Error> for ConvergeError {
    fn from(err: sqlx::Error) -> Self {
        ConvergeError::Storage(err.into())
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Converged {
    pub applied: u32,
    pub blocked: Vec<String>,
    pub failed: Vec<String>,
    pub plan_text: String,
}

pub struct Converger {
    pub db: Database,
    pub portals: Portals,
    pub client: HubSpotClient,
}

/// The order that keeps dependencies satisfied: groups before the properties in them,
/// pipelines before their stages, and removals last.
fn rank(action: &Action) -> (u8, u8) {
    let kind = match action.target {
        Target::PropertyGroup(_) => 0,
        Target::DealProperty(_) => 1,
        Target::Pipeline(_) => 2,
        Target::Stage(..) => 3,
    };
    (u8::from(action.op == Op::Archive), kind)
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
            display_order: Some(i64::from(o.display_order.unwrap_or(i as i32))),
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
        display_order: i64::from(stage.display_order.unwrap_or(position as i32)),
        metadata: stage_metadata(stage.probability, stage.closed),
        stage_id: None,
    }
}

impl Converger {
    async fn ids(
        &self,
        company_id: &str,
        desired: &EffectiveConfig,
        observed: &Observed,
    ) -> Result<PipelineIdMap, ConvergeError> {
        let mut ids = self.recorded_ids(company_id).await?;
        ids.match_by_label(desired, observed);
        Ok(ids)
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

    /// Converges the company's portal on `desired`. HubSpot errors worth retrying (outage,
    /// rate limit) end the run with an error; refusals are reported per action.
    pub async fn converge(&self, company_id: &str, desired: &EffectiveConfig) -> Result<Converged, ConvergeError> {
        let Some(portal) = self.portals.get(company_id).await? else {
            return Ok(Converged {
                failed: vec!["no HubSpot portal is registered for this company".into()],
                ..Converged::default()
            });
        };
        let (_, observed) = crate::observed::read(&self.client, &portal.token()).await?;
        let ids = self.ids(company_id, desired, &observed).await?;
        let mut managed = self.managed(company_id).await?;
        managed.extend(desired.deal_properties.iter().map(|p| p.name.clone()));
        let mut plan = gtm_config::plan(desired, &observed, &ids, &DealsInStages::new(), &managed);
        let deleted = plan.deleted_stages(&ids, &observed);
        if !deleted.is_empty() {
            let used = crate::stage_usage::stages_in_use(&self.client, &portal.token(), &deleted).await?;
            if !used.is_empty() {
                plan = gtm_config::plan(desired, &observed, &ids, &used, &managed);
            }
        }
        let mut outcome = Converged { plan_text: plan.to_string(), ..Converged::default() };
        let mut actions: Vec<&Action> = plan.actions.iter().collect();
        actions.sort_by_key(|a| rank(a));
        for (action, blocked) in actions.iter().filter_map(|a| a.blocked.as_ref().map(|b| (a, b))) {
            outcome.blocked.push(format!("{}: {}", action.target, blocked.reason));
        }
        actions.retain(|a| a.blocked.is_none());
        // New properties go in batch calls (HubSpot's batch create takes 100), not one call
        // each: after the groups they belong to, before everything else.
        let groups_end = actions
            .iter()
            .position(|a| !matches!(a.target, Target::PropertyGroup(_)) || a.op == Op::Archive)
            .unwrap_or(actions.len());
        let rest = actions.split_off(groups_end);
        let (creates, rest): (Vec<&Action>, Vec<&Action>) =
            rest.into_iter().partition(|a| matches!(a.target, Target::DealProperty(_)) && a.op == Op::Create);
        for action in actions {
            self.apply_one(&portal, desired, &ids, action, &mut outcome).await?;
        }
        self.create_properties(&portal, desired, &creates, &mut outcome).await?;
        for action in rest {
            self.apply_one(&portal, desired, &ids, action, &mut outcome).await?;
        }
        tracing::info!(company_id, portal_id = %portal.portal_id, applied = outcome.applied, blocked = outcome.blocked.len(), failed = outcome.failed.len(), "portal converged");
        Ok(outcome)
    }

    /// Applies one action; HubSpot refusing it is reported, an outage ends the run.
    async fn apply_one(
        &self,
        portal: &Portal,
        desired: &EffectiveConfig,
        ids: &PipelineIdMap,
        action: &Action,
        outcome: &mut Converged,
    ) -> Result<(), ConvergeError> {
        match self.apply(portal, desired, ids, action).await {
            Ok(()) => outcome.applied += 1,
            Err(ConvergeError::HubSpot(e))
                if !e.is_retryable() && !matches!(e, hubspot_client::Error::RateLimited { .. }) =>
            {
                let reason: String = e.to_string().chars().take(300).collect();
                outcome.failed.push(format!("{}: {reason}", action.target));
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }

    /// Creates `creates` in batch calls; a property HubSpot refuses is reported, not fatal.
    async fn create_properties(
        &self,
        portal: &Portal,
        desired: &EffectiveConfig,
        creates: &[&Action],
        outcome: &mut Converged,
    ) -> Result<(), ConvergeError> {
        let inputs: Vec<PropertyCreate> = creates
            .iter()
            .filter_map(|a| match &a.target {
                Target::DealProperty(name) => desired.property(name).map(property_create),
                _ => None,
            })
            .collect();
        if inputs.is_empty() {
            return Ok(());
        }
        let result = match self.client.batch_create_deal_properties(&portal.token(), &inputs).await {
            Ok(result) => result,
            Err(e) if !e.is_retryable() && !matches!(e, hubspot_client::Error::RateLimited { .. }) => {
                let reason: String = e.to_string().chars().take(300).collect();
                outcome.failed.extend(inputs.iter().map(|p| format!("deal property {}: {reason}", p.name)));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        for created in &result.results {
            self.remember_managed(&portal.company_id, &created.name).await?;
            outcome.applied += 1;
        }
        for error in &result.errors {
            let reason: String = error.message.chars().take(300).collect();
            outcome.failed.push(format!("deal property: {reason}"));
        }
        Ok(())
    }

    async fn apply(
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
                let Some(p) = desired.pipeline(id) else { return Ok(()) };
                let input = PipelineCreate {
                    label: p.label.clone(),
                    display_order: i64::from(p.display_order.unwrap_or(0)),
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
                } else if let Some(p) = desired.pipeline(id) {
                    let input = PipelineUpdate {
                        label: Some(p.label.clone()),
                        display_order: p.display_order.map(i64::from),
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
                            display_order: Some(i64::from(s.display_order.unwrap_or(i as i32))),
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
