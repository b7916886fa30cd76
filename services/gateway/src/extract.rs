//! Request extractors whose rejections are problem documents.

use crate::problem::Problem;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// `axum::Json`, but a malformed body answers 400 (or 413/415) with a problem naming what
/// is wrong, in the caller's terms. Every request body of this API is a JSON object:
/// serde would otherwise take a struct from an array of its fields in order.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) if !value.is_object() => {
                Err(Problem::http(StatusCode::BAD_REQUEST, "the request body must be a JSON object"))
            }
            Ok(axum::Json(value)) => serde_json::from_value(value)
                .map(ApiJson)
                .map_err(|e| Problem::http(StatusCode::BAD_REQUEST, format!("invalid request body: {e}"))),
            Err(JsonRejection::JsonDataError(e)) => {
                Err(Problem::http(StatusCode::BAD_REQUEST, format!("invalid request body: {}", e.body_text())))
            }
            Err(JsonRejection::JsonSyntaxError(e)) => {
                Err(Problem::http(StatusCode::BAD_REQUEST, format!("malformed JSON: {}", e.body_text())))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Problem::http(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Problem::http(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large"))
            }
            Err(e) => {
                Err(Problem::http(StatusCode::BAD_REQUEST, format!("unreadable request body: {}", e.body_text())))
            }
        }
    }
}

/// `axum::extract::Query`, with a problem for a bad query string.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| Problem::http(StatusCode::BAD_REQUEST, format!("invalid query string: {}", e.body_text())))
    }
}

/// `axum::extract::Path`, with a problem for a path that cannot be decoded.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| Problem::http(StatusCode::BAD_REQUEST, format!("invalid path: {}", e.body_text())))
    }
}
