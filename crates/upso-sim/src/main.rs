//! `upso-sim` binary: runs the Upso simulator until Ctrl-C / SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::io::Write;
use std::time::Duration;
use upso_sim::{SimConfig, UpsoSim};

/// Simulated Upso outreach API (docs/upso) for GoMark tests and demos.
#[derive(Debug, Parser)]
#[command(name = "upso-sim", version, about)]
struct Args {
    /// Interface to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// An account, as `token:name`; repeat for more.
    #[arg(long = "account", value_name = "TOKEN:NAME")]
    accounts: Vec<String>,
    /// Requests allowed per account per rolling window.
    #[arg(long, default_value_t = 100)]
    rate_limit: u32,
    /// Length of the rolling window, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    rate_window_ms: u64,
    /// Daily cap of each account's default mailbox.
    #[arg(long, default_value_t = 200)]
    mailbox_cap: u32,
    /// Fixed latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.rate_limit > 0 && args.rate_window_ms > 0,
        "--rate-limit and --rate-window-ms must be positive"
    );
    let sim = UpsoSim::new(SimConfig {
        rate_limit: args.rate_limit,
        rate_window: Duration::from_millis(args.rate_window_ms),
        default_mailbox_cap: args.mailbox_cap.max(1),
        latency: Duration::from_millis(args.latency_ms),
        ..SimConfig::default()
    });
    for account in &args.accounts {
        let (token, name) = account.split_once(':').context("--account must be token:name")?;
        sim.register_account(token, name);
    }
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot bind {}:{}", args.host, args.port))?;
    let addr = listener.local_addr().context("cannot read bound address")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "upso-sim: http://{addr}").context("cannot write to stdout")?;
    stdout.flush().context("cannot flush stdout")?;
    let stop = async {
        // Without a signal handler the process would simply be killed; nothing is lost either way.
        let _ = tokio::signal::ctrl_c().await;
    };
    sim.serve(listener, stop).await.context("server failed")
}
