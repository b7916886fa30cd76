//! The orchestrator's settings.

use gomark_platform::settings::{ServerSettings, SettingsError, TelemetrySettings, Validate, validate_url};
use gomark_service::{CommonSettings, ServiceSettings};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "Sections")]
pub struct Settings {
    pub common: CommonSettings,
    pub orchestrator: OrchestratorSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OrchestratorSettings {
    /// gRPC address of hubspot-sync (`http://hubspot-sync:50051`).
    pub hubspot_sync_url: String,
    /// gRPC address of upso-cadence; empty: Upso cadences are neither planned nor applied.
    pub upso_cadence_url: String,
    /// Deadline of every call to another service.
    pub call_timeout_ms: u64,
    /// Every applied company's portal is checked for drift once per this many seconds.
    /// HubSpot sends no webhook when a property's definition changes, so this bounds how
    /// long a hand edit goes unnoticed; a check reads only what the desired state declares
    /// (one call for a baseline of properties), so 45 s costs about 1,900 calls a portal a
    /// day, under 1 % of a private app's daily budget (BENCHMARKS.md, drift).
    pub drift_interval_secs: u64,
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        Self {
            hubspot_sync_url: "http://127.0.0.1:50052".into(),
            upso_cadence_url: String::new(),
            call_timeout_ms: 10_000,
            drift_interval_secs: 45,
        }
    }
}

impl OrchestratorSettings {
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// The file/environment layout: every section at the top level. (Deserialised without
/// `#[serde(flatten)]`, which would lose the key path in error messages.)
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Sections {
    server: gomark_platform::settings::ServerSettings,
    telemetry: gomark_platform::settings::TelemetrySettings,
    database: gomark_storage::DatabaseSettings,
    bus: gomark_events::BusSettings,
    cache: gomark_cache::CacheSettings,
    orchestrator: OrchestratorSettings,
}

impl From<Sections> for Settings {
    fn from(s: Sections) -> Self {
        Self {
            common: CommonSettings {
                server: s.server,
                telemetry: s.telemetry,
                database: s.database,
                bus: s.bus,
                cache: s.cache,
            },
            orchestrator: s.orchestrator,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.common.validate()?;
        validate_url("orchestrator.hubspot_sync_url", &self.orchestrator.hubspot_sync_url)?;
        if !self.orchestrator.upso_cadence_url.is_empty() {
            validate_url("orchestrator.upso_cadence_url", &self.orchestrator.upso_cadence_url)?;
        }
        if !(1..=86_400).contains(&self.orchestrator.drift_interval_secs) {
            return Err(SettingsError::invalid("orchestrator.drift_interval_secs", "must be between 1 and 86400"));
        }
        if !(100..=120_000).contains(&self.orchestrator.call_timeout_ms) {
            return Err(SettingsError::invalid("orchestrator.call_timeout_ms", "must be between 100 and 120000"));
        }
        Ok(())
    }
}

impl ServiceSettings for Settings {
    fn server(&self) -> &ServerSettings {
        &self.common.server
    }

    fn telemetry(&self) -> &TelemetrySettings {
        &self.common.telemetry
    }
}
