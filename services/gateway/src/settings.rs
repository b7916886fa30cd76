//! The gateway's settings.

use gomark_platform::settings::{ServerSettings, SettingsError, TelemetrySettings, Validate, validate_url};
use gomark_service::ServiceSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    pub gateway: GatewaySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewaySettings {
    /// The REST API.
    pub http_addr: SocketAddr,
    pub orchestrator_url: String,
    pub upso_cadence_url: String,
    /// Deadline of each call to a service.
    pub call_timeout_ms: u64,
    /// Deadline of a whole REST request.
    pub request_timeout_ms: u64,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            orchestrator_url: "http://127.0.0.1:50051".into(),
            upso_cadence_url: "http://127.0.0.1:50053".into(),
            call_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl GatewaySettings {
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        validate_url("gateway.orchestrator_url", &self.gateway.orchestrator_url)?;
        validate_url("gateway.upso_cadence_url", &self.gateway.upso_cadence_url)?;
        if !(100..=120_000).contains(&self.gateway.call_timeout_ms) {
            return Err(SettingsError::invalid("gateway.call_timeout_ms", "must be between 100 and 120000"));
        }
        if self.gateway.request_timeout_ms < self.gateway.call_timeout_ms {
            return Err(SettingsError::invalid(
                "gateway.request_timeout_ms",
                "must be at least gateway.call_timeout_ms",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.gateway.max_body_bytes) {
            return Err(SettingsError::invalid("gateway.max_body_bytes", "must be between 1 KiB and 64 MiB"));
        }
        Ok(())
    }
}

impl ServiceSettings for Settings {
    fn server(&self) -> &ServerSettings {
        &self.server
    }

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}
