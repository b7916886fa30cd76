//! The simulator's state as a file, so that an embedded GoMark restarted on the same data
//! folder finds the same portals, pipelines and deals it left (its own database remembers
//! them). Traffic counters, rate-limit windows, injected failures and the request log are
//! not kept: they describe a run, not the portal.

use crate::deals::Deal;
use crate::model::{Group, Property};
use crate::pipelines::Pipeline;
use serde::{Deserialize, Serialize};

/// Bumped when the format changes incompatibly; an unknown version is refused, not guessed.
pub(crate) const VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
pub(crate) struct Snapshot {
    pub version: u32,
    pub next_id: u64,
    pub portals: Vec<PortalState>,
}

/// A portal as a snapshot holds it (written from [`PortalView`]).
#[derive(Debug, Deserialize)]
pub(crate) struct PortalState {
    pub token: String,
    pub id: u64,
    pub properties: Vec<Property>,
    pub groups: Vec<Group>,
    pub pipelines: Vec<Pipeline>,
    pub deals: Vec<Deal>,
    pub next_event_id: u64,
    /// Added with the 2026 API; older files have none.
    #[serde(default)]
    pub rules: crate::rules::Rules,
    #[serde(default)]
    pub pipeline_rules: std::collections::BTreeMap<String, crate::pipeline_rules::PipelineRules>,
    #[serde(default)]
    pub service_key: bool,
}

/// A live portal's [`PortalState`], borrowed: serialised in place under the portal's lock,
/// so a save does not first copy every deal (with 40,000 deals the copy was half of a
/// save's CPU, and the pages it touched most of the rest).
#[derive(Serialize)]
pub(crate) struct PortalView<'a> {
    pub token: &'a str,
    pub id: u64,
    pub properties: Vec<&'a Property>,
    pub groups: Vec<&'a Group>,
    pub pipelines: &'a [Pipeline],
    pub deals: Vec<&'a Deal>,
    pub next_event_id: u64,
    pub rules: &'a crate::rules::Rules,
    pub pipeline_rules: &'a std::collections::BTreeMap<String, crate::pipeline_rules::PipelineRules>,
    pub service_key: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("simulator state is not readable: {0}")]
    Format(#[from] serde_json::Error),
    #[error("simulator state has version {0}, this build reads {VERSION}")]
    Version(u32),
}

impl Snapshot {
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let snapshot: Self = serde_json::from_slice(bytes)?;
        if snapshot.version != VERSION {
            return Err(StateError::Version(snapshot.version));
        }
        Ok(snapshot)
    }
}
