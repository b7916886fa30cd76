//! `gomark`: run GoMark in one process (`gomark serve`), or one service of it
//! (`gomark run hubspot-sync`, configured like the service's own binary), or operate a
//! running GoMark through its gateway (`gomark status`, `plan`, `apply`, …; see `gomark::cli`).

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use gomark::cli;
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use gomark_platform::settings::{LogFormat, TelemetrySettings};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tracing::Instrument as _;

#[derive(Parser)]
#[command(name = "gomark", version, about = "GoMark: the go-to-market control plane of a software portfolio")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the operator commands reach the gateway (`serve`, `keygen` and `run` ignore these).
    #[command(flatten)]
    api: cli::ApiOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Run all of GoMark in this process: SQLite, in-process bus and cache, the HubSpot
    /// simulator and a demo portfolio.
    Serve {
        /// Where the SQLite files live.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The gateway's HTTP address; `0.0.0.0:8080` publishes it from a container (the
        /// services and simulators stay on loopback).
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// The gateway's HTTP port, overriding --bind's; 0 picks a free one.
        #[arg(long)]
        port: Option<u16>,
        /// Start without the demo portfolio.
        #[arg(long)]
        no_demo: bool,
        /// Milliseconds between simulated sales events in the demo portals (0: none).
        #[arg(long, default_value_t = 1000)]
        demo_activity_ms: u64,
        /// Requests per minute each API key may make.
        #[arg(long, default_value_t = gomark_gateway::AuthSettings::default().rate_limit_per_minute,
              value_parser = clap::value_parser!(u64).range(1..))]
        rate_limit_per_minute: u64,
        #[arg(long, value_enum, default_value_t = Logs::Pretty)]
        log_format: Logs,
        /// Send traces to this OTLP/gRPC collector (`http://localhost:4317`). Without it,
        /// the standard OTEL_EXPORTER_OTLP_ENDPOINT is used if set; else traces stay local.
        #[arg(long, env = "GOMARK__TELEMETRY__OTLP_ENDPOINT")]
        otlp_endpoint: Option<String>,
        /// What to log: an `EnvFilter` directive (`debug`, `info,gomark_orchestrator=debug`).
        #[arg(long, env = "GOMARK__TELEMETRY__LOG_LEVEL", default_value = "info,sqlx=warn,async_nats=warn")]
        log_level: String,
    },
    /// Run the distributed mode on this machine: the five services as separate processes
    /// on Postgres, NATS and Redis, plus the simulators, all wired; Ctrl-C stops them all.
    Cluster {
        /// Keys, simulator state and one log file per service.
        #[arg(long, default_value = "cluster-data")]
        data_dir: PathBuf,
        #[arg(
            long,
            env = "GOMARK_CLUSTER_POSTGRES_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        postgres_url: String,
        #[arg(long, env = "GOMARK_CLUSTER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long, env = "GOMARK_CLUSTER_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        /// The gateway's HTTP port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Added to every service's default port (gRPC 50050-50054, admin 9090-9094).
        #[arg(long, default_value_t = 0)]
        port_offset: u16,
        /// Start without the demo portfolio.
        #[arg(long)]
        no_demo: bool,
    },
    /// Print a new key for sealing HubSpot credentials (`hubspot.credential_keys`).
    Keygen {
        /// The key's id; put the new entry first to rotate.
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Run one service, configured by GOMARK_CONFIG and GOMARK__* variables.
    Run {
        #[arg(value_enum)]
        service: Service,
    },
    /// Show the latest revision, the latest rollouts and the number of companies.
    Status,
    /// Show what changed between two revisions.
    Diff(cli::config::DiffArgs),
    /// Show what rolling out a stored revision would change in each portal.
    Plan(cli::config::PlanArgs),
    /// Store a document as a new revision, show its plan and roll it out (or roll out a
    /// stored revision with --revision).
    Apply(cli::apply::ApplyArgs),
    /// Restore an earlier revision as a new one and roll it out.
    Rollback(cli::apply::RollbackArgs),
    /// Adopt what the portals hold as their companies' configuration, in a new revision.
    Import(cli::config::ImportArgs),
    /// Pause, resume, cancel, show or follow a rollout.
    Rollout {
        #[command(subcommand)]
        action: cli::rollout::RolloutAction,
    },
    /// Show the audit log of a company, or the portfolio's own.
    Audit(cli::audit::AuditArgs),
    /// The portfolio suppression list: people no company may contact.
    Suppressions {
        #[command(subcommand)]
        action: cli::suppressions::SuppressionAction,
    },
    /// Dated exchange rates the portfolio roll-up converts currencies with.
    FxRates {
        #[command(subcommand)]
        action: cli::fx_rates::FxRatesAction,
    },
    /// List the configuration's revisions, newest first.
    Revisions(cli::config::RevisionsArgs),
    /// List, check for and show drift: portal changes made behind GoMark's back.
    Drift {
        #[command(subcommand)]
        action: cli::drift::DriftAction,
    },
    /// Export the configuration document.
    Config {
        #[command(subcommand)]
        action: cli::export::ConfigAction,
    },
    /// List the CLI config file's contexts or switch the current one.
    Context {
        #[command(subcommand)]
        action: ContextAction,
    },
    /// Print a shell completion script: `gomark completions bash > /etc/bash_completion.d/gomark`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ContextAction {
    /// List the contexts (never their keys); the current one is starred.
    List,
    /// Make NAME the current context.
    Use { name: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Logs {
    Pretty,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Service {
    Gateway,
    Orchestrator,
    HubspotSync,
    UpsoCadence,
    PipelineTracker,
}

#[tokio::main]
async fn main() -> ExitCode {
    gomark_platform::allocator::configure();
    let Cli { command, api } = Cli::parse();
    match command {
        Command::Serve {
            data_dir,
            bind,
            port,
            no_demo,
            demo_activity_ms,
            rate_limit_per_minute,
            log_format,
            otlp_endpoint,
            log_level,
        } => {
            let options = EmbeddedOptions {
                data_dir,
                http_host: bind.ip(),
                port: port.unwrap_or(bind.port()),
                demo: !no_demo,
                demo_activity: (!no_demo && demo_activity_ms > 0).then(|| Duration::from_millis(demo_activity_ms)),
                rate_limit_per_minute,
                ..EmbeddedOptions::default()
            };
            let telemetry = TelemetrySettings {
                log_format: match log_format {
                    Logs::Pretty => LogFormat::Pretty,
                    Logs::Json => LogFormat::Json,
                },
                log_level,
                otlp_endpoint,
            };
            serve(options, telemetry).await
        }
        Command::Run { service } => run(service).await,
        Command::Cluster { data_dir, postgres_url, nats_url, redis_url, port, port_offset, no_demo } => {
            let options = gomark::cluster::ClusterOptions {
                data_dir,
                postgres_url,
                nats_url,
                redis_url,
                port,
                port_offset,
                demo: !no_demo,
            };
            cluster(options).await
        }
        Command::Keygen { id } => {
            println!("{}", gomark_hubspot_sync::credentials::Vault::generate_setting(&id));
            ExitCode::SUCCESS
        }
        Command::Status => cli::main(api, |ctx| async move { cli::status::run(&ctx).await }).await,
        Command::Diff(args) => cli::main(api, |ctx| async move { cli::config::diff(&ctx, args).await }).await,
        Command::Plan(args) => {
            cli::main_with_status(api, |ctx| async move { cli::config::plan(&ctx, args).await }).await
        }
        Command::Apply(args) => cli::main(api, |ctx| async move { cli::apply::apply(&ctx, args).await }).await,
        Command::Rollback(args) => cli::main(api, |ctx| async move { cli::apply::rollback(&ctx, args).await }).await,
        Command::Import(args) => cli::main(api, |ctx| async move { cli::config::import(&ctx, args).await }).await,
        Command::Rollout { action } => cli::main(api, |ctx| async move { cli::rollout::run(&ctx, action).await }).await,
        Command::Audit(args) => cli::main(api, |ctx| async move { cli::audit::run(&ctx, args).await }).await,
        Command::Suppressions { action } => {
            cli::main(api, |ctx| async move { cli::suppressions::run(&ctx, action).await }).await
        }
        Command::FxRates { action } => {
            cli::main(api, |ctx| async move { cli::fx_rates::run(&ctx, action).await }).await
        }
        Command::Revisions(args) => cli::main(api, |ctx| async move { cli::config::revisions(&ctx, args).await }).await,
        Command::Drift { action } => cli::main(api, |ctx| async move { cli::drift::run(&ctx, action).await }).await,
        Command::Config { action } => cli::main(api, |ctx| async move { cli::export::run(&ctx, action).await }).await,
        Command::Context { action } => context(action),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a closed pipe (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "gomark", &mut script);
            cli::output::print(&String::from_utf8_lossy(&script));
            ExitCode::SUCCESS
        }
    }
}

/// `gomark context list|use`: reads (and for `use`, edits) the CLI config file only.
fn context(action: ContextAction) -> ExitCode {
    let Some(path) = cli::contexts::path() else {
        cli::output::eprint("error: no home directory: set GOMARK_CLI_CONFIG to the config file's path");
        return ExitCode::FAILURE;
    };
    let result = match action {
        ContextAction::List => cli::contexts::load(&path).map(|file| cli::output::print(&cli::contexts::render(&file))),
        ContextAction::Use { name } => cli::contexts::use_context(&path, &name)
            .map(|()| cli::output::print(&format!("current context: {name} ({})", path.display()))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            cli::output::eprint(&err.lines().join("\n"));
            ExitCode::FAILURE
        }
    }
}

async fn run(service: Service) -> ExitCode {
    use gomark_service::{Backends, run_main};
    match service {
        Service::Gateway => run_main(gomark_gateway::NAME, gomark_gateway::start).await,
        Service::UpsoCadence => run_main(gomark_upso_cadence::NAME, gomark_upso_cadence::start_with_backends).await,
        Service::PipelineTracker => {
            run_main(gomark_pipeline_tracker::NAME, |s: gomark_pipeline_tracker::Settings, sd| async move {
                let b = Backends::connect(&s.common).await?;
                gomark_pipeline_tracker::start(s, b, sd).await
            })
            .await
        }
        Service::Orchestrator => {
            run_main(gomark_orchestrator::NAME, |s: gomark_orchestrator::Settings, sd| async move {
                let b = Backends::connect(&s.common).await?;
                gomark_orchestrator::start(s, b, sd).await
            })
            .await
        }
        Service::HubspotSync => {
            run_main(gomark_hubspot_sync::NAME, |s: gomark_hubspot_sync::Settings, sd| async move {
                let b = Backends::connect(&s.common).await?;
                gomark_hubspot_sync::start(s, b, sd).await
            })
            .await
        }
    }
}

async fn serve(options: EmbeddedOptions, telemetry: TelemetrySettings) -> ExitCode {
    if let Err(err) = gomark_platform::settings::Validate::validate(&telemetry) {
        eprintln!("gomark: {err}");
        return ExitCode::from(2);
    }
    let _guard = match gomark_platform::telemetry::init(&telemetry, "gomark") {
        Ok(g) => g,
        Err(err) => {
            eprintln!("gomark: telemetry: {err:#}");
            return ExitCode::from(2);
        }
    };
    // The services sign and verify their calls with a key made per process, unless the
    // distributed setting names one: then a tool outside the process (grpcurl, the
    // judges) can sign calls to the gRPC ports too.
    if let Some(keys) = std::env::var("GOMARK__SERVER__ASSERTION_KEYS").ok().filter(|k| !k.is_empty()) {
        match gomark_platform::assertion::KeyRing::from_setting(&keys) {
            Ok(ring) => gomark_platform::assertion::install(ring),
            Err(err) => {
                eprintln!("gomark: {err}");
                return ExitCode::from(2);
            }
        }
    }
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();
    let embedded =
        match Embedded::start(options, shutdown).instrument(gomark_platform::telemetry::root_span("start-up")).await {
            Ok(e) => e,
            Err(err) => {
                eprintln!("gomark: cannot start: {err:#}");
                return ExitCode::FAILURE;
            }
        };
    announce(&embedded);
    match embedded.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gomark: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn cluster(options: gomark::cluster::ClusterOptions) -> ExitCode {
    let telemetry = TelemetrySettings {
        log_format: LogFormat::Pretty,
        log_level: "info,sqlx=warn,async_nats=warn".into(),
        otlp_endpoint: None,
    };
    let _guard = match gomark_platform::telemetry::init(&telemetry, "gomark-cluster") {
        Ok(g) => g,
        Err(err) => {
            eprintln!("gomark: telemetry: {err:#}");
            return ExitCode::from(2);
        }
    };
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();
    let cluster = match gomark::cluster::Cluster::start(options, shutdown)
        .instrument(gomark_platform::telemetry::root_span("start-up"))
        .await
    {
        Ok(c) => c,
        Err(err) => {
            eprintln!("gomark: cannot start the cluster: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for line in cluster.announce() {
        // stdout may be closed by whoever started us; the cluster runs on regardless.
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    cluster.run().await;
    ExitCode::SUCCESS
}

/// The lines a person (or a test) reads to find everything.
fn announce(e: &Embedded) {
    let mut out = std::io::stdout().lock();
    let mut lines = vec![format!("gateway: {}", e.gateway_url)];
    for (name, addr) in &e.services {
        let label = if *name == gomark_gateway::NAME { "gateway-grpc" } else { name };
        lines.push(format!("{label}: {addr}"));
    }
    lines.push(format!("hubspot-sim: {}", e.hubspot_sim_url));
    lines.push(format!("upso-sim: {}", e.upso_sim_url));
    lines.push(format!("metrics: http://{}/metrics", e.admin_addr));
    match &e.admin_api_key {
        Some(key) => {
            lines.push(format!("admin api key: {key}"));
            lines.push(format!("dashboard: {}/dashboard#key={key}", e.gateway_url));
            lines.push(format!("example: curl -s -H 'Authorization: Bearer {key}' {}/v1/companies", e.gateway_url));
        }
        None => {
            lines.push(format!("dashboard: {}/dashboard (paste your API key)", e.gateway_url));
            lines.push(format!(
                "example: curl -s -H 'Authorization: Bearer <your API key>' {}/v1/companies   (the admin key was shown on the first start)",
                e.gateway_url
            ));
        }
    }
    for line in lines {
        // stdout may be closed by whoever started us; the servers run on regardless.
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}
