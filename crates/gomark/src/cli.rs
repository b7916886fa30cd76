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
pub mod companies;
pub mod config;
pub mod contexts;
pub mod drift;
pub mod export;
pub mod fx_rates;
pub mod output;
pub mod progress;
pub mod rollout;
pub mod status;
pub mod style;
pub mod suppressions;

pub use client::{CliError, Client};

use serde_json::Value;
use std::future::Future;
use std::process::ExitCode;

/// Options every operator command shares. They are global so that both `gomark --json
/// status` and `gomark status --json` work.
#[derive(Clone, clap::Args)]
pub struct ApiOptions {
    /// The gateway's base URL [default: the context's, else http://127.0.0.1:8080].
    #[arg(long, env = "GOMARK_GATEWAY", global = true)]
    pub gateway: Option<String>,
    /// The API key (or OIDC token) to call the gateway with.
    // hide_env_values: `--help` must never print the key taken from the environment.
    #[arg(long, env = "GOMARK_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Machine output: the API's JSON, one document per command, on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// The context of the CLI config file to take the gateway and API key from; the
    /// file's `currentContext` otherwise (see `gomark context`).
    #[arg(long, env = "GOMARK_CONTEXT", global = true)]
    pub context: Option<String>,
}

/// The gateway when neither a flag, the environment nor a context names one.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

// Written by hand so that the key cannot end up in a log or a panic message.
impl std::fmt::Debug for ApiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiOptions")
            .field("gateway", &self.gateway)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("json", &self.json)
            .field("context", &self.context)
            .finish()
    }
}

/// What a command runs with: the API client and the output mode.
#[derive(Debug)]
pub struct Context {
    pub client: Client,
    pub json: bool,
    /// Colour plans and diffs (a terminal, no `NO_COLOR`, no `--json`).
    pub colour: bool,
}

impl Context {
    /// Flags and environment first, then the selected context of the CLI config file.
    pub fn new(options: &ApiOptions) -> Result<Self, CliError> {
        let file = match contexts::path() {
            Some(path) => contexts::load(&path)?,
            None => contexts::ConfigFile::default(),
        };
        let selected = file.select(options.context.as_deref())?;
        let from_context = |pick: fn(&contexts::Entry) -> Option<&String>| selected.and_then(pick).cloned();
        let nonblank = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        let gateway = nonblank(options.gateway.clone())
            .or_else(|| from_context(|c| c.gateway.as_ref()))
            .unwrap_or_else(|| DEFAULT_GATEWAY.to_owned());
        let key = nonblank(options.api_key.clone())
            .or_else(|| nonblank(from_context(|c| c.api_key.as_ref())))
            .ok_or(CliError::MissingApiKey)?;
        let colour = !options.json && style::enabled();
        Ok(Self { client: Client::new(&gateway, key.trim())?, json: options.json, colour })
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
    main_with_status(options, |ctx| async move { command(ctx).await.map(|()| 0) }).await
}

/// Like [`main`], for a command that chooses its success status (`plan
/// --detailed-exitcode`: 2 when there are changes). Errors are always 1; with `--json`
/// they are a JSON document (`{"error": {…}}`) on stderr.
pub async fn main_with_status<F, Fut>(options: ApiOptions, command: F) -> ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<u8, CliError>>,
{
    let result = match Context::new(&options) {
        Ok(ctx) => command(ctx).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(err) if options.json => {
            output::eprint(&output::json(&err.to_json()));
            ExitCode::FAILURE
        }
        Err(err) => {
            output::eprint(&err.lines().join("\n"));
            ExitCode::FAILURE
        }
    }
}
