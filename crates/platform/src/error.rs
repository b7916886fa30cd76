//! The one table that maps GoMark error kinds to gRPC codes and HTTP statuses.
//!
//! Services return [`PublicError`]s: the message is written for callers and never carries
//! internal details (those are logged where they happen). The gateway turns a gRPC status
//! back into an HTTP problem with [`ErrorKind::from_grpc`].
//!
//! Across gRPC a `PublicError` travels with the standard `google.rpc` details in the
//! `grpc-status-details-bin` trailer, so any gRPC client (grpcurl, `grpc_status` in Python)
//! can read them: `ErrorInfo` (reason and domain [`ERROR_DOMAIN`]) always, `BadRequest`
//! naming the offending field, and `RetryInfo` when the delay before a retry is known.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every GoMark error.
pub const ERROR_DOMAIN: &str = "gomark";

/// The custom trailer that named the offending field before the standard `BadRequest`
/// detail replaced it. Still read, never written, so a gateway upgraded before a service
/// keeps field errors during a rolling upgrade; remove one release after.
pub const LEGACY_FIELD_METADATA_KEY: &str = "gomark-error-field";

/// What went wrong, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// The resource changed since the caller read it (ETag / version mismatch).
    Conflict,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    RateLimited,
    Unavailable,
    Timeout,
    Unimplemented,
    Internal,
}

/// One row of the table.
struct Row {
    kind: ErrorKind,
    grpc: Code,
    http: u16,
    slug: &'static str,
    title: &'static str,
}

const TABLE: &[Row] = &[
    row(ErrorKind::InvalidArgument, Code::InvalidArgument, 400, "invalid-argument", "Invalid argument"),
    row(ErrorKind::NotFound, Code::NotFound, 404, "not-found", "Not found"),
    row(ErrorKind::AlreadyExists, Code::AlreadyExists, 409, "already-exists", "Already exists"),
    row(ErrorKind::Conflict, Code::Aborted, 412, "conflict", "Precondition failed"),
    row(
        ErrorKind::FailedPrecondition,
        Code::FailedPrecondition,
        422,
        "failed-precondition",
        "Cannot be done in the current state",
    ),
    row(ErrorKind::Unauthenticated, Code::Unauthenticated, 401, "unauthenticated", "Unauthenticated"),
    row(ErrorKind::PermissionDenied, Code::PermissionDenied, 403, "permission-denied", "Permission denied"),
    row(ErrorKind::RateLimited, Code::ResourceExhausted, 429, "rate-limited", "Too many requests"),
    row(ErrorKind::Unavailable, Code::Unavailable, 503, "unavailable", "Service unavailable"),
    row(ErrorKind::Timeout, Code::DeadlineExceeded, 504, "timeout", "Timed out"),
    row(ErrorKind::Unimplemented, Code::Unimplemented, 501, "not-implemented", "Not implemented"),
    row(ErrorKind::Internal, Code::Internal, 500, "internal", "Internal error"),
];

const fn row(kind: ErrorKind, grpc: Code, http: u16, slug: &'static str, title: &'static str) -> Row {
    Row { kind, grpc, http, slug, title }
}

impl ErrorKind {
    fn row(self) -> &'static Row {
        // The table lists every kind; Internal is the last row and the safe fallback.
        TABLE.iter().find(|r| r.kind == self).unwrap_or(&TABLE[TABLE.len() - 1])
    }

    pub fn grpc_code(self) -> Code {
        self.row().grpc
    }

    pub fn http_status(self) -> u16 {
        self.row().http
    }

    /// Stable identifier used in problem `type` URIs.
    pub fn slug(self) -> &'static str {
        self.row().slug
    }

    pub fn title(self) -> &'static str {
        self.row().title
    }

    /// The `ErrorInfo.reason`: the slug in UPPER_SNAKE_CASE, as `google.rpc` asks
    /// (`INVALID_ARGUMENT`, `RATE_LIMITED`).
    pub fn reason(self) -> String {
        self.slug().replace('-', "_").to_ascii_uppercase()
    }

    /// The kind a gRPC code stands for; codes without a row of their own are internal.
    pub fn from_grpc(code: Code) -> Self {
        match code {
            Code::Cancelled => ErrorKind::Unavailable,
            Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::Unknown | Code::DataLoss => ErrorKind::Internal,
            other => TABLE.iter().find(|r| r.grpc == other).map_or(ErrorKind::Internal, |r| r.kind),
        }
    }
}

/// An error fit to show a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PublicError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, as the caller named it (`spec.name`, `options`).
    pub field: Option<String>,
    /// How long to wait before a retry can succeed, when known (rate limits, a paused
    /// budget).
    pub retry_after: Option<Duration>,
}

impl PublicError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), field: None, retry_after: None }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self {
            kind: ErrorKind::InvalidArgument,
            message: format!("{field}: {message}"),
            field: Some(field),
            retry_after: None,
        }
    }

    /// The same error, telling the caller when a retry can succeed.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, format!("{} not found", what.into()))
    }

    /// An internal failure: the caller learns only that it happened.
    pub fn internal() -> Self {
        Self::new(ErrorKind::Internal, "internal error")
    }

    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, format!("{} is unavailable, retry later", what.into()))
    }
}

