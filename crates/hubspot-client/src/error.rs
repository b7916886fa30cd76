//! Error type of the client and HubSpot error-body parsing (CONTRACT.md §2).

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use crate::rate_limit::{self, RateLimitInfo, RateLimitPolicy};
use crate::retry;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Message used when HubSpot's error body is missing or not JSON.
pub(crate) const UNEXPECTED_RESPONSE: &str = "unexpected response";

/// Everything a HubSpot call can fail with. No variant ever contains the access token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// HubSpot answered with a non-success status (other than 429).
    #[error("HubSpot API error {status}: {message}{}", api_details(.category, .sub_category, .correlation_id))]
    Api {
        /// HTTP status code.
        status: u16,
        /// `category`, e.g. `OBJECT_ALREADY_EXISTS`, `VALIDATION_ERROR`.
        category: Option<String>,
        /// `subCategory` (top level, else the first `errors[].subCategory`),
        /// e.g. `Properties.PROPERTY_WITH_NAME_EXISTS`.
        sub_category: Option<String>,
        /// `message`, or `"unexpected response"` when the body is not a JSON error.
        message: String,
        /// `correlationId`, for HubSpot support.
        correlation_id: Option<String>,
    },
    /// HubSpot refused the write with 400 `VALIDATION_ERROR`: the input breaks a rule (from
    /// API 2026-09, a portal admin's rule, e.g. a conditional-required property). Never
    /// retried: the same write fails the same way until the input or the rule changes.
    #[error("HubSpot refused the write (400 VALIDATION_ERROR): {0}")]
    Validation(Refusal),
    /// HubSpot answered 429 (after retries, where the policy allows them).
    #[error("HubSpot {policy} rate limit reached{}", retry_after_details(.retry_after))]
    RateLimited {
        /// Which limit was hit.
        policy: RateLimitPolicy,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// An attempt exceeded [`crate::ClientConfig::timeout`].
    #[error("HubSpot request timed out")]
    Timeout,
    /// The request could not be sent or the response not received (connection refused, reset…).
    #[error("HubSpot transport error: {0}")]
    Transport(String),
    /// A success response whose body did not match the expected shape.
    #[error("could not decode HubSpot response: {0}")]
    Decode(String),
    /// A request body could not be serialized.
    #[error("could not encode HubSpot request: {0}")]
    Encode(String),
    /// Invalid client configuration or input (bad base URL, token unusable as a header, …).
    #[error("invalid HubSpot client configuration: {0}")]
    Config(String),
    /// A request refused locally, before any HTTP call, because HubSpot would reject it (search
    /// over its filter caps, a page size above the maximum, …).
    #[error("invalid HubSpot request: {0}")]
    InvalidRequest(String),
}

/// What a `VALIDATION_ERROR` says refused a write, sanitised: names and codes only (at
/// most 100 characters each, from a safe alphabet), so it can go into errors, audits and
/// logs without carrying record values or secrets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refusal {
    /// The property the rule is on, when HubSpot names it.
    pub property: Option<String>,
    /// The rule's type when HubSpot names it (`CONDITIONALLY_REQUIRED`, `MAX_LENGTH`), else
    /// the error code (`MISSING_CONDITIONAL_REQUIRED_PROPERTY`).
    pub rule: Option<String>,
    /// `subCategory`, when given.
    pub sub_category: Option<String>,
    /// `correlationId`, for HubSpot support.
    pub correlation_id: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.rule, &self.property) {
            (Some(rule), Some(property)) => write!(f, "rule {rule} on property {property}")?,
            (Some(rule), None) => write!(f, "rule {rule}")?,
            (None, Some(property)) => write!(f, "a rule on property {property}")?,
            (None, None) => f.write_str("a validation rule")?,
        }
        if let Some(s) = &self.sub_category {
            write!(f, " (subCategory {s})")?;
        }
        if let Some(c) = &self.correlation_id {
            write!(f, " (correlationId {c})")?;
        }
        Ok(())
    }
}

