//! The operator's command line (`gomark status`, `plan`, `apply`, …).
//!
//! It talks to the gateway's REST API only, never to a service directly, so it needs
//! nothing but a URL and an API key, and it is subject to the same roles, scopes, rate
//! limits and audit as any other client. Each command group is a module of its own; the
//! rendering functions are pure (`&Value` in, `String` out) so they can be tested without
//! a server.

pub mod apply;
pub mod audit;
pub mod client;
pub mod config;
pub mod output;
pub mod rollout;
pub mod status;

pub use client::{CliError, Client};

use serde_json::Value;
use std::future::Future;
use std::process::ExitCode;

/// Options every operator command shares. They are global so that both `gomark --json
/// status` and `gomark status --json` work.
#[derive(Clone, clap::Args)]
pub struct ApiOptions {
    /// The gateway's base URL.
    #[arg(long, env = "GOMARK_GATEWAY", default_value = "http://127.0.0.1:8080", global = true)]
    pub gateway: String,
    /// The API key (or OIDC token) to call the gateway with.
    // hide_env_values: `--help` must never print the key taken from the environment.
    #[arg(long, env = "GOMARK_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Machine output: the API's JSON, one document per command, on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

// Written by hand so that the key cannot end up in a log or a panic message.
impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("gateway", &self.gateway)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("json", &self.json)
            .finish()
    }
}

/// What a command runs with: the API client and the output mode.
#[derive(Debug)]
pub struct Context {
    pub client: Client,
    pub json: bool,
}

impl Context {
    pub fn new(options: &ApiOptions) -> Result<Self, CliError> {
        let key = options.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()).ok_or(CliError::MissingApiKey)?;
        Ok(Self { client: Client::new(&options.gateway, key)?, json: options.json })
    }

    /// Prints `document` as JSON with `--json`, otherwise as `human` renders it.
    pub fn emit(&self, document: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            output::print(&output::json(document));
        } else {
            output::print(&human(document));
        }
    }
}

/// Runs one operator command and turns its result into the process's exit status: 0 on
/// success; 1, with the error on stderr, otherwise.
pub async fn main<F, Fut>(options: ApiOptions, command: F) -> ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<(), CliError>>,
{
    let result = match Context::new(&options) {
        Ok(ctx) => command(ctx).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            output::eprint(&err.lines().join("\n"));
            ExitCode::FAILURE
        }
    }
}
