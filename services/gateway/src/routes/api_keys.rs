//! `/v1/api-keys`: admins mint, list and revoke keys within their own scope.
//! A key's secret is in the create response only; GoMark keeps just its hash.

use super::AppState;
use crate::auth::{ApiKeyRecord, Auth};
use crate::dto::{Page, PageQuery};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::problem::{ApiResult, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use gomark_platform::{Caller, ErrorKind, PublicError, Role, Scope};
use gomark_proto::orchestrator::v1::GetCompanyRequest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, revoke))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreate {
    pub name: String,
    #[schema(value_type = RoleDto)]
    pub role: Role,
    /// The company the key is limited to; omit for a portfolio-wide key.
    pub company_id: Option<String>,
    /// Days until the key expires; omit for a key that does not expire.
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// What a key (or token) may do: each role includes the ones before it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleDto {
    Viewer,
    Operator,
    Admin,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub key_prefix: String,
    #[schema(value_type = RoleDto)]
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_id: Option<String>,
    pub created_by: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreated {
    /// The secret, shown this once.
    pub key: String,
    #[serde(flatten)]
    pub api_key: ApiKeyView,
}

fn ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl From<ApiKeyRecord> for ApiKeyView {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            name: r.name,
            key_prefix: r.key_prefix,
            role: r.role,
            company_id: r.company_id,
            created_by: r.created_by,
            created_at: ms(r.created_at),
            expires_at: r.expires_at.map(ms),
            revoked_at: r.revoked_at.map(ms),
        }
    }
}

fn storage_failure(err: gomark_storage::StorageError) -> Problem {
    tracing::error!(error = %err, "api key store failed");
    Problem::from(PublicError::internal())
}

/// Finds a key the caller may manage; others' keys are simply not found.
async fn managed_key(s: &AppState, caller: &Caller, id: &str) -> ApiResult<ApiKeyRecord> {
    caller.require_role(Role::Admin)?;
    let record = s.auth.keys.get(id).await.map_err(storage_failure)?;
    match record {
        Some(r) if caller.scope == Scope::Portfolio || r.company_id.as_deref() == caller.scope.company() => Ok(r),
        _ => Err(PublicError::not_found(format!("API key {id}")).into()),
    }
}

/// Mints a key (admins; a company admin only for its own company). The secret is in this
/// response only.
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "createApiKey", tag = "api-keys", request_body = ApiKeyCreate,
    responses((status = 201, description = "Created; `key` is shown this once", body = ApiKeyCreated), (status = 404, description = "The company does not exist")))]
async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<ApiKeyCreate>,
) -> ApiResult<impl IntoResponse> {
    // Scope first, as everywhere: another company is not found, whatever the role.
    // A company admin mints keys for its own company only, never wider ones.
    let company_id = match (&caller.scope, body.company_id.filter(|c| !c.is_empty())) {
        (Scope::Company(own), None) => Some(own.clone()),
        (Scope::Company(own), Some(requested)) if requested != *own => {
            return Err(PublicError::not_found(format!("company {requested}")).into());
        }
        (_, requested) => requested,
    };
    caller.require_role(Role::Admin)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Problem::invalid("name", "must be 1 to 100 characters"));
    }
    if let Some(company) = &company_id {
        s.orchestrator.clone().get_company(caller.request(GetCompanyRequest { company_id: company.clone() })).await?;
    }
    let expires_at = match body.expires_in_days {
        Some(0) | Some(3651..) => return Err(Problem::invalid("expiresInDays", "must be between 1 and 3650")),
        Some(days) => Some(gomark_storage::now_ms() + i64::from(days) * 86_400_000),
        None => None,
    };
    let created = s
        .auth
        .keys
        .create(name, body.role, company_id.as_deref(), expires_at, &caller.actor)
        .await
        .map_err(storage_failure)?;
    tracing::info!(key_id = %created.record.id, role = body.role.as_str(), actor = %caller.actor, "api key created");
    Ok((StatusCode::CREATED, Json(ApiKeyCreated { key: created.key, api_key: created.record.into() })))
}

/// The keys the caller manages, newest first.
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "listApiKeys", tag = "api-keys", params(PageQuery),
    responses((status = 200, description = "A page of the keys the caller manages", body = Page<ApiKeyView>), (status = 403, description = "Needs the admin role")))]
async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<ApiKeyView>>> {
    caller.require_role(Role::Admin)?;
    let size = page.size()?;
    let before = page.after()?;
    // One more than asked tells whether another page follows.
    let mut keys =
        s.auth.keys.list(&caller.scope, before.as_deref(), size as i64 + 1).await.map_err(storage_failure)?;
    let more = keys.len() > size;
    keys.truncate(size);
    let next = match keys.last() {
        Some(last) if more => hex::encode(&last.id),
        _ => String::new(),
    };
    Ok(Json(Page::new(keys.into_iter().map(ApiKeyView::from).collect(), next)))
}

#[utoipa::path(get, path = "/v1/api-keys/{keyId}", operation_id = "getApiKey", tag = "api-keys",
    params(("keyId" = String, Path, description = "Key id")),
    responses((status = 200, description = "The key (never its secret)", body = ApiKeyView), (status = 403, description = "Needs the admin role")))]
async fn read(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<Json<ApiKeyView>> {
    Ok(Json(managed_key(&s, &caller, &key_id).await?.into()))
}

#[utoipa::path(delete, path = "/v1/api-keys/{keyId}", operation_id = "revokeApiKey", tag = "api-keys",
    params(("keyId" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"), (status = 412, description = "The key changed concurrently; read it again")))]
async fn revoke(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let key = managed_key(&s, &caller, &key_id).await?;
    if !s.auth.keys.revoke(&key.id).await.map_err(storage_failure)? && key.revoked_at.is_none() {
        return Err(Problem::new(ErrorKind::Conflict, "the key changed concurrently; read it again"));
    }
    tracing::info!(key_id = %key.id, actor = %caller.actor, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