/// Keeps a name or code HubSpot sent only if it looks like one: no values, no free text.
fn sanitise_name(s: &str) -> Option<String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 100
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    ok.then(|| s.to_owned())
}

impl Refusal {
    /// Reads HubSpot's error body: the rule from `context.ruleType` (in `errors[]` or at the
    /// top level), else `errors[].code`, else the top-level `subCategory`; the property from
    /// `context.propertyName` (top level or in `errors[]`), else `errors[].in`.
    fn from_body(json: &Value, secrets: &[&str]) -> Self {
        let sanitise_name = |s: &str| {
            // Defence in depth, as for every error: a server echo of a secret is dropped.
            sanitise_name(s).filter(|n| !secrets.iter().any(|secret| !secret.is_empty() && n.contains(secret)))
        };
        let errors: &[Value] = json.get("errors").and_then(Value::as_array).map_or(&[], Vec::as_slice);
        let context_property = |v: &Value| {
            let context = v.get("context")?;
            ["propertyName", "property", "propertyNames"].iter().find_map(|k| {
                let field = context.get(*k)?;
                field.as_str().or_else(|| field.as_array()?.first()?.as_str()).and_then(sanitise_name)
            })
        };
        let context_rule = |v: &Value| {
            let field = v.get("context")?.get("ruleType")?;
            field.as_str().or_else(|| field.as_array()?.first()?.as_str()).and_then(sanitise_name)
        };
        let rule = errors
            .iter()
            .find_map(context_rule)
            .or_else(|| context_rule(json))
            .or_else(|| errors.iter().find_map(|e| e.get("code").and_then(Value::as_str).and_then(sanitise_name)))
            .or_else(|| json.get("subCategory").and_then(Value::as_str).and_then(sanitise_name));
        let property = context_property(json)
            .or_else(|| errors.iter().find_map(context_property))
            .or_else(|| errors.iter().find_map(|e| e.get("in").and_then(Value::as_str).and_then(sanitise_name)));
        let sub_category = json
            .get("subCategory")
            .and_then(Value::as_str)
            .or_else(|| errors.iter().find_map(|e| e.get("subCategory").and_then(Value::as_str)))
            .and_then(sanitise_name);
        let correlation_id = json.get("correlationId").and_then(Value::as_str).and_then(sanitise_name);
        Refusal { property, rule, sub_category, correlation_id }
    }
}

impl Error {
    /// The rule that refused the write, for a `VALIDATION_ERROR`.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Error::Validation(r) => Some(r),
            _ => None,
        }
    }

    /// Whether retrying the same request later may succeed: retryable statuses (500, 502–504,
    /// 521–526, 423, 477), non-daily 429s, timeouts and transport errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => retry::is_retryable_status(*status),
            Error::Validation(_) => false,
            Error::RateLimited { policy, .. } => *policy != RateLimitPolicy::Daily,
            Error::Timeout | Error::Transport(_) => true,
            Error::Decode(_) | Error::Encode(_) | Error::Config(_) | Error::InvalidRequest(_) => false,
        }
    }

    /// The HTTP status behind the error, if HubSpot answered (429 for [`Error::RateLimited`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Validation(_) => Some(400),
            Error::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// Builds the error for a non-success response.
    pub(crate) fn from_response(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        rate_limit: Option<&RateLimitInfo>,
        secrets: &[&str],
    ) -> Self {
        let json = serde_json::from_slice::<Value>(body).ok().filter(Value::is_object);
        if status == 429 {
            return Error::RateLimited {
                policy: RateLimitPolicy::detect(json.as_ref(), rate_limit),
                retry_after: rate_limit::retry_after(headers),
            };
        }
        if let Some(j) = json
            .as_ref()
            .filter(|j| status == 400 && j.get("category").and_then(Value::as_str) == Some("VALIDATION_ERROR"))
        {
            return Error::Validation(Refusal::from_body(j, secrets));
        }
        let text =
            |name: &str| json.as_ref().and_then(|j| j.get(name)).and_then(Value::as_str).map(|s| redact(s, secrets));
        let sub_category = text("subCategory").or_else(|| {
            json.as_ref()
                .and_then(|j| j.get("errors"))
                .and_then(Value::as_array)
                .and_then(|errors| errors.iter().find_map(|e| e.get("subCategory").and_then(Value::as_str)))
                .map(|s| redact(s, secrets))
        });
        Error::Api {
            status,
            category: text("category"),
            sub_category,
            message: text("message").unwrap_or_else(|| UNEXPECTED_RESPONSE.to_owned()),
            correlation_id: text("correlationId"),
        }
    }
}

