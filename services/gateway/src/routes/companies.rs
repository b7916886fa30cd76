//! `/v1/companies`: the portfolio's companies, and each one's audit log.

use super::AppState;
use crate::auth::Auth;
use crate::dto::{AuditEntryView, CompanyCreate, CompanyView, Page, PageQuery};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiResult;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Json, Router, routing::get};
use gomark_proto::orchestrator::v1 as pb;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/companies", get(list).post(create))
        .route("/v1/companies/{company_id}", get(read))
        .route("/v1/companies/{company_id}/audit", get(audit))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CompanyCreate>,
) -> ApiResult<impl IntoResponse> {
    let req = pb::CreateCompanyRequest {
        name: body.name,
        hubspot_portal_id: body.hubspot_portal_id,
        hubspot_token: body.hubspot_token,
    };
    let company = CompanyView::from(s.orchestrator.clone().create_company(caller.request(req)).await?.into_inner());
    let location = format!("/v1/companies/{}", company.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(company)))
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<CompanyView>>> {
    let resp = s
        .orchestrator
        .clone()
        .list_companies(caller.request(pb::ListCompaniesRequest { page: Some(page.to_proto()) }))
        .await?
        .into_inner();
    Ok(Json(Page::new(resp.companies.into_iter().map(CompanyView::from).collect(), resp.next_page_token)))
}

async fn read(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(company_id): Path<String>,
) -> ApiResult<Json<CompanyView>> {
    let company =
        s.orchestrator.clone().get_company(caller.request(pb::GetCompanyRequest { company_id })).await?.into_inner();
    Ok(Json(company.into()))
}

async fn audit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(company_id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<AuditEntryView>>> {
    let req = pb::ListAuditEntriesRequest { company_id, page: Some(page.to_proto()) };
    let resp = s.orchestrator.clone().list_audit_entries(caller.request(req)).await?.into_inner();
    Ok(Json(Page::new(resp.entries.into_iter().map(AuditEntryView::from).collect(), resp.next_page_token)))
}
