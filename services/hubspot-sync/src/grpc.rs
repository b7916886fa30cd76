//! hubspot-sync's gRPC face.

use crate::budget::PortalBudget;
use crate::converge::{Applied, ConvergeError, Converger, Interrupted};
use crate::credentials::{ClientCredentials, Credential};
use crate::deals::DealSync;
use crate::journal::JournalReader;
use crate::portals::{PortalError, Portals};
use gomark_platform::token::check_bearer_token;
use gomark_platform::{Caller, ErrorKind, PublicError, Role};
use gomark_proto::config::v1::{DealProperty, FailedAction, PropertyOption};
use gomark_proto::hubspot_sync::v1 as pb;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_server::HubspotSyncService;
use gomark_proto::time::{timestamp, timestamp_opt};
use hubspot_client::HubSpotClient;
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct HubspotSyncGrpc {
    portals: Portals,
    client: HubSpotClient,
    deals: DealSync,
    budget: std::sync::Arc<PortalBudget>,
    converger: Converger,
    sources: Option<crate::sources::Sources>,
    journal: JournalReader,
}

impl HubspotSyncGrpc {
    pub fn new(
        portals: Portals,
        client: HubSpotClient,
        deals: DealSync,
        budget: std::sync::Arc<PortalBudget>,
        converger: Converger,
        journal: JournalReader,
    ) -> Self {
        Self { portals, client, deals, budget, converger, sources: None, journal }
    }

    /// Keeps who changed each portal (from events), so plans and drift can say.
    pub fn with_sources(mut self, sources: crate::sources::Sources) -> Self {
        self.sources = Some(sources);
        self
    }
}

