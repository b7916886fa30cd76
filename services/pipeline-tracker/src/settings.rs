//! pipeline-tracker's settings.

use gomark_platform::settings::{ServerSettings, SettingsError, TelemetrySettings, Validate, validate_url};
use gomark_service::{CommonSettings, ServiceSettings};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "Sections")]
pub struct Settings {
    pub common: CommonSettings,
    pub tracker: TrackerSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TrackerSettings {
    /// gRPC address of hubspot-sync, which reads each portal's pipeline configuration.
    pub hubspot_sync_url: String,
    /// gRPC address of the orchestrator, which holds the canonical portfolio stages.
    pub orchestrator_url: String,
    /// Deadline of every call to another service.
    pub call_timeout_ms: u64,
    /// A company's stage labels and probabilities are re-read at most this often.
    pub stage_refresh_secs: u64,
    /// A `revision.created` event updates the portfolio stage mapping at once (the replica
    /// that gets it tells the others); this slow check of the latest revision number covers
    /// an event or an announcement that was missed.
    pub config_refresh_secs: u64,
    /// Most deal events written in one database transaction.
    pub batch_max_events: usize,
    /// While deal events keep coming, how long a batch waits to fill from its oldest event
    /// on (fewer, larger writes); a lone event is written at once.
    pub batch_linger_ms: u64,
    /// Deal-event batches written at once by this replica (their writes commute, as they
    /// do across replicas); on SQLite writes take turns whatever this says. 1 by default:
    /// at 2 the backlog ingest was no faster on two CPUs (BENCHMARKS.md).
    pub batch_in_flight: usize,
    /// Watchers also check the database this often: other replicas announce their batches
    /// ([`crate::replicas`]), so this only matters when an announcement is lost.
    pub watch_poll_ms: u64,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            hubspot_sync_url: "http://127.0.0.1:50052".into(),
            orchestrator_url: "http://127.0.0.1:50051".into(),
            call_timeout_ms: 10_000,
            stage_refresh_secs: 120,
            config_refresh_secs: 300,
            batch_max_events: 500,
            batch_linger_ms: 10,
            batch_in_flight: 1,
            watch_poll_ms: 1_000,
        }
    }
}

impl TrackerSettings {
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// The file/environment layout: every section at the top level.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Sections {
    server: ServerSettings,
    telemetry: TelemetrySettings,
    database: gomark_storage::DatabaseSettings,
    bus: gomark_events::BusSettings,
    cache: gomark_cache::CacheSettings,
    tracker: TrackerSettings,
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
            tracker: s.tracker,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.common.validate()?;
        let t = &self.tracker;
        validate_url("tracker.hubspot_sync_url", &t.hubspot_sync_url)?;
        validate_url("tracker.orchestrator_url", &t.orchestrator_url)?;
        let within = |key: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(SettingsError::invalid(key, format!("must be between {min} and {max}")))
            }
        };
        within("tracker.call_timeout_ms", t.call_timeout_ms, 100, 120_000)?;
        within("tracker.stage_refresh_secs", t.stage_refresh_secs, 1, 86_400)?;
        within("tracker.config_refresh_secs", t.config_refresh_secs, 1, 86_400)?;
        within("tracker.batch_max_events", t.batch_max_events as u64, 1, 5_000)?;
        within("tracker.batch_linger_ms", t.batch_linger_ms, 0, 5_000)?;
        within("tracker.batch_in_flight", t.batch_in_flight as u64, 1, 8)?;
        within("tracker.watch_poll_ms", t.watch_poll_ms, 50, 60_000)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        let mut s = Settings::default();
        s.common.database.url = gomark_platform::settings::Secret::new("sqlite://x.db");
        s.validate().expect("defaults");
        s.tracker.batch_max_events = 0;
        assert!(s.validate().expect_err("zero batch").to_string().contains("tracker.batch_max_events"));
    }
}
