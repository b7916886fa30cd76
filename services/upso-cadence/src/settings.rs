//! upso-cadence's settings.

use gomark_platform::settings::{Secret, ServerSettings, SettingsError, TelemetrySettings, Validate, validate_url};
use gomark_service::{CommonSettings, ServiceSettings};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "Sections")]
pub struct Settings {
    pub common: CommonSettings,
    pub upso: UpsoSettings,
    pub engine: EngineSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UpsoSettings {
    /// `https://api.upso.io`, or a simulator's URL.
    pub base_url: String,
    /// Deadline of one Upso request.
    pub timeout_ms: u64,
    /// Retries of a transient failure (5xx, timeout, 429).
    pub max_retries: u32,
    /// Keys sealing Upso tokens at rest: `kid:base64(32 bytes)[,…]`, the first one seals.
    pub credential_keys: Secret,
}

impl Default for UpsoSettings {
    fn default() -> Self {
        Self {
            base_url: upso_client::DEFAULT_BASE_URL.into(),
            timeout_ms: 10_000,
            max_retries: 3,
            credential_keys: Secret::default(),
        }
    }
}

impl UpsoSettings {
    pub fn client_config(&self) -> upso_client::ClientConfig {
        upso_client::ClientConfig {
            base_url: self.base_url.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            max_retries: self.max_retries,
            ..upso_client::ClientConfig::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EngineSettings {
    /// Every company with upsell rules is run once per this many seconds (0: never on a
    /// schedule, only on deal events and on demand).
    pub interval_secs: u64,
    /// After a deal event, the company's run waits this long for more events to batch.
    pub debounce_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { interval_secs: 3600, debounce_ms: 500 }
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
    upso: UpsoSettings,
    engine: EngineSettings,
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
            upso: s.upso,
            engine: s.engine,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.common.validate()?;
        validate_url("upso.base_url", &self.upso.base_url)?;
        if !(100..=120_000).contains(&self.upso.timeout_ms) {
            return Err(SettingsError::invalid("upso.timeout_ms", "must be between 100 and 120000"));
        }
        if self.upso.max_retries > 10 {
            return Err(SettingsError::invalid("upso.max_retries", "must be at most 10"));
        }
        if self.engine.debounce_ms > 60_000 {
            return Err(SettingsError::invalid("engine.debounce_ms", "must be at most 60000"));
        }
        crate::credentials::Vault::from_setting(self.upso.credential_keys.expose())?;
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
