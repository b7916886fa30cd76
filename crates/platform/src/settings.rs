//! Layered configuration: built-in defaults < optional YAML file < `GOMARK__...` environment.
//!
//! Settings are validated before any port is bound; an error names the key at fault
//! (`grpc_addr`, `database.url`) so a bad deployment fails fast and says why.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Prefix of every environment variable GoMark reads; nesting uses `__`
/// (`GOMARK__DATABASE__URL` sets `database.url`).
pub const ENV_PREFIX: &str = "GOMARK";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: `{key}` {reason}")]
    Invalid { key: String, reason: String },
}

impl SettingsError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), reason: reason.into() }
    }
}

/// Checks what serde cannot: ranges, formats, combinations.
pub trait Validate {
    fn validate(&self) -> Result<(), SettingsError>;
}

/// Loads `S` from its serde defaults, then `file` (if any), then the `GOMARK__` variables
/// found in `env`, and validates the result.
///
/// `env` is passed in (usually `std::env::vars()`) so that libraries and tests never read
/// the process environment behind the caller's back.
pub fn load<S>(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<S, SettingsError>
where
    S: DeserializeOwned + Validate,
{
    load_with_defaults(file, env, &[])
}

/// [`load`], with `defaults` (`("server.grpc_addr", "0.0.0.0:50052")`) taking the place of
/// the built-in defaults of those keys: what one service's settings differ in from another's.
pub fn load_with_defaults<S>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    defaults: &[(&str, String)],
) -> Result<S, SettingsError>
where
    S: DeserializeOwned + Validate,
{
    let mut builder = config::Config::builder();
    for (key, value) in defaults {
        builder = builder.set_default(*key, value.as_str()).map_err(|e| SettingsError::Load(e.to_string()))?;
    }
    if let Some(path) = file {
        if !path.exists() {
            return Err(SettingsError::Load(format!("file {} does not exist", path.display())));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Yaml).required(true));
    }
    let prefix = format!("{ENV_PREFIX}__");
    let vars: HashMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(vars)),
    );
    let settings: S =
        builder.build().and_then(|c| c.try_deserialize()).map_err(|e| SettingsError::Load(e.to_string()))?;
    settings.validate()?;
    Ok(settings)
}

/// A value that must never be printed: tokens, passwords, database URLs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The only way to read the value; grep for it when auditing secret handling.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    /// Serialised redacted, so dumping settings can never leak the value.
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.serialize_str("***")
    }
}

/// Where a service listens and how long it may take to stop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// gRPC (health, reflection and the service's API).
    pub grpc_addr: SocketAddr,
    /// Prometheus `/metrics` and `/healthz`; kept off the API port so it can stay private.
    pub admin_addr: SocketAddr,
    /// How long in-flight work may take to drain after SIGTERM before we stop anyway.
    pub shutdown_grace_secs: u64,
    /// Keys that sign and verify the caller assertions services send each other,
    /// `kid:base64key[,…]` (`gomark keygen`), the first signing; the same on every service.
    /// Required by `gomark run`; embedded mode makes a random one per process.
    pub assertion_keys: Option<Secret>,
    /// Serve gRPC reflection (the API's shape, no data); production may switch it off.
    pub reflection: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            shutdown_grace_secs: 20,
            assertion_keys: None,
            reflection: true,
        }
    }
}

impl ServerSettings {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Validate for ServerSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if self.shutdown_grace_secs == 0 || self.shutdown_grace_secs > 600 {
            return Err(SettingsError::invalid("server.shutdown_grace_secs", "must be between 1 and 600"));
        }
        if self.grpc_addr.port() != 0 && self.grpc_addr == self.admin_addr {
            return Err(SettingsError::invalid("server.admin_addr", "must differ from server.grpc_addr"));
        }
        if let Some(keys) = self.assertion_keys.as_ref().filter(|k| !k.is_empty()) {
            crate::assertion::KeyRing::from_setting(keys.expose())?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `info,gomark_orchestrator=debug`.
    pub log_level: String,
    /// OTLP/gRPC collector endpoint (`http://otel-collector:4317`); when unset, the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is used. Traces are only exported when one is set.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { log_format: LogFormat::Json, log_level: "info".into(), otlp_endpoint: None }
    }
}

impl Validate for TelemetrySettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(SettingsError::invalid("telemetry.log_level", "is not a valid log filter"));
        }
        if let Some(ep) = &self.otlp_endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(SettingsError::invalid("telemetry.otlp_endpoint", "must be an http(s) URL"));
        }
        Ok(())
    }
}

/// Checks that a peer service URL is usable by tonic.
pub fn validate_url(key: &str, url: &str) -> Result<(), SettingsError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(SettingsError::invalid(key, format!("must be an http(s) URL, got {url:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Sample {
        server: ServerSettings,
        telemetry: TelemetrySettings,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), SettingsError> {
            self.server.validate()?;
            self.telemetry.validate()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gomark.yaml");
        std::fs::write(&file, "server:\n  grpc_addr: 127.0.0.1:7000\n  shutdown_grace_secs: 5\n").expect("write");
        let s: Sample = load(Some(&file), env(&[("GOMARK__SERVER__SHUTDOWN_GRACE_SECS", "7")])).expect("load");
        assert_eq!(s.server.grpc_addr.port(), 7000, "file overrides the default");
        assert_eq!(s.server.shutdown_grace_secs, 7, "environment overrides the file");
        assert_eq!(s.telemetry.log_level, "info", "default kept");
    }

    #[test]
    fn a_wrong_value_names_its_key() {
        let err = load::<Sample>(None, env(&[("GOMARK__SERVER__GRPC_ADDR", "not-an-address")])).expect_err("must fail");
        assert!(err.to_string().contains("grpc_addr"), "{err}");
        let err = load::<Sample>(None, env(&[("GOMARK__SERVER__SHUTDOWN_GRACE_SECS", "0")])).expect_err("must fail");
        assert!(err.to_string().contains("server.shutdown_grace_secs"), "{err}");
        let err = load::<Sample>(None, env(&[("GOMARK__TELEMETRY__LOG_FORMAT", "xml")])).expect_err("must fail");
        assert!(err.to_string().contains("log_format") || err.to_string().contains("xml"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/gomark.yaml")), env(&[])).expect_err("must fail");
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("pat-na1-123");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"***\"");
    }
}
