//! hubspot-sync's gRPC face.

use crate::budget::PortalBudget;
use crate::converge::{ConvergeError, Converger};
use crate::credentials::Credential;
use crate::deals::DealSync;
use crate::portals::{PortalError, Portals};
use gomark_platform::token::check_bearer_token;
use gomark_platform::{Caller, ErrorKind, PublicError, Role};
use gomark_proto::common::v1::{DealPropertySpec, PropertyOption};
use gomark_proto::hubspot_sync::v1 as pb;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_server::HubspotSyncService;
use hubspot_client::HubSpotClient;
use tonic::{Request, Response, Status};

pub struct HubspotSyncGrpc {
    portals: Portals,
    client: HubSpotClient,
    deals: DealSync,
    budget: std::sync::Arc<PortalBudget>,
    converger: Converger,
}

impl HubspotSyncGrpc {
    pub fn new(
        portals: Portals,
        client: HubSpotClient,
        deals: DealSync,
        budget: std::sync::Arc<PortalBudget>,
        converger: Converger,
    ) -> Self {
        Self { portals, client, deals, budget, converger }
    }
}

/// A property as HubSpot holds it, in the contract's terms.
fn observed_property(p: hubspot_client::Property) -> pb::ObservedDealProperty {
    pb::ObservedDealProperty {
        hubspot_defined: p.hubspot_defined.unwrap_or(false),
        archived: p.archived,
        spec: Some(DealPropertySpec {
            name: p.name,
            label: p.label,
            r#type: p.r#type,
            field_type: p.field_type,
            group_name: p.group_name,
            description: p.description,
            options: p
                .options
                .into_iter()
                .map(|o| PropertyOption {
                    label: o.label,
                    value: o.value,
                    description: o.description.unwrap_or_default(),
                    display_order: o.display_order.unwrap_or(0) as i32,
                    hidden: o.hidden,
                })
                .collect(),
        }),
    }
}

impl HubspotSyncGrpc {
    /// The company's registered portal, or not found.
    async fn portal(&self, company_id: &str) -> Result<crate::portals::Portal, Status> {
        self.portals
            .get(company_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| PublicError::not_found(format!("HubSpot portal of company {company_id}")).into())
    }
}

fn internal(err: impl std::fmt::Display) -> Status {
    tracing::error!(error = %err, "internal error");
    PublicError::internal().into()
}

/// HubSpot's failure as the caller should see it: its outage is ours to report, its
/// refusal of our token is the caller's to fix.
fn hubspot_failure(err: hubspot_client::Error) -> Status {
    tracing::warn!(error = %err, "hubspot call failed");
    let public = match err.status() {
        Some(401 | 403) => PublicError::new(ErrorKind::FailedPrecondition, "HubSpot refused the company's token"),
        Some(429) => {
            PublicError::new(ErrorKind::RateLimited, "the portal's HubSpot rate limit is exhausted, retry later")
        }
        _ => PublicError::unavailable("HubSpot"),
    };
    public.into()
}