/// Defence in depth: never let a server echo of the token (or another secret) reach an error.
pub(crate) fn redact(s: &str, secrets: &[&str]) -> String {
    secrets.iter().filter(|secret| !secret.is_empty()).fold(s.to_owned(), |text, secret| text.replace(secret, "***"))
}

fn api_details(category: &Option<String>, sub_category: &Option<String>, correlation_id: &Option<String>) -> String {
    let parts: Vec<String> = [
        category.as_ref().map(|c| format!("category {c}")),
        sub_category.as_ref().map(|c| format!("subCategory {c}")),
        correlation_id.as_ref().map(|c| format!("correlationId {c}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
}

fn retry_after_details(retry_after: &Option<Duration>) -> String {
    retry_after.map(|d| format!(" (retry after {} ms)", d.as_millis())).unwrap_or_default()
}

/// Text of a `reqwest` error and its sources, without the URL.
pub(crate) fn transport_message(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> &'static [&'static str] {
        &["pat-secret-123"]
    }

    #[test]
    fn parses_hubspot_error_body() {
        let body = br#"{"status":"error","message":"Property named 'x' already exists.","correlationId":"0b1c","category":"OBJECT_ALREADY_EXISTS","subCategory":"Properties.PROPERTY_WITH_NAME_EXISTS","context":{"name":["x"]},"errors":[]}"#;
        let err = Error::from_response(409, &HeaderMap::new(), body, None, token());
        assert_eq!(
            err,
            Error::Api {
                status: 409,
                category: Some("OBJECT_ALREADY_EXISTS".into()),
                sub_category: Some("Properties.PROPERTY_WITH_NAME_EXISTS".into()),
                message: "Property named 'x' already exists.".into(),
                correlation_id: Some("0b1c".into()),
            }
        );
        assert!(!err.is_retryable());
        assert_eq!(err.status(), Some(409));
        let text = err.to_string();
        assert!(text.contains("409") && text.contains("PROPERTY_WITH_NAME_EXISTS"), "{text}");
    }

    #[test]
    fn sub_category_from_errors_array() {
        let body = br#"{"message":"bad","errors":[{"message":"m"},{"message":"n","subCategory":"X.Y"}]}"#;
        let err = Error::from_response(400, &HeaderMap::new(), body, None, token());
        assert!(matches!(err, Error::Api { sub_category: Some(ref s), .. } if s == "X.Y"));
    }

    #[test]
    fn validation_errors_name_the_rule_and_are_never_retried() {
        let body = br#"{"status":"error","category":"VALIDATION_ERROR","correlationId":"c-1","message":"closedate is required when dealstage is closedwon; value was pat-secret-123","errors":[{"code":"MISSING_CONDITIONAL_REQUIRED_PROPERTY","message":"x","context":{"propertyName":["closedate"]}}]}"#;
        let err = Error::from_response(400, &HeaderMap::new(), body, None, token());
        let refusal = err.refusal().expect("a refusal");
        assert_eq!(refusal.rule.as_deref(), Some("MISSING_CONDITIONAL_REQUIRED_PROPERTY"));
        assert_eq!(refusal.property.as_deref(), Some("closedate"));
        assert!(!err.is_retryable());
        assert_eq!(err.status(), Some(400));
        let text = err.to_string();
        assert_eq!(
            text,
            "HubSpot refused the write (400 VALIDATION_ERROR): rule MISSING_CONDITIONAL_REQUIRED_PROPERTY on property closedate (correlationId c-1)"
        );
        // Free text (which may hold record values) never makes it in.
        assert!(!text.contains("pat-secret") && !format!("{err:?}").contains("pat-secret"));
        // The rule's type, when HubSpot names it, is the rule; the code stays as subCategory.
        let body = br#"{"category":"VALIDATION_ERROR","subCategory":"MISSING_CONDITIONAL_REQUIRED_PROPERTY","errors":[{"code":"MISSING_CONDITIONAL_REQUIRED_PROPERTY","context":{"propertyName":["closedate"],"ruleType":["CONDITIONALLY_REQUIRED"],"ruleArguments":["dealstage","closedwon"]}}]}"#;
        let err = Error::from_response(400, &HeaderMap::new(), body, None, token());
        assert_eq!(
            err.to_string(),
            "HubSpot refused the write (400 VALIDATION_ERROR): rule CONDITIONALLY_REQUIRED on property closedate (subCategory MISSING_CONDITIONAL_REQUIRED_PROPERTY)"
        );
        // Names that are not names are dropped.
        let body = br#"{"category":"VALIDATION_ERROR","errors":[{"code":"has spaces; and values","in":"amount"}]}"#;
        let err = Error::from_response(400, &HeaderMap::new(), body, None, token());
        assert_eq!(err.refusal().and_then(|r| r.rule.clone()), None);
        assert_eq!(err.refusal().and_then(|r| r.property.clone()).as_deref(), Some("amount"));
    }

    #[test]
    fn non_json_body() {
        for body in [&b"<html>Bad gateway</html>"[..], b"", b"[1]", b"\"str\""] {
            let err = Error::from_response(502, &HeaderMap::new(), body, None, token());
            assert!(
                matches!(err, Error::Api { status: 502, ref message, category: None, .. } if message == UNEXPECTED_RESPONSE)
            );
            assert!(err.is_retryable());
        }
    }

    #[test]
    fn redacts_echoed_token() {
        let body = br#"{"message":"token pat-secret-123 is invalid","category":"INVALID_AUTHENTICATION"}"#;
        let err = Error::from_response(401, &HeaderMap::new(), body, None, token());
        assert!(!err.to_string().contains("pat-secret-123"));
        assert!(!format!("{err:?}").contains("pat-secret-123"));
        assert_eq!(redact("a s1 b s2 c", &["s1", "", "s2"]), "a *** b *** c");
    }

    #[test]
    fn rate_limited_classification() {
        let body = br#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#;
        let err = Error::from_response(429, &HeaderMap::new(), body, None, token());
        assert_eq!(err, Error::RateLimited { policy: RateLimitPolicy::Daily, retry_after: None });
        assert!(!err.is_retryable());
        assert_eq!(err.status(), Some(429));
        let ten = Error::RateLimited {
            policy: RateLimitPolicy::TenSecondlyRolling,
            retry_after: Some(Duration::from_secs(1)),
        };
        assert!(ten.is_retryable());
        assert_eq!(ten.to_string(), "HubSpot TEN_SECONDLY_ROLLING rate limit reached (retry after 1000 ms)");
    }

    #[test]
    fn retryable_flags() {
        assert!(Error::Timeout.is_retryable());
        assert!(Error::Transport("reset".into()).is_retryable());
        assert!(!Error::Decode("x".into()).is_retryable());
        assert!(!Error::InvalidRequest("x".into()).is_retryable());
        assert_eq!(Error::InvalidRequest("x".into()).status(), None);
        assert_eq!(Error::Timeout.status(), None);
    }
}
