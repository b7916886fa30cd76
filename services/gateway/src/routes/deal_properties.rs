//! `/v1/companies/{id}/deal-properties`: a company's desired HubSpot deal properties.
//!
//! Writes are accepted as desired state and applied to HubSpot asynchronously: the
//! response shows `sync.state = pending` until hubspot-sync confirms. Each property carries
//! an ETag (its version); send it back as `If-Match` to update only what you read.

use super::AppState;
use crate::auth::Auth;
use crate::dto::{OptionDto, Page, PropertyCreateDto, PropertyPatchDto, PropertyView};
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::{ApiResult, Problem};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use gomark_proto::orchestrator::v1 as pb;
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/companies/{company_id}/deal-properties", get(list).post(create))
        .route("/v1/companies/{company_id}/deal-properties/{name}", get(read).patch(update).delete(archive))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(default)]
    include_archived: bool,
}

/// The property with its version as a strong ETag.
pub fn with_etag(status: StatusCode, property: pb::DealProperty) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", property.version)).ok();
    let mut response = (status, Json(PropertyView::from(property))).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(company_id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<PropertyView>>> {
    let req = pb::ListDealPropertiesRequest { company_id, include_archived: q.include_archived };
    let resp = s.orchestrator.clone().list_deal_properties(caller.request(req)).await?.into_inner();
    Ok(Json(Page::new(resp.properties.into_iter().map(PropertyView::from).collect(), String::new())))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(company_id): Path<String>,
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

async fn read(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((company_id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let property = s
        .orchestrator
        .clone()
        .get_deal_property(caller.request(pb::GetDealPropertyRequest { company_id, name }))
        .await?
        .into_inner();
    Ok(with_etag(StatusCode::OK, property))
}

fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| Problem::invalid("If-Match", "must be an ETag this API returned"))
}

async fn update(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((company_id, name)): Path<(String, String)>,
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
        expected_version: if_match(&headers)?,
    };
    let property = s.orchestrator.clone().update_deal_property(caller.request(req)).await?.into_inner();
    Ok(with_etag(StatusCode::OK, property))
}

async fn archive(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path((company_id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.orchestrator
        .clone()
        .archive_deal_property(caller.request(pb::ArchiveDealPropertyRequest { company_id, name }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
