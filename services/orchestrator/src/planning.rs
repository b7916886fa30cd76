//! Plans: what it takes to make each company's portal and Upso account hold a revision or
//! a proposed document. The services that own the vendors plan, each with one function
//! (hubspot-sync's PlanPortal, upso-cadence's PlanCadences); the orchestrator asks them
//! side by side and saves the answer under an id, so it can be applied exactly as shown.

use crate::revisions::{RevisionRow, Revisions};
use crate::rollout::{Rollouts, StartRequest};
use crate::store::{PlanRow, Store};
use crate::{Actor, Error, Result};
use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use gomark_platform::grpc_client::TracedChannel;
use gomark_platform::{Caller, ErrorKind, PublicError};
use gomark_proto::config::v1 as config_pb;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient;
use gomark_proto::hubspot_sync::v1::{ImportPortalRequest, ImportedPortal, PlanPortalRequest};
use gomark_proto::orchestrator::v1 as pb;
use gomark_proto::upso_cadence::v1::PlanCadencesRequest;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use gtm_config::{Document, EffectiveConfig};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Companies planned (or read for import) at once.
pub(crate) const PLAN_CONCURRENCY: usize = 8;
/// How long a plan waits for its portals; under the gateway's 10 s call deadline.
const PLAN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(6);
/// A saved plan older than this is refused: the portals have likely moved on.
const PLAN_MAX_AGE_MS: i64 = 24 * 3600 * 1000;

/// How far a plan or an import is, in companies; watched by whoever shows it (the
/// *WithProgress RPCs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: u32,
    pub total: u32,
}

pub struct Planner {
    store: Store,
    revisions: Arc<Revisions>,
    hubspot_sync: HubspotSyncServiceClient<TracedChannel>,
    upso_cadence: Option<UpsoCadenceServiceClient<TracedChannel>>,
}

/// What a plan is made from.
struct Source {
    /// The revision planned; 0 for a proposed document.
    revision: i64,
    document: Arc<Document>,
    /// The proposed document as canonical JSON, stored with the plan.
    proposed: Option<String>,
    rolled_back_to: Option<i64>,
}

/// A cadence action in the plan's terms: the fields that differ, and whether Upso's copy
/// was edited there.
fn cadence_action(a: gomark_proto::upso_cadence::v1::CadenceAction) -> config_pb::PlannedAction {
    let op = match a.op.as_str() {
        "create" => config_pb::Op::Create,
        "archive" => config_pb::Op::Archive,
        _ => config_pb::Op::Update,
    };
    let mut changes: Vec<config_pb::FieldChange> =
        a.fields.iter().map(|f| config_pb::FieldChange { field: f.clone(), before: None, after: None }).collect();
    if a.edited_in_upso {
        changes.push(config_pb::FieldChange {
            field: "editedInUpso".into(),
            before: None,
            after: Some(gomark_proto::json::to_value(&serde_json::Value::Bool(true))),
        });
    }
    config_pb::PlannedAction {
        id: a.id,
        target_kind: "cadence".into(),
        target: a.cadence_key,
        op: op as i32,
        changes,
        blocked: None,
        warnings: Vec::new(),
    }
}

