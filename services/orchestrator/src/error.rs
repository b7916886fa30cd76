//! The orchestrator's errors, and how callers see them.

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
    /// Another revision was stored between an edit's read of the latest one and its write:
    /// read again (`revisions::retry_on_conflict`). Callers see a conflict; the message is safe.
    #[error("{0}")]
    RevisionRace(String),
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

    /// What the caller sees: internal details are logged here and replaced.
    pub fn to_public(&self) -> PublicError {
        match self {
            Error::Public(p) => p.clone(),
            Error::RevisionRace(message) => PublicError::new(ErrorKind::Conflict, message.clone()),
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
