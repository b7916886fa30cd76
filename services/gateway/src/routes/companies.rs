//! `/v1/companies`: the portfolio's companies, and each one's audit log.

use super::AppState;
use crate::auth::Auth;
use crate::dto::{AuditEntryView, AuditQuery, CompanyCreate, CompanyView, Page, PageQuery};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::problem::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use gomark_proto::orchestrator::v1 as pb;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read)).routes(routes!(audit))
}

/// Registers a company: its HubSpot portal and token (portfolio admins only). The token is
/// handed to hubspot-sync and never returned by any API.
#[utoipa::path(post, path = "/v1/companies", operation_id = "createCompany", tag = "companies", request_body = CompanyCreate,
    responses((status = 201, description = "Created", body = CompanyView, headers(("location" = String)))))]
async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CompanyCreate>,
) -> ApiResult<impl IntoResponse> {
    let req = pb::CreateCompanyRequest {
        name: body.name,
        hubspot_portal_id: body.hubspot_portal_id,
        hubspot_token: body.hubspot_token,
        hubspot_token_kind: gomark_proto::common::v1::TokenKind::from(body.hubspot_token_kind).into(),
        hubspot_journal: body.hubspot_journal.map(Into::into),
    };
    let company = CompanyView::from(s.orchestrator.clone().create_company(caller.request(req)).await?.into_inner());
    let location = format!("/v1/companies/{}", company.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(company)))
}

/// The companies the caller can see: all of them, or a company-scoped caller's own.
#[utoipa::path(get, path = "/v1/companies", operation_id = "listCompanies", tag = "companies", params(PageQuery),
    responses((status = 200, description = "A page of companies", body = Page<CompanyView>)))]
async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<CompanyView>>> {
    let req = pb::ListCompaniesRequest { page: Some(page.to_proto()?) };
    let resp = s.orchestrator.clone().list_companies(caller.request(req)).await?.into_inner();
    Ok(Json(Page::new(resp.companies.into_iter().map(CompanyView::from).collect(), resp.next_page_token)))
}

#[utoipa::path(get, path = "/v1/companies/{companyId}", operation_id = "getCompany", tag = "companies",
    params(("companyId" = String, Path, description = "Company id")),
    responses((status = 200, description = "The company", body = CompanyView)))]
async fn read(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
) -> ApiResult<Json<CompanyView>> {
    let company =
        s.orchestrator.clone().get_company(caller.request(pb::GetCompanyRequest { company_id })).await?.into_inner();
    Ok(Json(company.into()))
}

/// Who changed what, when, with the resource before and after; newest first.
#[utoipa::path(get, path = "/v1/companies/{companyId}/audit", operation_id = "listCompanyAudit", tag = "audit",
    params(("companyId" = String, Path, description = "Company id"), AuditQuery),
    responses((status = 200, description = "A page of audit entries", body = Page<AuditEntryView>)))]
async fn audit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntryView>>> {
    let req = query.to_proto(company_id)?;
    let resp = s.orchestrator.clone().list_audit_entries(caller.request(req)).await?.into_inner();
    Ok(Json(Page::new(resp.entries.into_iter().map(AuditEntryView::from).collect(), resp.next_page_token)))
}
