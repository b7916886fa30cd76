//! pipeline-tracker's errors, and how callers see them.

use gomark_platform::PublicError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the caller can fix or should know; the message is safe to show.
    #[error(transparent)]
    Public(#[from] PublicError),
    #[error(transparent)]
    Storage(#[from] gomark_storage::StorageError),
    /// A broken invariant (a stored value that does not parse, an overflowing sum).
    #[error("{0}")]
    Internal(String),
}

impl From<gomark_proto::money::MoneyError> for Error {
    fn from(err: gomark_proto::money::MoneyError) -> Self {
        Error::Internal(err.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Storage(err.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// What the caller sees: internal details are logged here and replaced.
    pub fn to_public(&self) -> PublicError {
        match self {
            Error::Public(p) => p.clone(),
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
