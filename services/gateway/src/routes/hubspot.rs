//! `/v1/companies/{companyId}/hubspot/…`: what GoMark sees of a company's HubSpot portal.

use super::AppState;
use crate::auth::Auth;
use crate::dto::{OptionDto, rfc3339_opt};
use crate::extract::ApiPath;
use crate::problem::ApiResult;
use axum::Json;
use axum::extract::State;
use gomark_proto::hubspot_sync::v1 as pb;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sync_status)).routes(routes!(observed))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatusView {
    /// `pending`, `running` or `done`: the first full read of the portal's deals.
    backfill_state: String,
    /// Deals read by the backfill so far.
    backfill_deals: u64,
    /// Deals modified up to this instant are known.
    cursor: Option<String>,
    last_sync_at: Option<String>,
    /// Deals waiting to be re-read after a webhook.
    queued_deals: u64,
    last_error: Option<String>,
    /// Set while the portal's daily HubSpot budget is spent: calls resume then.
    paused_until: Option<String>,
    /// The HubSpot API version every call for this portal uses (`v3`, `2026-03`, `2026-09`).
    api_version: String,
    /// `private_app`, `service_key` or `oauth` (never the secret).
    credential_kind: String,
    /// Set when the portal's changes are read from its webhooks journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    journal: Option<JournalStatusView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalStatusView {
    /// When the reader last had nothing left to read; HubSpot keeps 3 days of journal.
    caught_up_at: Option<String>,
    /// Expired offsets recovered with a snapshot.
    recoveries: i64,
    last_error: Option<String>,
    /// The offset may be older than the warning age (default 2 days): it leaves HubSpot's
    /// 3-day window soon unless the reader catches up.
    offset_at_risk: bool,
}

/// Where the company's deal sync stands.
#[utoipa::path(get, path = "/v1/companies/{companyId}/hubspot/sync", operation_id = "getHubspotSync", tag = "hubspot",
    params(("companyId" = String, Path, description = "Company id")),
    responses((status = 200, description = "The sync status", body = SyncStatusView)))]
async fn sync_status(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
) -> ApiResult<Json<SyncStatusView>> {
    let st = s
        .hubspot_sync
        .clone()
        .get_sync_status(caller.request(pb::GetSyncStatusRequest { company_id }))
        .await?
        .into_inner();
    Ok(Json(SyncStatusView {
        backfill_state: st.backfill_state,
        backfill_deals: st.backfill_deals,
        cursor: rfc3339_opt(st.cursor),
        last_sync_at: rfc3339_opt(st.last_sync_at),
        queued_deals: st.queued_deals,
        last_error: (!st.last_error.is_empty()).then_some(st.last_error),
        paused_until: rfc3339_opt(st.paused_until),
        api_version: st.api_version,
        credential_kind: st.credential_kind,
        journal: st.journal.map(|j| JournalStatusView {
            caught_up_at: rfc3339_opt(j.caught_up_at),
            recoveries: j.recoveries,
            last_error: (!j.last_error.is_empty()).then_some(j.last_error),
            offset_at_risk: j.offset_at_risk,
        }),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedPropertyView {
    name: String,
    label: String,
    #[serde(rename = "type")]
    kind: String,
    field_type: String,
    group_name: String,
    description: String,
    options: Vec<OptionDto>,
    /// Defined by HubSpot itself (not managed by GoMark).
    hubspot_defined: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedGroupView {
    name: String,
    label: String,
    display_order: i32,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedStageView {
    id: String,
    label: String,
    display_order: i32,
    /// HubSpot's canonical form, "0.0" to "1.0".
    probability: String,
    is_closed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedPipelineView {
    id: String,
    label: String,
    display_order: i32,
    stages: Vec<ObservedStageView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObservedStateView {
    properties: Vec<ObservedPropertyView>,
    groups: Vec<ObservedGroupView>,
    pipelines: Vec<ObservedPipelineView>,
}

/// What the portal really holds right now, in HubSpot's canonical forms.
#[utoipa::path(get, path = "/v1/companies/{companyId}/hubspot/observed", operation_id = "getHubspotObserved", tag = "hubspot",
    params(("companyId" = String, Path, description = "Company id")),
    responses((status = 200, description = "The portal's deal properties, groups and pipelines", body = ObservedStateView), (status = 422, description = "HubSpot refused the company's token")))]
async fn observed(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
) -> ApiResult<Json<ObservedStateView>> {
    let st = s
        .hubspot_sync
        .clone()
        .get_observed_state(caller.request(pb::GetObservedStateRequest { company_id }))
        .await?
        .into_inner();
    Ok(Json(ObservedStateView {
        properties: st
            .properties
            .into_iter()
            .map(|p| {
                let spec = p.spec.unwrap_or_default();
                ObservedPropertyView {
                    name: spec.name,
                    label: spec.label,
                    kind: spec.r#type,
                    field_type: spec.field_type,
                    group_name: spec.group_name,
                    description: spec.description.unwrap_or_default(),
                    options: spec.options.into_iter().map(OptionDto::from_proto).collect(),
                    hubspot_defined: p.hubspot_defined,
                }
            })
            .collect(),
        groups: st
            .groups
            .into_iter()
            .map(|g| ObservedGroupView { name: g.name, label: g.label, display_order: g.display_order })
            .collect(),
        pipelines: st
            .pipelines
            .into_iter()
            .map(|p| ObservedPipelineView {
                id: p.id,
                label: p.label,
                display_order: p.display_order,
                stages: p
                    .stages
                    .into_iter()
                    .map(|s| ObservedStageView {
                        id: s.id,
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
