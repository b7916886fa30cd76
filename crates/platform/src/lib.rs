//! Process plumbing every GoMark service shares: settings, telemetry, the error-code
//! table, gRPC server bootstrap with health and reflection, and graceful shutdown.

pub mod allocator;
pub mod assertion;
pub mod caller;
pub mod error;
pub mod grpc_client;
pub mod metric_catalog;
pub mod outage;
pub mod process_metrics;
pub mod readiness;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod token;

pub use caller::{Caller, Role, Scope};
pub use error::{ErrorKind, PublicError};
pub use outage::Outage;
pub use readiness::Readiness;
pub use shutdown::Shutdown;
