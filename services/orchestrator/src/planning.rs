//! Plans: what it takes to make each company's portal match a revision, from the portal's
//! observed state (read through hubspot-sync).

use crate::revisions::RevisionRow;
use crate::store::Store;
use crate::{Error, Result};
use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use gomark_platform::grpc_client::TracedChannel;
use gomark_platform::{Caller, PublicError};
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient;
use gomark_proto::hubspot_sync::v1::{GetObservedStateRequest, GetStagesInUseRequest, ObservedState, StageRef};
use gomark_proto::orchestrator::v1 as pb;
use gomark_proto::upso_cadence::v1::PlanCadencesRequest;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use gtm_config::{DealsInStages, EffectiveConfig, Observed, Op, PipelineIdMap, Plan, Target};
use std::collections::BTreeSet;

/// Companies planned (or read for import) at once.
pub(crate) const PLAN_CONCURRENCY: usize = 8;
/// How long a plan waits for its portals; under the gateway's 10 s call deadline.
const PLAN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(6);

pub struct Planner {
    store: Store,
    hubspot_sync: HubspotSyncServiceClient<TracedChannel>,
    upso_cadence: Option<UpsoCadenceServiceClient<TracedChannel>>,
}

fn observed_from(state: ObservedState) -> Observed {
    Observed {
        properties: state
            .properties
            .into_iter()
            .filter_map(|p| {
                let spec = p.spec?;
                Some(gtm_config::ObservedProperty {
                    name: spec.name,
                    label: spec.label,
                    property_type: spec.r#type,
                    field_type: spec.field_type,
                    group_name: spec.group_name,
                    description: spec.description,
                    options: spec
                        .options
                        .into_iter()
                        .map(|o| gtm_config::PropertyOption {
                            label: o.label,
                            value: o.value,
                            display_order: Some(o.display_order),
                            hidden: o.hidden,
                        })
                        .collect(),
                    hubspot_defined: p.hubspot_defined,
                    has_unique_value: false,
                })
            })
            .collect(),
        groups: state
            .groups
            .into_iter()
            .map(|g| gtm_config::ObservedGroup { name: g.name, label: g.label, display_order: g.display_order })
            .collect(),
        pipelines: state
            .pipelines
            .into_iter()
            .map(|p| gtm_config::ObservedPipeline {
                hubspot_id: p.id,
                label: p.label,
                display_order: p.display_order,
                stages: p
                    .stages
                    .into_iter()
                    .map(|s| gtm_config::ObservedStage {
                        hubspot_id: s.id,
                        label: s.label,
                        display_order: s.display_order,
                        probability: s.probability,
                        is_closed: s.is_closed,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The ids hubspot-sync recorded for what GoMark created in the portal.
fn recorded_ids(state: &ObservedState) -> PipelineIdMap {
    let mut ids = PipelineIdMap::default();
    for p in &state.recorded_pipelines {
        ids.insert_pipeline(&p.pipeline_id, &p.hubspot_pipeline_id);
        for (stage, hubspot) in &p.stages {
            ids.insert_stage(&p.pipeline_id, stage, hubspot);
        }
    }
    ids
}

fn target_parts(target: &Target) -> (&'static str, String) {
    match target {
        Target::PropertyGroup(name) => ("property_group", name.clone()),
        Target::DealProperty(name) => ("deal_property", name.clone()),
        Target::Pipeline(id) => ("pipeline", id.clone()),
        Target::Stage(pipeline, stage) => ("stage", format!("{pipeline}/{stage}")),
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Create => "create",
        Op::Update => "update",
        Op::Archive => "archive",
    }
}

fn plan_proto(company_key: &str, company_id: &str, plan: &Plan) -> pb::CompanyPlan {
    pb::CompanyPlan {
        company_id: company_id.to_owned(),
        company_key: company_key.to_owned(),
        actions: plan
            .actions
            .iter()
            .map(|a| {
                let (kind, target) = target_parts(&a.target);
                pb::PlannedAction {
                    target_kind: kind.to_owned(),
                    target,
                    op: op_name(a.op).to_owned(),
                    changes_json: serde_json::to_string(&a.changes).unwrap_or_default(),
                    blocked_reason: a.blocked.as_ref().map(|b| b.reason.clone()).unwrap_or_default(),
                    safe_alternative: a.blocked.as_ref().map(|b| b.safe_alternative.clone()).unwrap_or_default(),
                }
            })
            .collect(),
        error: String::new(),
        text: plan.to_string(),
    }
}

impl Planner {
    pub fn new(store: Store, hubspot_sync: TracedChannel, upso_cadence: Option<TracedChannel>) -> Self {
        Self {
            store,
            hubspot_sync: HubspotSyncServiceClient::new(hubspot_sync),
            upso_cadence: upso_cadence.map(UpsoCadenceServiceClient::new),
        }
    }

    /// The company's Upso cadence actions (none when upso-cadence is not configured).
    async fn plan_cadences(
        &self,
        desired: &EffectiveConfig,
    ) -> std::result::Result<Vec<pb::PlannedAction>, tonic::Status> {
        let Some(client) = &self.upso_cadence else { return Ok(Vec::new()) };
        let request = PlanCadencesRequest {
            company_id: desired.company_id.clone(),
            desired_json: serde_json::to_string(desired)
                .map_err(|_| tonic::Status::internal("unserialisable config"))?,
        };
        let plan = client.clone().plan_cadences(Caller::system("orchestrator").request(request)).await?.into_inner();
        Ok(plan
            .actions
            .into_iter()
            .map(|a| pb::PlannedAction {
                target_kind: "cadence".into(),
                target: a.cadence_key,
                op: a.op,
                changes_json: serde_json::json!({"fields": a.fields, "editedInUpso": a.edited_in_upso}).to_string(),
                blocked_reason: String::new(),
                safe_alternative: String::new(),
            })
            .collect())
    }

    /// The plan of every company of `revision` (or those in `only`).
    pub async fn plan(&self, revision: &RevisionRow, only: &[String]) -> Result<pb::PlanResponse> {
        let document = revision.parse()?;
        let selected: Vec<(String, EffectiveConfig)> = document
            .effective_all()
            .into_iter()
            .filter(|(_, desired)| only.is_empty() || only.contains(&desired.company_id))
            .collect();
        // Each company's reads go to its own portal and budget, so companies are planned
        // side by side, and the answer keeps the document's order. A portal that cannot be
        // read in time (its HubSpot budget spent elsewhere) is reported in its own row, so
        // the rest of the plan still arrives before the caller's deadline.
        let deadline = tokio::time::Instant::now() + PLAN_DEADLINE;
        let companies: Vec<pb::CompanyPlan> = stream::iter(selected)
            // Boxed: the unboxed future trips rustc's higher-ranked `Send` check (#102211).
            .map(|(key, desired)| {
                async move {
                    match tokio::time::timeout_at(deadline, self.plan_company(&key, &desired)).await {
                        Ok(plan) => plan,
                        Err(_) => Ok(pb::CompanyPlan {
                            company_id: desired.company_id.clone(),
                            company_key: key,
                            error: format!(
                                "the portal could not be read within {} s; plan this company again",
                                PLAN_DEADLINE.as_secs()
                            ),
                            ..pb::CompanyPlan::default()
                        }),
                    }
                }
                .boxed()
            })
            .buffered(PLAN_CONCURRENCY)
            .try_collect()
            .await?;
        if let Some(missing) = only.iter().find(|id| !companies.iter().any(|c| &c.company_id == *id)) {
            return Err(Error::invalid(
                "company_ids",
                format!("company {missing} is not in revision {}", revision.number),
            ));
        }
        Ok(pb::PlanResponse { revision: revision.number, companies })
    }

    async fn observed_state(&self, company_id: &str) -> std::result::Result<ObservedState, tonic::Status> {
        let request =
            Caller::system("orchestrator").request(GetObservedStateRequest { company_id: company_id.to_owned() });
        Ok(self.hubspot_sync.clone().get_observed_state(request).await?.into_inner())
    }

    /// What the company's portal holds now.
    pub async fn observe(&self, company_id: &str) -> std::result::Result<Observed, tonic::Status> {
        Ok(observed_from(self.observed_state(company_id).await?))
    }

    /// The plan as hubspot-sync's converge will make it: recorded ids first (so stages
    /// GoMark created and the config dropped are deleted), then labels; deletions of
    /// stages that still hold deals blocked.
    async fn plan_portal(
        &self,
        desired: &EffectiveConfig,
        managed: &BTreeSet<String>,
    ) -> std::result::Result<Plan, tonic::Status> {
        let state = self.observed_state(&desired.company_id).await?;
        let mut ids = recorded_ids(&state);
        let observed = observed_from(state);
        ids.match_by_label(desired, &observed);
        let plan = gtm_config::plan(desired, &observed, &ids, &DealsInStages::new(), managed);
        let deleted = plan.deleted_stages(&ids, &observed);
        if deleted.is_empty() {
            return Ok(plan);
        }
        let request = GetStagesInUseRequest {
            company_id: desired.company_id.clone(),
            stages: deleted.into_iter().map(|(pipeline_id, stage_id)| StageRef { pipeline_id, stage_id }).collect(),
        };
        let used: DealsInStages = self
            .hubspot_sync
            .clone()
            .get_stages_in_use(Caller::system("orchestrator").request(request))
            .await?
            .into_inner()
            .stages
            .into_iter()
            .map(|s| (s.pipeline_id, s.stage_id))
            .collect();
        Ok(if used.is_empty() { plan } else { gtm_config::plan(desired, &observed, &ids, &used, managed) })
    }

    pub(crate) async fn plan_company(&self, key: &str, desired: &EffectiveConfig) -> Result<pb::CompanyPlan> {
        let managed: BTreeSet<String> =
            self.store.list_properties(&desired.company_id, true).await?.into_iter().map(|p| p.spec.name).collect();
        let plan = match self.plan_portal(desired, &managed).await {
            Ok(plan) => plan,
            Err(status) => {
                // One unreachable portal does not hide the plans of the others.
                let why = PublicError::from(status).message;
                return Ok(pb::CompanyPlan {
                    company_id: desired.company_id.clone(),
                    company_key: key.to_owned(),
                    error: format!("the portal could not be read: {why}"),
                    ..pb::CompanyPlan::default()
                });
            }
        };
        let mut company = plan_proto(key, &desired.company_id, &plan);
        match self.plan_cadences(desired).await {
            Ok(actions) => {
                for a in &actions {
                    let sign = match a.op.as_str() {
                        "create" => "+",
                        "archive" => "-",
                        _ => "~",
                    };
                    company.text.push_str(&format!("{sign} cadence {}\n", a.target));
                }
                company.actions.extend(actions);
            }
            Err(status) => {
                let why = PublicError::from(status).message;
                company.error = format!("the Upso cadences could not be planned: {why}");
            }
        }
        Ok(company)
    }
}
