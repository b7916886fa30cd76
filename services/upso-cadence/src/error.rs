//! upso-cadence's errors, and how callers see them (through the shared table in
//! `gomark_platform`): internal details are logged, never returned.

use gomark_platform::{ErrorKind, PublicError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the caller can fix or should know; the message is safe to show.
    #[error(transparent)]
    Public(#[from] PublicError),
    #[error(transparent)]
    Storage(#[from] gomark_storage::StorageError),
    #[error(transparent)]
    Events(#[from] gomark_events::EventError),
    #[error("stored JSON unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Vault(#[from] crate::credentials::VaultError),
    /// Upso failed; the variant decides what the caller is told.
    #[error("upso: {0}")]
    Upso(#[from] upso_client::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Storage(err.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::Public(PublicError::invalid(field, message))
    }

    pub fn kind_of(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::Public(PublicError::new(kind, message))
    }

    /// True when the same call may succeed later (Upso down or rate limited).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Upso(e) => e.is_transient(),
            Error::Storage(_) => true,
            _ => false,
        }
    }

    /// What the caller sees: Upso failures are named by kind only, never with Upso's text.
    pub fn to_public(&self) -> PublicError {
        match self {
            Error::Public(p) => p.clone(),
            Error::Upso(upso_client::Error::Unauthorized) => PublicError::new(
                ErrorKind::FailedPrecondition,
                "Upso refused the company's token; register a valid one",
            ),
            Error::Upso(upso_client::Error::RateLimited { retry_after }) => {
                PublicError::new(ErrorKind::RateLimited, "Upso's rate limit for this company is reached; retry later")
                    .with_retry_after(*retry_after)
            }
            Error::Upso(e) if e.is_transient() => PublicError::unavailable("Upso"),
            other => {
                tracing::error!(error = %other, "internal error");
                PublicError::internal()
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        err.to_public().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn upsos_retry_after_becomes_the_callers_retry_info() {
        let err = Error::Upso(upso_client::Error::RateLimited { retry_after: Duration::from_secs(3) });
        let public = err.to_public();
        assert_eq!((public.kind, public.retry_after), (ErrorKind::RateLimited, Some(Duration::from_secs(3))));
    }
}
