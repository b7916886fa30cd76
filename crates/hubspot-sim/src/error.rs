//! HubSpot-shaped error bodies (`{"status":"error","message","correlationId","category",...}`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Which rate-limit policy rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitPolicy {
    /// The rolling burst window (`TEN_SECONDLY_ROLLING`).
    TenSecondlyRolling,
    /// The daily budget (`DAILY`).
    Daily,
    /// The CRM search per-second budget (`SECONDLY`).
    Secondly,
}

impl RateLimitPolicy {
    /// HubSpot's `policyName` for this policy.
    pub fn policy_name(self) -> &'static str {
        match self {
            Self::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            Self::Daily => "DAILY",
            Self::Secondly => "SECONDLY",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::TenSecondlyRolling => "You have reached your ten_secondly_rolling limit.",
            Self::Daily => "You have reached your daily limit.",
            Self::Secondly => "You have reached your secondly limit.",
        }
    }
}

/// An API error that renders as a HubSpot error body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub category: &'static str,
    pub sub_category: Option<&'static str>,
    pub message: String,
    /// Optional `context` map (`{key: [values]}`), e.g. `{"name": ["foo"]}`.
    pub context: Option<Box<(&'static str, Vec<String>)>>,
    /// Optional `errors` list (details, e.g. the validation rule that refused a write).
    pub errors: Vec<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, category: &'static str, message: impl Into<String>) -> Self {
        Self { status, category, sub_category: None, message: message.into(), context: None, errors: Vec::new() }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "OBJECT_ALREADY_EXISTS", message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication \
             and you can find more details at \
             https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        )
    }

    /// 401 for an issued access token past its expiry.
    pub fn expired_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "EXPIRED_AUTHENTICATION",
            "The OAuth token used to make this call expired. Refresh it and retry.",
        )
    }

    /// A generic error for an arbitrary status (used by injection and the
    /// catch-all that normalises framework-generated errors).
    pub fn for_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, category_for_status(status), message)
    }

    pub fn with_sub_category(mut self, sub: &'static str) -> Self {
        self.sub_category = Some(sub);
        self
    }

    pub fn with_context(mut self, key: &'static str, values: Vec<String>) -> Self {
        self.context = Some(Box::new((key, values)));
        self
    }

    pub fn with_errors(mut self, errors: Vec<Value>) -> Self {
        self.errors = errors;
        self
    }

    /// The standard top-level error body.
    pub fn body(&self) -> Value {
        let mut map = Map::new();
        map.insert("status".into(), json!("error"));
        map.insert("message".into(), json!(self.message));
        map.insert("correlationId".into(), json!(correlation_id()));
        map.insert("category".into(), json!(self.category));
        if let Some(sub) = &self.sub_category {
            map.insert("subCategory".into(), json!(sub));
        }
        if let Some(context) = &self.context {
            let (key, values) = context.as_ref();
            map.insert("context".into(), json!({ *key: values }));
        }
        if !self.errors.is_empty() {
            map.insert("errors".into(), Value::Array(self.errors.clone()));
        }
        Value::Object(map)
    }

    /// The `StandardError` shape used inside batch (207) responses.
    pub fn batch_entry(&self) -> Value {
        let mut value = self.body();
        if let Value::Object(map) = &mut value {
            map.remove("correlationId");
            map.entry("errors").or_insert_with(|| json!([]));
        }
        value
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// A 429 response body exactly like HubSpot's.
pub(crate) fn rate_limit_response(policy: RateLimitPolicy, portal_id: u64) -> Response {
    let body = json!({
        "status": "error",
        "message": policy.message(),
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy.policy_name(),
        "groupName": format!("hubspot-sim:portal-{portal_id}"),
        "category": "RATE_LIMITS",
    });
    (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
}

/// HubSpot category for a bare HTTP status.
pub(crate) fn category_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 415 | 422 => "VALIDATION_ERROR",
        401 => "INVALID_AUTHENTICATION",
        403 => "MISSING_SCOPES",
        404 => "OBJECT_NOT_FOUND",
        409 => "OBJECT_ALREADY_EXISTS",
        423 => "LOCKED",
        429 => "RATE_LIMITS",
        _ => "INTERNAL_ERROR",
    }
}

fn correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_hubspot_shape() {
        let err = ApiError::conflict("exists")
            .with_sub_category("Properties.PROPERTY_WITH_NAME_EXISTS")
            .with_context("name", vec!["x".into()]);
        let body = err.body();
        assert_eq!(body["status"], "error");
        assert_eq!(body["category"], "OBJECT_ALREADY_EXISTS");
        assert_eq!(body["subCategory"], "Properties.PROPERTY_WITH_NAME_EXISTS");
        assert_eq!(body["context"]["name"][0], "x");
        let id = body["correlationId"].as_str().expect("correlationId");
        assert!(uuid::Uuid::parse_str(id).is_ok());
        assert!(ApiError::validation("x").body().get("subCategory").is_none());
    }
}