impl From<PublicError> for Status {
    fn from(err: PublicError) -> Self {
        let mut details = ErrorDetails::new();
        details.set_error_info(err.kind.reason(), ERROR_DOMAIN, HashMap::new());
        // An internal error says nothing beyond its kind, whatever the PublicError held.
        if let Some(field) = err.field.as_ref().filter(|_| err.kind != ErrorKind::Internal) {
            // The description is the message without the `field: ` prefix it starts with.
            let description = err.message.strip_prefix(&format!("{field}: ")).unwrap_or(&err.message);
            details.add_bad_request_violation(field.clone(), description);
        }
        if let Some(delay) = err.retry_after.filter(|_| err.kind != ErrorKind::Internal) {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(err.kind.grpc_code(), err.message, details)
    }
}

impl From<Status> for PublicError {
    /// Internal statuses never pass their text on: it may describe our internals.
    fn from(status: Status) -> Self {
        let kind = ErrorKind::from_grpc(status.code());
        // Undecodable details are ignored: the code and message still say what happened.
        let details = status.get_error_details();
        let field =
            details.bad_request().and_then(|b| b.field_violations.first()).map(|v| v.field.clone()).or_else(|| {
                status.metadata().get(LEGACY_FIELD_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_owned)
            });
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        match kind {
            ErrorKind::Internal => PublicError::internal(),
            ErrorKind::Unavailable if status.message().is_empty() => {
                PublicError { retry_after, ..PublicError::unavailable("a GoMark service") }
            }
            _ => PublicError { kind, message: status.message().to_owned(), field, retry_after },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[ErrorKind] = &[
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::FailedPrecondition,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::RateLimited,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Unimplemented,
        ErrorKind::Internal,
    ];

    #[test]
    fn every_kind_has_its_own_row_and_round_trips_through_grpc() {
        for kind in ALL {
            assert!(TABLE.iter().any(|r| r.kind == *kind), "{kind:?} has no row");
            assert_eq!(ErrorKind::from_grpc(kind.grpc_code()), *kind);
        }
    }

    #[test]
    fn only_internal_maps_to_a_server_error() {
        for kind in ALL {
            let status = kind.http_status();
            let server_side = matches!(
                kind,
                ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Unimplemented
            );
            assert_eq!(status >= 500, server_side, "{kind:?} -> {status}");
        }
    }

    #[test]
    fn field_survives_the_grpc_hop_and_internal_text_does_not() {
        let status: Status = PublicError::invalid("spec.name", "must match ^[a-z]").into();
        let back = PublicError::from(status);
        assert_eq!(back.field.as_deref(), Some("spec.name"));
        assert_eq!(back.kind, ErrorKind::InvalidArgument);

        let leaked = PublicError::from(Status::internal("connection refused to 10.0.0.3:5432"));
        assert_eq!(leaked.message, "internal error");
    }

    #[test]
    fn field_errors_travel_as_a_standard_bad_request() {
        let status: Status = PublicError::invalid("spec.name", "must match ^[a-z]").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.metadata().get(LEGACY_FIELD_METADATA_KEY).is_none(), "the custom trailer is gone");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("a BadRequest detail").field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "spec.name");
        assert_eq!(violations[0].description, "must match ^[a-z]");
        let info = details.error_info().expect("an ErrorInfo detail");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_ARGUMENT", ERROR_DOMAIN));
        assert!(details.retry_info().is_none());
    }

    #[test]
    fn details_survive_the_wire_encoding() {
        // What a client receives: the trailer as bytes, decoded again.
        let sent: Status =
            PublicError::new(ErrorKind::RateLimited, "slow down").with_retry_after(Duration::from_millis(1500)).into();
        let mut trailers = http::HeaderMap::new();
        sent.add_header(&mut trailers).expect("encodable");
        assert!(trailers.contains_key("grpc-status-details-bin"), "the standard trailer: {trailers:?}");
        let received = Status::from_header_map(&trailers).expect("a status");
        let back = PublicError::from(received);
        assert_eq!(back.kind, ErrorKind::RateLimited);
        assert_eq!(back.retry_after, Some(Duration::from_millis(1500)));
        assert_eq!(back.field, None);
    }

    #[test]
    fn internal_errors_carry_no_details_but_their_kind() {
        let status: Status = PublicError { field: Some("db_column".into()), ..PublicError::internal() }
            .with_retry_after(Duration::ZERO)
            .into();
        let details = status.get_error_details();
        assert!(details.bad_request().is_none() && details.retry_info().is_none());
        assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("INTERNAL"));
    }

    #[test]
    fn a_legacy_field_trailer_is_still_read() {
        let mut status = Status::invalid_argument("name: is empty");
        status.metadata_mut().insert(LEGACY_FIELD_METADATA_KEY, "name".parse().expect("ascii"));
        assert_eq!(PublicError::from(status).field.as_deref(), Some("name"));
    }
}
