//! The simulator's state as a file, so that an embedded GoMark restarted on the same data
//! folder finds the same portals, pipelines and deals it left (its own database remembers
//! them). Traffic counters, rate-limit windows, injected failures and the request log are
//! not kept: they describe a run, not the portal.

use crate::deals::Deal;
use crate::model::{Group, Property};
use crate::pipelines::Pipeline;
use serde::{Deserialize, Serialize};

/// Bumped when the format changes incompatibly; an unknown version is refused, not guessed.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub version: u32,
    pub next_id: u64,
    pub portals: Vec<PortalState>,
}

#[derive(Debug, Serialize, Deserialize)]
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

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("simulator state is not readable: {0}")]
    Format(#[from] serde_json::Error),
    #[error("simulator state has version {0}, this build reads {VERSION}")]
    Version(u32),
}

impl Snapshot {
    pub fn new(next_id: u64, portals: Vec<PortalState>) -> Self {
        Self { version: VERSION, next_id, portals }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let snapshot: Self = serde_json::from_slice(bytes)?;
        if snapshot.version != VERSION {
            return Err(StateError::Version(snapshot.version));
        }
        Ok(snapshot)
    }
}