impl Planner {
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
        }
    }

    /// One company's plan: HubSpot's actions, then Upso's. A vendor that cannot be read
    /// gives the company an `error` instead of hiding the other companies' plans.
    pub async fn plan_company(&self, key: &str, desired: &EffectiveConfig) -> Result<pb::CompanyPlan> {
        let mut company = pb::CompanyPlan {
            company_id: desired.company_id.clone(),
            company_key: key.to_owned(),
            ..pb::CompanyPlan::default()
        };
        let request = PlanPortalRequest {
            company_id: desired.company_id.clone(),
            desired: Some(gtm_config::wire::hubspot_config(desired)),
        };
        match self.hubspot_sync.clone().plan_portal(Caller::system("orchestrator").request(request)).await {
            Ok(plan) => {
                let plan = plan.into_inner();
                company.actions = plan.actions;
                company.last_change = plan.last_change;
                company.text = plan.text;
            }
            Err(status) => {
                company.error = format!("the portal could not be read: {}", PublicError::from(status).message);
                return Ok(company);
            }
        }
        let Some(upso) = &self.upso_cadence else { return Ok(company) };
        let request = PlanCadencesRequest {
            company_id: desired.company_id.clone(),
            desired: Some(gtm_config::wire::outreach_config(desired)),
        };
        match upso.clone().plan_cadences(Caller::system("orchestrator").request(request)).await {
            Ok(plan) => {
                let plan = plan.into_inner();
                company.text.push_str(&plan.text);
                company.actions.extend(plan.actions.into_iter().map(cadence_action));
            }
            Err(status) => {
                company.error =
                    format!("the Upso cadences could not be planned: {}", PublicError::from(status).message);
            }
        }
        Ok(company)
    }

    /// What the company's portal holds, as desired state (for import).
    pub async fn import_portal(&self, company_id: &str) -> std::result::Result<ImportedPortal, tonic::Status> {
        let request = Caller::system("orchestrator").request(ImportPortalRequest { company_id: company_id.to_owned() });
        Ok(self.hubspot_sync.clone().import_portal(request).await?.into_inner())
    }

    async fn source(&self, req: &pb::PlanRequest) -> Result<Source> {
        if !req.document.trim().is_empty() {
            let document = self.revisions.accept(&req.document).await?;
            let proposed = document
                .to_canonical_json()
                .map_err(|e| Error::from(gomark_storage::StorageError::Corrupt(e.to_string())))?;
            return Ok(Source {
                revision: 0,
                document: Arc::new(document),
                proposed: Some(proposed),
                rolled_back_to: None,
            });
        }
        if req.rollback_to > 0 {
            let (number, document) = self.revisions.document(req.rollback_to).await?;
            let proposed = document
                .to_canonical_json()
                .map_err(|e| Error::from(gomark_storage::StorageError::Corrupt(e.to_string())))?;
            return Ok(Source { revision: 0, document, proposed: Some(proposed), rolled_back_to: Some(number) });
        }
        let (revision, document) = self.revisions.document(req.revision).await?;
        Ok(Source { revision, document, proposed: None, rolled_back_to: None })
    }

    /// Plans every company of the request's revision or document (or those it names), and
    /// saves the plan. `progress`, when given, counts the companies as each one is planned;
    /// it is first set (0 of all) once the request is known to be plannable.
    pub async fn plan(
        &self,
        actor: &Actor,
        req: &pb::PlanRequest,
        progress: Option<&tokio::sync::watch::Sender<Progress>>,
    ) -> Result<pb::PlanResponse> {
        let source = self.source(req).await?;
        let base_revision = self.revisions.latest().await?.map_or(0, |r| r.number);
        let only = &req.company_ids;
        if let Some(missing) = only.iter().find(|id| source.document.key_of(id).is_none()) {
            let of = if source.revision > 0 { format!("revision {}", source.revision) } else { "the document".into() };
            return Err(Error::invalid("companyIds", format!("company {missing} is not in {of}")));
        }
        let selected: Vec<String> = source
            .document
            .companies
            .iter()
            .filter(|(_, o)| only.is_empty() || only.contains(&o.company_id))
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(progress) = progress {
            let total = u32::try_from(selected.len()).unwrap_or(u32::MAX);
            progress.send_replace(Progress { done: 0, total });
        }
        // Each company's reads go to its own portal and budget, so companies are planned
        // side by side, and the answer keeps the document's order. A portal that cannot be
        // read in time (its HubSpot budget spent elsewhere) is reported in its own row, so
        // the rest of the plan still arrives before the caller's deadline.
        let deadline = tokio::time::Instant::now() + PLAN_DEADLINE;
        let document = source.document.clone();
        let companies: Vec<pb::CompanyPlan> = stream::iter(selected)
            .map(|key| {
                let document = document.clone();
                // Boxed: the unboxed future trips rustc's higher-ranked `Send` check (#102211).
                async move {
                    let desired = document.effective(&key).map_err(|e| Error::invalid("companyIds", e.to_string()))?;
                    let planned = match tokio::time::timeout_at(deadline, self.plan_company(&key, &desired)).await {
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
                    };
                    // Counted when it finishes, not when `buffered` hands it on in order, so
                    // one slow portal does not hold the count back.
                    if let Some(progress) = progress {
                        progress.send_modify(|p| p.done += 1);
                    }
                    planned
                }
                .boxed()
            })
            .buffered(PLAN_CONCURRENCY)
            .try_collect()
            .await?;
        self.save(actor, source, base_revision, req.message.trim(), companies).await
    }

    /// Saves company plans under a new id.
    async fn save(
        &self,
        actor: &Actor,
        source: Source,
        base_revision: i64,
        message: &str,
        companies: Vec<pb::CompanyPlan>,
    ) -> Result<pb::PlanResponse> {
        let now = gomark_storage::now_ms();
        let response = pb::PlanResponse {
            revision: source.revision,
            companies,
            plan_id: uuid::Uuid::now_v7().to_string(),
            base_revision,
            created_at: Some(crate::companies::timestamp(now)),
            rollout_id: String::new(),
        };
        self.store
            .insert_plan(&PlanRow {
                id: response.plan_id.clone(),
                revision: source.revision,
                base_revision,
                document: source.proposed,
                message: message.to_owned(),
                rolled_back_to: source.rolled_back_to,
                created_by: actor.0.clone(),
                created_at: now,
                body: response.encode_to_vec(),
                rollout_id: None,
            })
            .await?;
        Ok(response)
    }

    /// Saves one company's plan of a stored revision (the undo of a drift) and rolls it out.
    pub async fn roll_out_company_plan(
        &self,
        actor: &Actor,
        rollouts: &Rollouts,
        revision: i64,
        company: pb::CompanyPlan,
    ) -> Result<pb::Rollout> {
        let (_, document) = self.revisions.document(revision).await?;
        let source = Source { revision, document, proposed: None, rolled_back_to: None };
        let company_id = company.company_id.clone();
        let plan = self.save(actor, source, revision, "", vec![company]).await?;
        let approved = plan
            .companies
            .iter()
            .map(|c| {
                (c.company_id.clone(), c.actions.iter().filter(|a| a.blocked.is_none()).map(|a| a.id.clone()).collect())
            })
            .collect();
        rollouts
            .start(
                actor,
                StartRequest {
                    revision,
                    company_ids: vec![company_id],
                    plan: Some((plan.plan_id, approved)),
                    ..StartRequest::default()
                },
            )
            .await
    }

    async fn saved(&self, id: &str) -> Result<(PlanRow, pb::PlanResponse)> {
        let row = self.store.get_plan(id).await?.ok_or_else(|| PublicError::not_found(format!("plan {id}")))?;
        let mut plan = pb::PlanResponse::decode(row.body.as_slice())
            .map_err(|e| Error::from(gomark_storage::StorageError::Corrupt(format!("plan {id}: {e}"))))?;
        plan.rollout_id = row.rollout_id.clone().unwrap_or_default();
        Ok((row, plan))
    }

    pub async fn get(&self, id: &str) -> Result<pb::PlanResponse> {
        Ok(self.saved(id).await?.1)
    }

    /// Applies a saved plan: its proposed document becomes a revision (only if no other
    /// revision was stored since it was made), and a rollout performs exactly its actions.
    pub async fn apply(
        &self,
        actor: &Actor,
        rollouts: &Rollouts,
        req: &pb::ApplyPlanRequest,
    ) -> Result<(RevisionRow, pb::Rollout)> {
        let (row, plan) = self.saved(&req.plan_id).await?;
        let stale = |why: String| Error::kind_of(ErrorKind::FailedPrecondition, format!("plan is stale: {why}"));
        if let Some(rollout) = &row.rollout_id {
            return Err(Error::kind_of(
                ErrorKind::FailedPrecondition,
                format!("plan {} was already applied by rollout {rollout}", row.id),
            ));
        }
        if gomark_storage::now_ms() - row.created_at > PLAN_MAX_AGE_MS {
            return Err(stale("it is more than a day old; plan again".into()));
        }
        if let Some(failed) = plan.companies.iter().find(|c| !c.error.is_empty()) {
            return Err(Error::kind_of(
                ErrorKind::FailedPrecondition,
                format!(
                    "company {} has no plan ({}); plan again, or plan without it",
                    failed.company_key, failed.error
                ),
            ));
        }
        let revision = match &row.document {
            None => self.revisions.get(row.revision).await?,
            Some(document) => {
                let document = Document::from_json(document)
                    .map_err(|e| Error::from(gomark_storage::StorageError::Corrupt(e.to_string())))?;
                let message = match (row.message.as_str(), row.rolled_back_to) {
                    ("", Some(to)) => format!("roll back to revision {to}"),
                    ("", None) => "apply plan".to_owned(),
                    (m, _) => m.to_owned(),
                };
                self.revisions
                    .create(actor, &document, &message, Some(row.base_revision), row.rolled_back_to)
                    .await
                    .map_err(|e| match e {
                        Error::RevisionRace(why) => {
                            stale(format!("another revision was stored since it was made ({why})"))
                        }
                        other => other,
                    })?
            }
        };
        let approved: BTreeMap<String, Vec<String>> = plan
            .companies
            .iter()
            .map(|c| {
                let ids = c.actions.iter().filter(|a| a.blocked.is_none()).map(|a| a.id.clone()).collect();
                (c.company_id.clone(), ids)
            })
            .collect();
        let rollout = rollouts
            .start(
                actor,
                StartRequest {
                    revision: revision.number,
                    company_ids: approved.keys().cloned().collect(),
                    concurrency: req.concurrency,
                    failure_threshold_pct: req.failure_threshold_pct,
                    plan: Some((row.id.clone(), approved)),
                    queue_if_busy: false,
                },
            )
            .await?;
        Ok((revision, rollout))
    }
}
