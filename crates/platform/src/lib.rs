//! Process plumbing every GoMark service shares: settings, telemetry, the error-code
//! table, gRPC server bootstrap with health and reflection, and graceful shutdown.

pub mod error;
pub mod grpc_client;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use error::{ErrorKind, PublicError};
pub use shutdown::Shutdown;
