//! Who made a change: HubSpot's `changeSource` (`INTEGRATION`, `CRM_UI`, `AUTOMATION`, …)
//! and `sourceId` (an app id, or `userId:<id>` for a person), carried by every journal and
//! webhook event and by property history.
//!
//! The gate works out the source of each request from its credentials (see `gate.rs`) and
//! runs the handler inside [`scope`]; [`HubSpotSim::write`](crate::HubSpotSim) reads it with
//! [`current`]. Library calls made outside a request (tests editing deals directly) count as
//! hand edits in the UI by [`DEFAULT_UI_USER`].

use serde::{Deserialize, Serialize};

/// The user id of library-level writes (`HubSpotSim::update_deal` and friends).
pub const DEFAULT_UI_USER: u64 = 1;

/// `changeSource` values HubSpot documents, the ones the simulator may emit or accept in
/// `X-HubSpot-Sim-Change-Source`.
pub const CHANGE_SOURCES: &[&str] = &[
    "CRM_UI",
    "INTEGRATION",
    "API",
    "AUTOMATION",
    "IMPORT",
    "CRM_UI_BULK_ACTION",
    "MOBILE_IOS",
    "MOBILE_ANDROID",
    "SALES",
    "BATCH_UPDATE",
    "AI_GROUP",
    "MIGRATION",
];

/// The source of one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSource {
    /// `changeSource`.
    pub change_source: String,
    /// `sourceId`: the app id for integrations, `userId:<id>` for a person.
    pub source_id: Option<String>,
}

impl ChangeSource {
    /// A write made with an app's token (private app, service key or OAuth).
    pub fn integration(app_id: u64) -> Self {
        Self { change_source: "INTEGRATION".into(), source_id: Some(app_id.to_string()) }
    }

    /// A hand edit in HubSpot's UI by `user_id`.
    pub fn ui_user(user_id: u64) -> Self {
        Self { change_source: "CRM_UI".into(), source_id: Some(format!("userId:{user_id}")) }
    }
}

impl Default for ChangeSource {
    fn default() -> Self {
        Self::ui_user(DEFAULT_UI_USER)
    }
}

tokio::task_local! {
    static CURRENT: ChangeSource;
}

/// Runs `future` with `source` as the source of the writes it makes.
pub(crate) async fn scope<F: std::future::Future>(source: ChangeSource, future: F) -> F::Output {
    CURRENT.scope(source, future).await
}

/// The source of the request being handled, or the default (a UI user) outside one.
pub(crate) fn current() -> ChangeSource {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `f` (synchronous) with `source` as the source of the writes it makes.
pub(crate) fn in_thread<T>(source: ChangeSource, f: impl FnOnce() -> T) -> T {
    CURRENT.sync_scope(source, f)
}
