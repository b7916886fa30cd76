//! The gateway's settings.

use gomark_platform::settings::{Secret, ServerSettings, SettingsError, TelemetrySettings, Validate, validate_url};
use gomark_service::ServiceSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    /// API keys and idempotency records.
    pub database: gomark_storage::DatabaseSettings,
    /// Rate-limit counters shared by the replicas.
    pub cache: gomark_cache::CacheSettings,
    pub gateway: GatewaySettings,
    pub auth: AuthSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// An admin key to install on first start (from a Kubernetes Secret). When unset, a
    /// fresh installation generates one and prints it once.
    pub bootstrap_admin_key: Option<Secret>,
    /// Requests per minute per caller.
    pub rate_limit_per_minute: u64,
    /// Accept OIDC bearer tokens from this issuer.
    pub oidc: Option<crate::auth::oidc::OidcSettings>,
    /// Comma-separated origins allowed by CORS; empty allows none (same origin only).
    pub cors_allowed_origins: String,
    /// The HubSpot app's client secret, which signs webhooks; webhooks are refused without it.
    pub hubspot_webhook_secret: Option<Secret>,
    /// The public URL HubSpot posts webhooks to (signatures cover it), e.g.
    /// `https://gomark.example.com/webhooks/hubspot`.
    pub hubspot_webhook_url: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            bootstrap_admin_key: None,
            rate_limit_per_minute: 600,
            oidc: None,
            cors_allowed_origins: String::new(),
            hubspot_webhook_secret: None,
            hubspot_webhook_url: String::new(),
        }
    }
}

impl AuthSettings {
    pub fn cors_origins(&self) -> Vec<String> {
        self.cors_allowed_origins.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewaySettings {
    /// The REST API.
    pub http_addr: SocketAddr,
    pub orchestrator_url: String,
    pub upso_cadence_url: String,
    /// Where verified HubSpot webhooks are handed on.
    pub hubspot_sync_url: String,
    /// Funnels, the portfolio roll-up and their live streams.
    pub pipeline_tracker_url: String,
    /// Deadline of each call to a service.
    pub call_timeout_ms: u64,
    /// Deadline of a whole REST request.
    pub request_timeout_ms: u64,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// The ISO 4217 code the dashboard labels amounts with: the portfolio's reporting
    /// currency. Deal amounts are shown as HubSpot holds them, not converted.
    pub dashboard_currency: String,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            orchestrator_url: "http://127.0.0.1:50051".into(),
            upso_cadence_url: "http://127.0.0.1:50053".into(),
            hubspot_sync_url: "http://127.0.0.1:50052".into(),
            pipeline_tracker_url: "http://127.0.0.1:50054".into(),
            call_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_body_bytes: 1024 * 1024,
            dashboard_currency: "USD".into(),
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
        validate_url("gateway.hubspot_sync_url", &self.gateway.hubspot_sync_url)?;
        validate_url("gateway.pipeline_tracker_url", &self.gateway.pipeline_tracker_url)?;
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
        let currency = &self.gateway.dashboard_currency;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(SettingsError::invalid("gateway.dashboard_currency", "must be an ISO 4217 code such as USD"));
        }
        self.database.validate()?;
        self.cache.validate()?;
        let auth = &self.auth;
        if auth.rate_limit_per_minute == 0 {
            return Err(SettingsError::invalid("auth.rate_limit_per_minute", "must be at least 1"));
        }
        if let Some(key) = &auth.bootstrap_admin_key
            && (!key.expose().starts_with(crate::auth::api_keys::KEY_PREFIX) || key.expose().len() < 36)
        {
            return Err(SettingsError::invalid(
                "auth.bootstrap_admin_key",
                "must start with gmk_ and hold at least 32 random characters",
            ));
        }
        if let Some(oidc) = &auth.oidc {
            validate_url("auth.oidc.issuer", &oidc.issuer)?;
            if oidc.audience.is_empty() {
                return Err(SettingsError::invalid("auth.oidc.audience", "is required with auth.oidc.issuer"));
            }
            if !oidc.jwks_url.is_empty() {
                validate_url("auth.oidc.jwks_url", &oidc.jwks_url)?;
            }
        }
        for origin in auth.cors_origins() {
            if origin != "*" && http::HeaderValue::from_str(&origin).is_err() {
                return Err(SettingsError::invalid(
                    "auth.cors_allowed_origins",
                    format!("{origin:?} is not an origin"),
                ));
            }
        }
        if auth.hubspot_webhook_secret.is_some() {
            validate_url("auth.hubspot_webhook_url", &auth.hubspot_webhook_url)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_currency_must_be_an_iso_code() {
        let mut settings = Settings::default();
        settings.database.url = Secret::new("sqlite::memory:".to_owned());
        settings.validate().expect("the defaults are valid");
        for bad in ["usd", "US", "EURO", "U$D", "<b>"] {
            settings.gateway.dashboard_currency = bad.into();
            let err = settings.validate().expect_err(bad).to_string();
            assert!(err.contains("gateway.dashboard_currency"), "{bad}: {err}");
        }
        settings.gateway.dashboard_currency = "EUR".into();
        settings.validate().expect("EUR");
    }
}
