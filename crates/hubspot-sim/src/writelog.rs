//! The write log: every request that may change a portal (not reads, searches or batch
//! reads), with its body and answer, per portal. Tests and chaos runs read it to prove
//! that each write reached HubSpot exactly once; `GET /_sim/writes?portalId=` serves it.

use serde::Serialize;

/// Writes kept (oldest dropped first): a 200-company rollout fits many times over.
pub const WRITE_LOG_CAPACITY: usize = 200_000;
/// Bodies are kept up to this size (a property or pipeline definition fits).
pub(crate) const MAX_LOGGED_BODY: usize = 8 * 1024;

/// One write request the simulator received from an authenticated portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedWrite {
    pub portal_id: u64,
    pub method: String,
    pub path: String,
    /// The request body (cut at 8 KiB), as text.
    pub body: String,
    /// The answer's status: 429s and injected failures were not applied.
    pub status: u16,
    /// Epoch milliseconds.
    pub at_ms: i64,
}

/// Whether a request to `path` with `method` may change a portal.
pub(crate) fn is_write(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    !(method == Method::GET
        || method == Method::HEAD
        || method == Method::OPTIONS
        || path.ends_with("/search")
        || path.ends_with("/batch/read"))
}
