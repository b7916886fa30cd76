//! hubspot-sync's settings.

use gomark_platform::settings::{Secret, ServerSettings, SettingsError, TelemetrySettings, Validate, validate_url};
use gomark_service::{CommonSettings, ServiceSettings};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "Sections")]
pub struct Settings {
    pub common: CommonSettings,
    pub hubspot: HubSpotSettings,
    pub deals: crate::deals::DealSyncSettings,
    pub journal: crate::journal::JournalSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HubSpotSettings {
    /// `https://api.hubapi.com`, or a simulator's URL.
    pub base_url: String,
    /// `v3`, `2026-03` or `2026-09`: the version newly registered portals are pinned to
    /// (each portal then keeps its own pin, moved by rollouts of `hubspot.apiVersion`);
    /// 2026-09 enforces the portals' validation rules on record writes.
    pub api_version: String,
    /// Deadline of one HubSpot request.
    pub timeout_ms: u64,
    /// Retries of a failed HubSpot request (5xx, timeouts, burst 429s).
    pub max_retries: u32,
    /// Base of the retry backoff.
    pub retry_base_delay_ms: u64,
    /// Keys sealing stored credentials: `kid:base64(32 bytes)[,…]`, the first one seals.
    /// Generate one with `gomark keygen`.
    pub credential_keys: Secret,
    /// OAuth app used to refresh OAuth grants (optional; private-app tokens need none).
    pub oauth_client_id: String,
    pub oauth_client_secret: Secret,
    /// GoMark's own HubSpot app ids, comma-separated: changes HubSpot reports with one of
    /// these as `sourceId` are GoMark's, never drift by someone else.
    pub app_ids: String,
}

impl Default for HubSpotSettings {
    fn default() -> Self {
        Self {
            base_url: hubspot_client::DEFAULT_BASE_URL.into(),
            api_version: hubspot_client::ApiVersion::default().as_str().into(),
            timeout_ms: 10_000,
            max_retries: 3,
            retry_base_delay_ms: 200,
            credential_keys: Secret::default(),
            oauth_client_id: String::new(),
            oauth_client_secret: Secret::default(),
            app_ids: String::new(),
        }
    }
}

impl HubSpotSettings {
    pub fn gomark_app_ids(&self) -> Vec<String> {
        self.app_ids.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }

    /// The configured default version (validated at start; the current stable one otherwise).
    pub fn api_version(&self) -> hubspot_client::ApiVersion {
        self.api_version.parse().unwrap_or_default()
    }

    pub fn client_config(&self) -> hubspot_client::ClientConfig {
        hubspot_client::ClientConfig {
            base_url: self.base_url.clone(),
            api_version: self.api_version(),
            timeout: Duration::from_millis(self.timeout_ms),
            max_retries: self.max_retries,
            retry_base_delay: Duration::from_millis(self.retry_base_delay_ms),
            ..hubspot_client::ClientConfig::default()
        }
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
    hubspot: HubSpotSettings,
    deals: crate::deals::DealSyncSettings,
    journal: crate::journal::JournalSettings,
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
            hubspot: s.hubspot,
            deals: s.deals,
            journal: s.journal,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.common.validate()?;
        validate_url("hubspot.base_url", &self.hubspot.base_url)?;
        if self.hubspot.api_version.parse::<hubspot_client::ApiVersion>().is_err() {
            return Err(SettingsError::invalid("hubspot.api_version", "must be v3, 2026-03 or 2026-09"));
        }
        self.journal.validate()?;
        if !(100..=120_000).contains(&self.hubspot.timeout_ms) {
            return Err(SettingsError::invalid("hubspot.timeout_ms", "must be between 100 and 120000"));
        }
        if self.hubspot.max_retries > 10 {
            return Err(SettingsError::invalid("hubspot.max_retries", "must be at most 10"));
        }
        crate::credentials::Vault::from_setting(self.hubspot.credential_keys.expose())?;
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