/// The property names an action touches, for looking up who changed them.
fn touched(actions: &[gtm_config::Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match &a.target {
            gtm_config::Target::DealProperty(name) | gtm_config::Target::ValidationRule(name, _) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// A property as HubSpot holds it, in the contract's terms.
fn observed_property(p: hubspot_client::Property) -> pb::ObservedDealProperty {
    pb::ObservedDealProperty {
        hubspot_defined: p.hubspot_defined.unwrap_or(false),
        archived: p.archived,
        spec: Some(DealProperty {
            name: p.name,
            label: p.label,
            r#type: p.r#type,
            field_type: p.field_type,
            group_name: p.group_name,
            description: Some(p.description),
            options: p
                .options
                .into_iter()
                .map(|o| PropertyOption {
                    label: o.label,
                    value: o.value,
                    display_order: o.display_order.map(|d| d as i32),
                    hidden: o.hidden,
                })
                .collect(),
            has_unique_value: p.has_unique_value,
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
            let limited =
                PublicError::new(ErrorKind::RateLimited, "the portal's HubSpot rate limit is exhausted, retry later");
            // HubSpot's `Retry-After`, when it sent one, becomes the caller's RetryInfo.
            match err {
                hubspot_client::Error::RateLimited { retry_after: Some(delay), .. } => limited.with_retry_after(delay),
                _ => limited,
            }
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
                let expires_in = oauth.expires_in.as_ref().map(gomark_proto::time::std_duration).unwrap_or_default();
                if oauth.refresh_token.is_empty() || expires_in.is_zero() {
                    return Err(PublicError::invalid("oauth", "needs a refresh token and a positive expiry").into());
                }
                check_bearer_token("oauth.access_token", &oauth.access_token)?;
                check_bearer_token("oauth.refresh_token", &oauth.refresh_token)?;
                Credential::OAuth {
                    access_token: oauth.access_token,
                    refresh_token: oauth.refresh_token,
                    expires_at_ms: gomark_storage::now_ms()
                        .saturating_add(i64::try_from(expires_in.as_millis()).unwrap_or(i64::MAX)),
                }
            }
            _ => {
                check_bearer_token("token", &r.token)?;
                use gomark_proto::common::v1::TokenKind;
                match TokenKind::try_from(r.token_kind) {
                    Ok(TokenKind::ServiceKey) => Credential::ServiceKey { token: r.token },
                    Ok(TokenKind::Unspecified | TokenKind::PrivateApp) => Credential::PrivateApp { token: r.token },
                    Err(_) => return Err(PublicError::invalid("token_kind", "is not a known kind").into()),
                }
            }
        };
        let journal = match r.journal {
            Some(cc) if !(cc.client_id.is_empty() && cc.client_secret.is_empty()) => {
                let id = cc.client_id.trim();
                if id.is_empty() || id.len() > 200 || !id.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(PublicError::invalid("journal.client_id", "must be the app's client id").into());
                }
                check_bearer_token("journal.client_secret", &cc.client_secret)?;
                Some(ClientCredentials { client_id: id.to_owned(), client_secret: cc.client_secret })
            }
            _ => None,
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
        if journal.is_some() {
            self.portals.set_journal_credential(&r.company_id, journal.as_ref()).await.map_err(internal)?;
        }
        tracing::info!(company_id = %r.company_id, portal_id = %r.portal_id, kind = credential.kind(), journal = journal.is_some(), "portal registered");
        Ok(Response::new(pb::RegisterPortalResponse {}))
    }

    async fn ingest_webhook_events(
        &self,
        req: Request<pb::IngestWebhookEventsRequest>,
    ) -> Result<Response<pb::IngestWebhookEventsResponse>, Status> {
        // Webhooks span every portal: only a portfolio-wide caller (the gateway) may hand them in.
        Caller::from_metadata(req.metadata())?.require_portfolio(Role::Operator)?;
        let events = req.into_inner().events;
        let done = self.deals.ingest(events).await.map_err(internal)?;
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
            status.paused_until = self.budget.paused_until_ms(&portal.portal_id).map(timestamp);
            status.api_version = portal.api_version.as_str().to_owned();
            status.credential_kind = portal.credential.kind().to_owned();
            if portal.journal.is_some() {
                let j = self.journal.status(&company_id).await.map_err(internal)?;
                status.journal = Some(pb::JournalStatus {
                    caught_up_at: timestamp_opt(j.caught_up_at_ms),
                    recoveries: j.recoveries,
                    last_error: j.last_error,
                    offset_at_risk: j.offset_at_risk,
                });
            }
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

    async fn plan_portal(&self, req: Request<pb::PlanPortalRequest>) -> Result<Response<pb::PortalPlan>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require_company(Role::Viewer, &r.company_id)?;
        let desired = desired(&r.company_id, r.desired)?;
        let plan = self.converger.plan(&r.company_id, &desired).await.map_err(converge_failure)?;
        let last_change = match &self.sources {
            Some(sources) if !plan.actions.is_empty() => {
                sources.last_change(&r.company_id, &touched(&plan.actions)).await.map_err(internal)?
            }
            _ => None,
        };
        Ok(Response::new(pb::PortalPlan {
            actions: gtm_config::wire::plan_to_proto(&plan),
            text: plan.to_string(),
            last_change,
        }))
    }

    async fn apply_portal(
        &self,
        req: Request<pb::ApplyPortalRequest>,
    ) -> Result<Response<pb::ApplyPortalResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let deadline = grpc_deadline(req.metadata());
        let r = req.into_inner();
        caller.require_company(Role::Operator, &r.company_id)?;
        let desired = desired(&r.company_id, r.desired)?;
        let approved: Option<BTreeSet<String>> = r.saved_plan.then(|| r.approved_action_ids.into_iter().collect());
        let done = self
            .converger
            .apply(&r.company_id, &desired, approved.as_ref(), deadline)
            .await
            .map_err(converge_failure)?;
        Ok(Response::new(applied_proto(done)))
    }

    async fn import_portal(
        &self,
        req: Request<pb::ImportPortalRequest>,
    ) -> Result<Response<pb::ImportedPortal>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let company_id = req.into_inner().company_id;
        caller.require_company(Role::Viewer, &company_id)?;
        let portal = self.portal(&company_id).await?;
        let (_, observed) = crate::observed::read(&self.client, &portal.token()).await.map_err(hubspot_failure)?;
        let imported = gtm_config::import(&observed, "imported", &company_id);
        let overlay = imported.overlay;
        Ok(Response::new(pb::ImportedPortal {
            property_groups: overlay.property_groups.iter().map(gtm_config::wire::group_to_proto).collect(),
            deal_properties: overlay.deal_properties.iter().map(gtm_config::wire::property_to_proto).collect(),
            pipelines: overlay.pipelines.iter().map(gtm_config::wire::pipeline_to_proto).collect(),
            skipped: imported.skipped,
        }))
    }
}

/// The desired configuration a request carries, checked to be the company's own.
fn desired(
    company_id: &str,
    desired: Option<gomark_proto::config::v1::HubSpotConfig>,
) -> Result<gtm_config::EffectiveConfig, Status> {
    let desired = desired.ok_or_else(|| Status::from(PublicError::invalid("desired", "is required")))?;
    if desired.company_id != company_id {
        return Err(PublicError::invalid("desired.company_id", "belongs to another company").into());
    }
    gtm_config::wire::effective_from_hubspot(desired)
        .map_err(|e| PublicError::invalid(format!("desired.{}", e.field), e.message).into())
}

fn converge_failure(err: ConvergeError) -> Status {
    match err {
        ConvergeError::HubSpot(e) => hubspot_failure(e),
        ConvergeError::NoPortal(company) => {
            PublicError::not_found(format!("HubSpot portal of company {company}")).into()
        }
        ConvergeError::Stale(why) => {
            PublicError::new(ErrorKind::FailedPrecondition, format!("plan is stale: {why}")).into()
        }
        other => internal(other),
    }
}

/// When the caller gives up on this call, from its `grpc-timeout` header (gRPC's wire
/// format: an integer and a unit, H M S m u n).
fn grpc_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<tokio::time::Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    tokio::time::Instant::now().checked_add(timeout)
}

