//! What an Upso call can fail with. Messages never contain the token.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("upso rejected the token")]
    Unauthorized,
    #[error("upso: not found: {0}")]
    NotFound(String),
    /// 409 (`already_enrolled`, `invalid_state`) or 412 (`version_mismatch`).
    #[error("upso conflict {code}: {message}")]
    Conflict { code: String, message: String },
    /// 400/422: the request breaks a rule (`invalid`, `opted_out`, `cadence_archived`).
    #[error("upso refused the request ({code}): {message}")]
    Refused { code: String, message: String, field: Option<String> },
    #[error("upso rate limit reached; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("upso server error (status {0})")]
    Server(u16),
    #[error("upso request timed out")]
    Timeout,
    #[error("upso unreachable: {0}")]
    Connect(String),
    #[error("unexpected upso response: {0}")]
    Decode(String),
    #[error("invalid upso client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Worth another attempt: the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::RateLimited { .. } | Error::Server(_) | Error::Timeout | Error::Connect(_))
    }

    /// The API error code, for errors the API named.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Conflict { code, .. } | Error::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