#[tonic::async_trait]
impl HubspotSyncService for HubspotSyncGrpc {
    async fn register_portal(
        &self,
        req: Request<pb::RegisterPortalRequest>,
    ) -> Result<Response<pb::RegisterPortalResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require(Role::Admin, &r.company_id)?;
        if r.company_id.is_empty() {
            return Err(PublicError::invalid("company_id", "is required").into());
        }
        if r.token.trim().is_empty() && r.oauth.as_ref().is_none_or(|o| o.access_token.is_empty()) {
            return Err(PublicError::invalid("token", "is required").into());
        }
        let credential = match r.oauth {
            Some(oauth) if !oauth.access_token.is_empty() => {
                if oauth.refresh_token.is_empty() || oauth.expires_in_secs <= 0 {
                    return Err(PublicError::invalid("oauth", "needs a refresh token and a positive expiry").into());
                }
                check_bearer_token("oauth.access_token", &oauth.access_token)?;
                check_bearer_token("oauth.refresh_token", &oauth.refresh_token)?;
                Credential::OAuth {
                    access_token: oauth.access_token,
                    refresh_token: oauth.refresh_token,
                    expires_at_ms: gomark_storage::now_ms() + oauth.expires_in_secs.saturating_mul(1000),
                }
            }
            _ => {
                check_bearer_token("token", &r.token)?;
                Credential::PrivateApp { token: r.token }
            }
        };
        // One company per portal (a unique index backs this check against races).
        let holder = self.portals.company_of_portal(&r.portal_id).await.map_err(internal)?;
        if let Some(holder) = holder.filter(|h| *h != r.company_id) {
            return Err(caller.already_bound(&format!("HubSpot portal {}", r.portal_id), Some(&holder)).into());
        }
        self.portals.register(&r.company_id, &r.portal_id, &credential).await.map_err(|err| match err {
            PortalError::Storage(gomark_storage::StorageError::Query(e)) if gomark_storage::is_unique_violation(&e) => {
                caller.already_bound(&format!("HubSpot portal {}", r.portal_id), None).into()
            }
            other => internal(other),
        })?;
        tracing::info!(company_id = %r.company_id, portal_id = %r.portal_id, "portal registered");
        Ok(Response::new(pb::RegisterPortalResponse {}))
    }

    async fn list_observed_deal_properties(
        &self,
        req: Request<pb::ListObservedDealPropertiesRequest>,
    ) -> Result<Response<pb::ListObservedDealPropertiesResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let company_id = req.into_inner().company_id;
        caller.require(Role::Viewer, &company_id)?;
        let portal = self.portal(&company_id).await?;
        let properties = self.client.list_deal_properties(&portal.token()).await.map_err(hubspot_failure)?;
        Ok(Response::new(pb::ListObservedDealPropertiesResponse {
            properties: properties.into_iter().map(observed_property).collect(),
        }))
    }

    async fn ingest_webhook_events(
        &self,
        req: Request<pb::IngestWebhookEventsRequest>,
    ) -> Result<Response<pb::IngestWebhookEventsResponse>, Status> {
        // Webhooks span every portal: only a portfolio-wide caller (the gateway) may hand them in.
        Caller::from_metadata(req.metadata())?.require_portfolio(Role::Operator)?;
        let events = req.into_inner().events;
        let done = self.deals.ingest(&events).await.map_err(internal)?;
        Ok(Response::new(pb::IngestWebhookEventsResponse {
            accepted: done.accepted,
            duplicates: done.duplicates,
            unknown_portal: done.unknown_portal,
        }))
    }

    async fn get_sync_status(
        &self,
        req: Request<pb::GetSyncStatusRequest>,
    ) -> Result<Response<pb::SyncStatus>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let company_id = req.into_inner().company_id;
        caller.require(Role::Viewer, &company_id)?;
        let mut status = self.deals.status(&company_id).await.map_err(internal)?;
        if let Some(portal) = self.portals.get(&company_id).await.map_err(internal)? {
            status.paused_until_ms = self.budget.paused_until_ms(&portal.portal_id).unwrap_or(0);
        }
        Ok(Response::new(status))
    }

    async fn get_observed_state(
        &self,
        req: Request<pb::GetObservedStateRequest>,
    ) -> Result<Response<pb::ObservedState>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let company_id = req.into_inner().company_id;
        caller.require(Role::Viewer, &company_id)?;
        let portal = self.portal(&company_id).await?;
        let (properties, observed) =
            crate::observed::read(&self.client, &portal.token()).await.map_err(hubspot_failure)?;
        let recorded = self.converger.recorded_ids(&company_id).await.map_err(internal)?;
        Ok(Response::new(pb::ObservedState {
            recorded_pipelines: recorded
                .pipelines
                .into_iter()
                .map(|(pipeline_id, ids)| pb::RecordedPipeline {
                    pipeline_id,
                    hubspot_pipeline_id: ids.hubspot_id,
                    stages: ids.stages.into_iter().collect(),
                })
                .collect(),
            properties: properties.into_iter().filter(|p| !p.archived).map(observed_property).collect(),
            groups: observed
                .groups
                .into_iter()
                .map(|g| pb::ObservedPropertyGroup { name: g.name, label: g.label, display_order: g.display_order })
                .collect(),
            pipelines: observed
                .pipelines
                .into_iter()
                .map(|p| pb::ObservedPipeline {
                    id: p.hubspot_id,
                    label: p.label,
                    display_order: p.display_order,
                    stages: p
                        .stages
                        .into_iter()
                        .map(|s| pb::ObservedStage {
                            id: s.hubspot_id,
                            label: s.label,
                            display_order: s.display_order,
                            probability: s.probability,
                            is_closed: s.is_closed,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn converge(&self, req: Request<pb::ConvergeRequest>) -> Result<Response<pb::ConvergeResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require(Role::Operator, &r.company_id)?;
        let desired: gtm_config::EffectiveConfig = serde_json::from_str(&r.desired_json).map_err(|e| {
            Status::from(PublicError::invalid("desired_json", format!("is not an effective configuration: {e}")))
        })?;
        if desired.company_id != r.company_id {
            return Err(PublicError::invalid("desired_json", "belongs to another company").into());
        }
        let done = match self.converger.converge(&r.company_id, &desired).await {
            Ok(done) => done,
            Err(ConvergeError::HubSpot(e)) => return Err(hubspot_failure(e)),
            Err(other) => return Err(internal(other)),
        };
        tracing::info!(company_id = %r.company_id, revision = r.revision, applied = done.applied, "converge done");
        Ok(Response::new(pb::ConvergeResponse {
            applied: done.applied,
            blocked: done.blocked,
            failed: done.failed,
            plan_text: done.plan_text,
        }))
    }

    async fn get_stages_in_use(
        &self,
        req: Request<pb::GetStagesInUseRequest>,
    ) -> Result<Response<pb::StagesInUse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require(Role::Viewer, &r.company_id)?;
        if r.stages.len() > MAX_STAGES_ASKED {
            return Err(PublicError::invalid("stages", format!("at most {MAX_STAGES_ASKED} per call")).into());
        }
        let portal = self.portal(&r.company_id).await?;
        let asked = r.stages.into_iter().map(|s| (s.pipeline_id, s.stage_id)).collect();
        let used =
            crate::stage_usage::stages_in_use(&self.client, &portal.token(), &asked).await.map_err(hubspot_failure)?;
        Ok(Response::new(pb::StagesInUse {
            stages: used.into_iter().map(|(pipeline_id, stage_id)| pb::StageRef { pipeline_id, stage_id }).collect(),
        }))
    }
}

/// Bounds one usage question (HubSpot allows 100 stages per pipeline).
const MAX_STAGES_ASKED: usize = 500;