/// How long to wait for a portal's budget when HubSpot did not say: its burst window.
const BUDGET_WINDOW_MS: i64 = 10_000;

fn applied_proto(done: Applied) -> pb::ApplyPortalResponse {
    use gtm_config::wire::action_to_proto;
    let now = gomark_storage::now_ms();
    // retry_at tells the caller when to come back without counting the stop as a failure:
    // set when waiting for budget, or when time ran out after progress (0 = unset).
    let waiting_for_budget = matches!(done.interrupted, Some(Interrupted::Budget(_)));
    let (interrupted, retry_at_ms) = match done.interrupted {
        None => (String::new(), 0),
        Some(Interrupted::Budget(wait)) => {
            let wait = wait.map_or(BUDGET_WINDOW_MS, |w| i64::try_from(w.as_millis()).unwrap_or(i64::MAX / 2));
            ("waiting for the portal's HubSpot rate limit".to_owned(), now.saturating_add(wait.max(1)))
        }
        Some(Interrupted::OutOfTime { progress }) => {
            let resume = if progress { now } else { 0 };
            ("the call's time ran out with writes left; resuming".to_owned(), resume)
        }
        Some(Interrupted::Unavailable) => ("HubSpot is unavailable".to_owned(), 0),
    };
    pb::ApplyPortalResponse {
        performed: done.performed.iter().map(action_to_proto).collect(),
        blocked: done.blocked.iter().map(action_to_proto).collect(),
        failed: done
            .failed
            .iter()
            .map(|(action, reason)| FailedAction { action: Some(action_to_proto(action)), reason: reason.clone() })
            .collect(),
        interrupted,
        retry_at: timestamp_opt(retry_at_ms),
        waiting_for_budget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspots_retry_after_becomes_the_callers_retry_info() {
        let limited = |retry_after| {
            PublicError::from(hubspot_failure(hubspot_client::Error::RateLimited {
                policy: hubspot_client::RateLimitPolicy::TenSecondlyRolling,
                retry_after,
            }))
        };
        let told = limited(Some(Duration::from_secs(7)));
        assert_eq!((told.kind, told.retry_after), (ErrorKind::RateLimited, Some(Duration::from_secs(7))));
        assert_eq!(limited(None).retry_after, None, "no delay is invented");
    }

    fn deadline_in(value: &str) -> Option<Duration> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().expect("ascii"));
        grpc_deadline(&metadata).map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    #[tokio::test]
    async fn the_callers_deadline_is_read_from_grpc_timeout() {
        let ten = deadline_in("10000m").expect("milliseconds");
        assert!(ten > Duration::from_millis(9_900) && ten <= Duration::from_secs(10), "{ten:?}");
        assert!(deadline_in("2S").is_some_and(|d| d <= Duration::from_secs(2)));
        assert!(deadline_in("1H").is_some_and(|d| d > Duration::from_secs(3_500)));
        assert_eq!(deadline_in("10x"), None, "unknown unit");
        assert_eq!(deadline_in("m"), None, "no amount");
        assert!(grpc_deadline(&tonic::metadata::MetadataMap::new()).is_none());
    }
}
