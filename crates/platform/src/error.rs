//! The one table that maps GoMark error kinds to gRPC codes and HTTP statuses.
//!
//! Services return [`PublicError`]s: the message is written for callers and never carries
//! internal details (those are logged where they happen). The gateway turns a gRPC status
//! back into an HTTP problem with [`ErrorKind::from_grpc`].

use tonic::{Code, Status};

/// Metadata key carrying the name of the offending field across gRPC.
pub const FIELD_METADATA_KEY: &str = "gomark-error-field";

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
}

impl PublicError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), field: None }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self { kind: ErrorKind::InvalidArgument, message: format!("{field}: {message}"), field: Some(field) }
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
        let mut status = Status::new(err.kind.grpc_code(), err.message);
        if let Some(field) = err.field.and_then(|f| f.parse().ok()) {
            status.metadata_mut().insert(FIELD_METADATA_KEY, field);
        }
        status
    }
}

impl From<Status> for PublicError {
    /// Internal statuses never pass their text on: it may describe our internals.
    fn from(status: Status) -> Self {
        let kind = ErrorKind::from_grpc(status.code());
        let field = status.metadata().get(FIELD_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_owned);
        match kind {
            ErrorKind::Internal => PublicError::internal(),
            ErrorKind::Unavailable if status.message().is_empty() => PublicError::unavailable("a GoMark service"),
            _ => PublicError { kind, message: status.message().to_owned(), field },
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
}
