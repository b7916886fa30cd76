//! RFC 9457 problem details: every error the REST API returns, mapped through the shared
//! error-code table. Internal details never reach the body.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gomark_platform::{ErrorKind, PublicError};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_BASE: &str = "https://gomark.dev/problems/";

/// One invalid field of a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

/// An RFC 9457 problem document: every error response has this shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = String)]
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds until a retry may succeed; sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{PROBLEM_BASE}{}", kind.slug()),
            title: kind.title(),
            status: kind.http_status(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        PublicError::invalid(field, detail).into()
    }

    /// Names a field as the REST body does where the service's gRPC field differs.
    pub fn renamed_field(mut self, service_name: &str, rest_name: &str) -> Self {
        for error in self.errors.iter_mut().filter(|e| e.field == service_name) {
            error.field = rest_name.to_owned();
        }
        if let Some(rest) = self.detail.strip_prefix(&format!("{service_name}: ")) {
            self.detail = format!("{rest_name}: {rest}");
        }
        self
    }

    /// A status with no row of its own in the table (405, 413, 415).
    pub fn http(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{PROBLEM_BASE}http-{}", status.as_u16()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }
}

impl From<PublicError> for Problem {
    fn from(err: PublicError) -> Self {
        let mut problem = Problem::new(err.kind, err.message.clone());
        // `Retry-After` is whole seconds; round up so a retry is never early.
        problem.retry_after = err.retry_after.map(|d| d.as_millis().div_ceil(1000) as u64);
        if let Some(field) = err.field {
            let detail = err.message.strip_prefix(&format!("{field}: ")).unwrap_or(&err.message).to_owned();
            problem.errors.push(FieldError { field, detail });
        }
        problem
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        if status.code() != tonic::Code::Ok && ErrorKind::from_grpc(status.code()) == ErrorKind::Internal {
            tracing::error!(code = ?status.code(), "service call failed");
        }
        PublicError::from(status).into()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, Json(self)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

pub type ApiResult<T> = Result<T, Problem>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_services_field_error_becomes_the_problems_field_error() {
        // What a service sends: the field in a google.rpc.BadRequest detail.
        let status: tonic::Status = PublicError::invalid("hubspotPortalId", "must be the portal's numeric id").into();
        let problem = Problem::from(status);
        assert_eq!(problem.status, 400);
        assert_eq!(problem.errors.len(), 1);
        assert_eq!(problem.errors[0].field, "hubspotPortalId");
        assert_eq!(problem.errors[0].detail, "must be the portal's numeric id");
    }

    #[test]
    fn a_services_retry_delay_becomes_retry_after_rounded_up() {
        let status: tonic::Status =
            PublicError::new(ErrorKind::RateLimited, "slow down").with_retry_after(Duration::from_millis(1_200)).into();
        let problem = Problem::from(status);
        assert_eq!((problem.status, problem.retry_after), (429, Some(2)));
        let response = problem.into_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("2"));
    }

    #[test]
    fn an_internal_status_shows_neither_its_text_nor_its_details() {
        let status: tonic::Status = PublicError {
            kind: ErrorKind::Internal,
            message: "pool timed out on 10.0.0.3".into(),
            field: Some("secret_column".into()),
            retry_after: None,
        }
        .into();
        let problem = Problem::from(status);
        assert_eq!((problem.status, problem.detail.as_str()), (500, "internal error"));
        assert!(problem.errors.is_empty());
    }
}
