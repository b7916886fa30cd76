//! `hubspot-sim` binary: runs the HubSpot simulator until Ctrl-C / SIGTERM.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, error::ErrorKind};
use hubspot_sim::{HubSpotSim, SimConfig, WebhookConfig};

/// Simulated HubSpot CRM properties API (deals) for GoMark tests and demos.
#[derive(Debug, Parser)]
#[command(name = "hubspot-sim", version, about)]
struct Args {
    /// Interface to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Fixed latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of requests (0.0–1.0) answered with a random 502.
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Requests allowed per portal per rolling window.
    #[arg(long, default_value_t = 100)]
    burst_limit: u32,
    /// Length of the rolling window, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    burst_window_ms: u64,
    /// Requests allowed per portal per day.
    #[arg(long, default_value_t = 250_000)]
    daily_limit: u64,
    /// CRM search requests allowed per portal per second.
    #[arg(long, default_value_t = 5)]
    search_per_second: u32,
    /// Delay before a deal write becomes visible to search, in milliseconds.
    #[arg(long, default_value_t = 0)]
    search_index_lag_ms: u64,
    /// Deliver deal webhooks (all portals) to this URL.
    #[arg(long)]
    webhook_url: Option<String>,
    /// The app's OAuth client id (client-credentials and refresh grants check it).
    #[arg(long, default_value = "hubspot-sim-client-id")]
    client_id: String,
    /// The app's client secret: OAuth grants check it and webhooks are signed with it
    /// (X-HubSpot-Signature-v3).
    #[arg(long, env = "HUBSPOT_SIM_WEBHOOK_SECRET", default_value = "hubspot-sim-secret", hide_env_values = true)]
    webhook_secret: String,
    /// The app's id (appId of webhook and journal events).
    #[arg(long, default_value_t = 1)]
    webhook_app_id: u64,
    /// How long events are collected before a webhook batch is sent, in milliseconds.
    #[arg(long, default_value_t = 100)]
    webhook_batch_delay_ms: u64,
}

impl Args {
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!("--failure-rate must be between 0.0 and 1.0 (got {})", self.failure_rate));
        }
        if self.burst_limit == 0 {
            return Err("--burst-limit must be at least 1".to_owned());
        }
        if self.burst_window_ms == 0 {
            return Err("--burst-window-ms must be at least 1".to_owned());
        }
        if self.daily_limit == 0 {
            return Err("--daily-limit must be at least 1".to_owned());
        }
        if self.search_per_second == 0 {
            return Err("--search-per-second must be at least 1".to_owned());
        }
        if self.webhook_url.as_deref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            return Err("--webhook-url must be an http:// or https:// URL".to_owned());
        }
        if self.host.trim().is_empty() {
            return Err("--host must not be empty".to_owned());
        }
        Ok(())
    }

    fn config(&self) -> SimConfig {
        SimConfig {
            latency: Duration::from_millis(self.latency_ms),
            failure_rate: self.failure_rate,
            burst_limit: self.burst_limit,
            burst_window: Duration::from_millis(self.burst_window_ms),
            daily_limit: self.daily_limit,
            search_per_second: self.search_per_second,
            search_index_lag: Duration::from_millis(self.search_index_lag_ms),
            app_id: self.webhook_app_id,
            client_id: self.client_id.clone(),
            client_secret: self.webhook_secret.clone(),
        }
    }

    fn webhooks(&self) -> Option<WebhookConfig> {
        self.webhook_url.as_ref().map(|url| WebhookConfig {
            target_url: url.clone(),
            client_secret: self.webhook_secret.clone(),
            app_id: self.webhook_app_id,
            batch_delay: Duration::from_millis(self.webhook_batch_delay_ms),
            ..WebhookConfig::default()
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(message) = args.validate() {
        Args::command().error(ErrorKind::ValueValidation, message).exit();
    }
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot bind {}:{}", args.host, args.port))?;
    let addr = listener.local_addr().context("cannot read bound address")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "hubspot-sim: http://{addr}").context("cannot write to stdout")?;
    stdout.flush().context("cannot flush stdout")?;
    let sim = HubSpotSim::new(args.config());
    if let Some(webhooks) = args.webhooks() {
        sim.configure_webhooks(webhooks);
    }
    let result = sim.clone().serve(listener, shutdown_signal()).await.context("server error");
    // Shutdown signal: stop the webhook dispatcher too.
    sim.stop_webhooks();
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
