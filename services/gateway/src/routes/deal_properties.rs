//! `/v1/companies/{companyId}/deal-properties`: a company's desired HubSpot deal properties.
//!
//! A property is what the latest configuration revision declares for the company. Each
//! write edits the company's overlay in a new revision and rolls it out to the company's
//! portal (`rolloutId` in the answer); `sync.state` is `pending` until that is done. Each
//! property carries an ETag; send it back as `If-Match` to update only what you read.

use super::AppState;
use crate::auth::Auth;
use crate::dto::{OptionDto, Page, PageQuery, PropertyCreateDto, PropertyPatchDto, PropertyView};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gomark_proto::orchestrator::v1 as pb;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, update, archive))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Include archived properties.
    #[serde(default)]
    include_archived: bool,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// The property with its definition's strong ETag.
pub fn with_etag(status: StatusCode, property: pb::DealProperty) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", property.etag)).ok();
    let mut response = (status, Json(PropertyView::from(property))).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// A company's declared deal properties, each with its sync state, by internal name.
#[utoipa::path(get, path = "/v1/companies/{companyId}/deal-properties", operation_id = "listDealProperties", tag = "deal-properties",
    params(("companyId" = String, Path, description = "Company id"), ListQuery),
    responses((status = 200, description = "A page of properties", body = Page<PropertyView>)))]
async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<PropertyView>>> {
    let page = PageQuery { limit: q.limit, cursor: q.cursor };
    // Checked before the call: a bad page costs the orchestrator nothing.
    page.size()?;
    page.after()?;
    let req = pb::ListDealPropertiesRequest { company_id, include_archived: q.include_archived };
    let resp = s.orchestrator.clone().list_deal_properties(caller.request(req)).await?.into_inner();
    let properties = resp.properties.into_iter().map(PropertyView::from).collect();
    Ok(Json(page.page_of(properties, |p: &PropertyView| p.name.as_str())?))
}

/// Declares a deal property: a new revision with the property in the company's overlay
/// (audited), rolled out to the company; `sync.state` is `pending` until the portal has it.
#[utoipa::path(post, path = "/v1/companies/{companyId}/deal-properties", operation_id = "createDealProperty", tag = "deal-properties",
    params(("companyId" = String, Path, description = "Company id"), ("idempotency-key" = Option<String>, Header, description = "Replays the first response for a repeated key")),
    request_body = PropertyCreateDto,
    responses((status = 201, description = "Declared", body = PropertyView, headers(("etag" = String), ("location" = String))), (status = 412, description = "Another revision was created concurrently; retry")))]
async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(company_id): ApiPath<String>,
    ApiJson(body): ApiJson<PropertyCreateDto>,
) -> ApiResult<Response> {
    let req = pb::CreateDealPropertyRequest { company_id: company_id.clone(), spec: Some(body.to_proto()) };
    let property = s.orchestrator.clone().create_deal_property(caller.request(req)).await?.into_inner();
    let location = format!("/v1/companies/{company_id}/deal-properties/{}", body.name);
    let mut response = with_etag(StatusCode::CREATED, property);
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[utoipa::path(get, path = "/v1/companies/{companyId}/deal-properties/{name}", operation_id = "getDealProperty", tag = "deal-properties",
    params(("companyId" = String, Path, description = "Company id"), ("name" = String, Path, description = "Internal name")),
    responses((status = 200, description = "The property", body = PropertyView, headers(("etag" = String)))))]
async fn read(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let property = s
        .orchestrator
        .clone()
        .get_deal_property(caller.request(pb::GetDealPropertyRequest { company_id, name }))
        .await?
        .into_inner();
    Ok(with_etag(StatusCode::OK, property))
}

fn if_match(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.trim_start_matches("W/").trim_matches('"');
    if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Problem::invalid("If-Match", "must be an ETag this API returned"));
    }
    Ok(Some(tag.to_owned()))
}

/// Changes a property (partial). A rename is a label change: internal names are immutable.
#[utoipa::path(patch, path = "/v1/companies/{companyId}/deal-properties/{name}", operation_id = "updateDealProperty", tag = "deal-properties",
    params(("companyId" = String, Path, description = "Company id"), ("name" = String, Path, description = "Internal name"),
        ("if-match" = Option<String>, Header, description = "The ETag read; the update applies only if it is still current")),
    request_body = PropertyPatchDto,
    responses((status = 200, description = "Updated", body = PropertyView, headers(("etag" = String)))))]
async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PropertyPatchDto>,
) -> ApiResult<Response> {
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(Problem::invalid(
            "name",
            "HubSpot internal names are immutable; change the label instead, or create a new property",
        ));
    }
    let req = pb::UpdateDealPropertyRequest {
        company_id,
        name,
        label: body.label,
        r#type: body.kind,
        field_type: body.field_type,
        group_name: body.group_name,
        description: body.description,
        replace_options: body.options.is_some(),
        options: body.options.unwrap_or_default().iter().map(OptionDto::to_proto).collect(),
        if_match: if_match(&headers)?,
    };
    let property = s.orchestrator.clone().update_deal_property(caller.request(req)).await?.into_inner();
    Ok(with_etag(StatusCode::OK, property))
}

/// Removes a property from the company's configuration; the rollout archives it in the
/// portal (HubSpot keeps it 90 days in its recycle bin).
#[utoipa::path(delete, path = "/v1/companies/{companyId}/deal-properties/{name}", operation_id = "archiveDealProperty", tag = "deal-properties",
    params(("companyId" = String, Path, description = "Company id"), ("name" = String, Path, description = "Internal name")),
    responses((status = 204, description = "Archived"), (status = 412, description = "The configuration changed concurrently too often; retry")))]
async fn archive(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((company_id, name)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    s.orchestrator
        .clone()
        .archive_deal_property(caller.request(pb::ArchiveDealPropertyRequest { company_id, name }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
