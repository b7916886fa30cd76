//! `gomark cluster`: GoMark's distributed mode on one machine, in one command. The five
//! services run as separate processes of this same binary (`gomark run <service>`) on
//! Postgres, NATS JetStream and Redis; the HubSpot and Upso simulators run in this process.
//! Every address, URL, key and secret the services need from each other is decided here,
//! in [`service_env`], so nothing has to be guessed. Ctrl-C (or SIGTERM) stops them all.
//!
//! The data folder holds what must outlive a run: the credential keys, the admin API key,
//! the simulators' state, and one log file per service.

use anyhow::Context as _;
use gomark_platform::Shutdown;
use hubspot_sim::HubSpotSim;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};
use upso_sim::UpsoSim;

/// The services, in start order (peers first; the gateway, which calls them all, last).
pub const SERVICES: &[&str] = &["hubspot-sync", "upso-cadence", "orchestrator", "pipeline-tracker", "gateway"];

/// How long a service may take to report ready, and to stop after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// With the demo portfolio: one simulated sales event this often, as `gomark serve` does.
const DEMO_ACTIVITY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Keys, simulator state and logs.
    pub data_dir: PathBuf,
    pub postgres_url: String,
    pub nats_url: String,
    pub redis_url: String,
    /// The gateway's HTTP port.
    pub port: u16,
    /// Added to every service's default port, to run a second cluster beside the first.
    pub port_offset: u16,
    /// Load the demo portfolio into an empty installation.
    pub demo: bool,
}

/// Everything the services need to find and trust each other.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// Names this cluster's schemas, stream and cache keys: a new data folder is a new
    /// cluster, never a half-remembered old one (its keys would not open the old data).
    pub cluster_id: String,
    pub postgres_url: String,
    pub nats_url: String,
    pub redis_url: String,
    /// `(service, gRPC port, admin port)`.
    pub ports: Vec<(&'static str, u16, u16)>,
    pub http_port: u16,
    pub hubspot_sim_url: String,
    pub upso_sim_url: String,
    pub hubspot_credential_keys: String,
    pub upso_credential_keys: String,
    /// Signs the caller assertions the services send each other; the same for all five.
    pub assertion_keys: String,
    pub webhook_secret: String,
    pub admin_api_key: String,
}

impl Wiring {
    fn ports_of(&self, service: &str) -> (u16, u16) {
        self.ports.iter().find(|(name, _, _)| *name == service).map_or((0, 0), |(_, grpc, admin)| (*grpc, *admin))
    }

    pub fn grpc_url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports_of(service).0)
    }

    pub fn admin_url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports_of(service).1)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// The environment of `service`: the one place where the cluster's wiring is written down.
/// (A setting every service needs, like the shared assertion key, goes in the first list.)
pub fn service_env(service: &str, w: &Wiring) -> Vec<(String, String)> {
    let (grpc, admin) = w.ports_of(service);
    let mut env: Vec<(&str, String)> = vec![
        ("SERVER__GRPC_ADDR", format!("127.0.0.1:{grpc}")),
        ("SERVER__ADMIN_ADDR", format!("127.0.0.1:{admin}")),
        ("TELEMETRY__LOG_FORMAT", "pretty".into()),
        ("TELEMETRY__LOG_LEVEL", "info,sqlx=warn,async_nats=warn".into()),
        ("DATABASE__URL", w.postgres_url.clone()),
        ("DATABASE__SCHEMA", format!("cluster_{}_{}", w.cluster_id, gomark_service::schema_of(service))),
        ("BUS__KIND", "nats".into()),
        ("BUS__NATS_URL", w.nats_url.clone()),
        ("BUS__STREAM", format!("GOMARK_CLUSTER_{}", w.cluster_id)),
        ("BUS__SUBJECT_PREFIX", format!("gomark-cluster-{}", w.cluster_id)),
        ("CACHE__KIND", "redis".into()),
        ("CACHE__REDIS_URL", w.redis_url.clone()),
        ("CACHE__KEY_PREFIX", format!("gomark-cluster-{}", w.cluster_id)),
        ("SERVER__ASSERTION_KEYS", w.assertion_keys.clone()),
    ];
    match service {
        "hubspot-sync" => env.extend([
            ("HUBSPOT__BASE_URL", w.hubspot_sim_url.clone()),
            ("HUBSPOT__CREDENTIAL_KEYS", w.hubspot_credential_keys.clone()),
            // The simulator's search has no index lag, and a local cluster should move quickly.
            ("DEALS__INTERVAL_SECS", "30".into()),
            ("DEALS__INDEX_LAG_SECS", "0".into()),
        ]),
        "upso-cadence" => env.extend([
            ("UPSO__BASE_URL", w.upso_sim_url.clone()),
            ("UPSO__CREDENTIAL_KEYS", w.upso_credential_keys.clone()),
        ]),
        "orchestrator" => env.extend([
            ("ORCHESTRATOR__HUBSPOT_SYNC_URL", w.grpc_url("hubspot-sync")),
            ("ORCHESTRATOR__UPSO_CADENCE_URL", w.grpc_url("upso-cadence")),
        ]),
        "pipeline-tracker" => env.extend([
            ("TRACKER__HUBSPOT_SYNC_URL", w.grpc_url("hubspot-sync")),
            ("TRACKER__ORCHESTRATOR_URL", w.grpc_url("orchestrator")),
        ]),
        "gateway" => env.extend([
            ("GATEWAY__HTTP_ADDR", format!("127.0.0.1:{}", w.http_port)),
            ("GATEWAY__ORCHESTRATOR_URL", w.grpc_url("orchestrator")),
            ("GATEWAY__HUBSPOT_SYNC_URL", w.grpc_url("hubspot-sync")),
            ("GATEWAY__UPSO_CADENCE_URL", w.grpc_url("upso-cadence")),
            ("GATEWAY__PIPELINE_TRACKER_URL", w.grpc_url("pipeline-tracker")),
            ("AUTH__BOOTSTRAP_ADMIN_KEY", w.admin_api_key.clone()),
            ("AUTH__HUBSPOT_WEBHOOK_SECRET", w.webhook_secret.clone()),
            ("AUTH__HUBSPOT_WEBHOOK_URL", webhook_url(w)),
        ]),
        _ => {}
    }
    env.into_iter().map(|(k, v)| (format!("GOMARK__{k}"), v)).collect()
}

fn webhook_url(w: &Wiring) -> String {
    format!("{}/webhooks/hubspot", w.gateway_url())
}

/// A value kept in the data folder (created on first use, readable by this user only).
fn kept_file(data_dir: &Path, file: &str, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    let path = data_dir.join(file);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    let value = make();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, value.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(value)
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// A running cluster.
pub struct Cluster {
    pub wiring: Wiring,
    pub hubspot_sim: HubSpotSim,
    pub upso_sim: UpsoSim,
    pub logs: PathBuf,
    children: Vec<(&'static str, Child)>,
    savers: Vec<tokio::task::JoinHandle<()>>,
    shutdown: Shutdown,
    /// This process's hold on the data folder (its simulators save there).
    _folder: crate::folder_lock::FolderLock,
}

impl Cluster {
    /// Starts the simulators and the five services, and waits until every service is ready.
    pub async fn start(options: ClusterOptions, shutdown: Shutdown) -> anyhow::Result<Self> {
        let data_dir = &options.data_dir;
        std::fs::create_dir_all(data_dir.join("logs"))
            .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
        let folder = crate::folder_lock::FolderLock::take(data_dir)?;
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));

        let hubspot_sim = HubSpotSim::new(hubspot_sim::SimConfig::default());
        let mut savers = Vec::new();
        let file = data_dir.join("hubspot-sim.json");
        crate::sim_state::load(&file, |b| hubspot_sim.restore(b)).context("HubSpot simulator state")?;
        let saved = hubspot_sim.clone();
        savers.push(tokio::spawn(crate::sim_state::keep_saved(file, move || saved.snapshot(), shutdown.clone())));
        let listener = gomark_platform::server::bind(loopback, "HubSpot simulator").await?;
        let hubspot_sim_url = format!("http://{}", listener.local_addr()?);
        let stop = shutdown.clone();
        tokio::spawn(hubspot_sim.clone().serve(listener, async move { stop.wait().await }));

        let (upso_sim, upso_addr) = crate::upso::start_sim(upso_sim::SimConfig::default(), loopback, &shutdown).await?;
        let file = data_dir.join("upso-sim.json");
        crate::sim_state::load(&file, |b| upso_sim.restore(b)).context("Upso simulator state")?;
        let saved = upso_sim.clone();
        savers.push(tokio::spawn(crate::sim_state::keep_saved(file, move || saved.snapshot(), shutdown.clone())));

        let offset = options.port_offset;
        let wiring = Wiring {
            cluster_id: kept_file(data_dir, "cluster.id", || random_hex(4))?,
            postgres_url: options.postgres_url.clone(),
            nats_url: options.nats_url.clone(),
            redis_url: options.redis_url.clone(),
            ports: gomark_service::DEFAULT_PORTS
                .iter()
                .map(|(name, grpc, admin)| (*name, grpc + offset, admin + offset))
                .collect(),
            http_port: options.port,
            hubspot_sim_url,
            upso_sim_url: format!("http://{upso_addr}"),
            hubspot_credential_keys: kept_file(data_dir, "credential.key", || {
                gomark_hubspot_sync::credentials::Vault::generate_setting("k1")
            })?,
            upso_credential_keys: crate::upso::credential_key(data_dir)?,
            assertion_keys: kept_file(data_dir, "assertion.key", || {
                gomark_hubspot_sync::credentials::Vault::generate_setting("a1")
            })?,
            webhook_secret: format!("sim-{}", random_hex(16)),
            admin_api_key: kept_file(data_dir, "admin.key", || format!("gmk_{}", random_hex(24)))?,
        };
        // This process calls the services too (the demo loader): it signs its caller
        // assertions with the cluster's key, or every call would be UNAUTHENTICATED.
        let ring = gomark_platform::assertion::KeyRing::from_setting(&wiring.assertion_keys)
            .context("the cluster's assertion key")?;
        gomark_platform::assertion::install(ring);
        hubspot_sim.configure_webhooks(hubspot_sim::WebhookConfig {
            target_url: webhook_url(&wiring),
            client_secret: wiring.webhook_secret.clone(),
            ..hubspot_sim::WebhookConfig::default()
        });

        let exe = std::env::current_exe().context("cannot find the gomark binary")?;
        let logs = data_dir.join("logs");
        let mut cluster =
            Self { wiring, hubspot_sim, upso_sim, logs, children: Vec::new(), savers, shutdown, _folder: folder };
        for service in SERVICES {
            let child = cluster.spawn(&exe, service)?;
            cluster.children.push((service, child));
        }
        for service in SERVICES {
            if let Err(err) = cluster.wait_ready(service).await {
                cluster.stop().await;
                return Err(err);
            }
        }
        if options.demo {
            let orchestrator = cluster.wiring.grpc_url("orchestrator");
            crate::demo::seed_demo_portfolio(&cluster.hubspot_sim, &orchestrator).await.context("demo portfolio")?;
            crate::upso::seed_demo_accounts(&cluster.upso_sim, &orchestrator, &cluster.wiring.grpc_url("upso-cadence"))
                .await
                .context("demo Upso accounts")?;
            let (ready, _) = tokio::sync::watch::channel(crate::demo::DemoState::Staging);
            let sim_url = cluster.wiring.hubspot_sim_url.clone();
            tokio::spawn(crate::demo::stage_demo(cluster.hubspot_sim.clone(), sim_url, orchestrator, ready));
            let (sim, stop) = (cluster.hubspot_sim.clone(), cluster.shutdown.clone());
            tokio::spawn(crate::demo::run_demo_activity(sim, DEMO_ACTIVITY, stop));
        }
        Ok(cluster)
    }

    fn spawn(&self, exe: &Path, service: &'static str) -> anyhow::Result<Child> {
        let log_path = self.logs.join(format!("{service}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut command = Command::new(exe);
        command
            .args(["run", service])
            // Only the cluster's settings: a GOMARK__ variable of the caller's shell must
            // not rewire one service behind the others' back.
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| !k.starts_with("GOMARK__") && k != "GOMARK_CONFIG"))
            .envs(service_env(service, &self.wiring))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // If this process dies, so do the services (SIGKILL): no orphans holding ports.
            .kill_on_drop(true);
        command.spawn().with_context(|| format!("cannot start {service}"))
    }

    async fn wait_ready(&mut self, service: &str) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.wiring.admin_url(service));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some((_, child)) = self.children.iter_mut().find(|(name, _)| *name == service)
                && let Ok(Some(status)) = child.try_wait()
            {
                anyhow::bail!(
                    "{service} exited ({status}); see {}",
                    self.logs.join(format!("{service}.log")).display()
                );
            }
            if tokio::time::Instant::now() > deadline || self.shutdown.is_triggered() {
                anyhow::bail!("{service} not ready after {}s; see {}", READY_TIMEOUT.as_secs(), self.logs.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The lines a person (or a script) reads to find everything.
    pub fn announce(&self) -> Vec<String> {
        let w = &self.wiring;
        let mut lines = vec![format!("gateway: {}", w.gateway_url())];
        for (name, grpc, admin) in &w.ports {
            let label = if *name == "gateway" { "gateway-grpc" } else { name };
            lines.push(format!("{label}: 127.0.0.1:{grpc} (admin http://127.0.0.1:{admin})"));
        }
        lines.push(format!("hubspot-sim: {} (writes: {}/_sim/writes)", w.hubspot_sim_url, w.hubspot_sim_url));
        lines.push(format!("upso-sim: {}", w.upso_sim_url));
        lines.push(format!("logs: {}", self.logs.display()));
        lines.push(format!("cluster id: {} (Postgres schemas cluster_{}_*)", w.cluster_id, w.cluster_id));
        lines.push(format!("admin api key: {}", w.admin_api_key));
        lines.push(format!("dashboard: {}/dashboard#key={}", w.gateway_url(), w.admin_api_key));
        lines.push(format!(
            "example: curl -s -H 'Authorization: Bearer {}' {}/v1/companies",
            w.admin_api_key,
            w.gateway_url()
        ));
        lines
    }

    /// Runs until shutdown, reporting services that exit on their own, then stops them all.
    pub async fn run(mut self) {
        let mut reported: Vec<&str> = Vec::new();
        while !self.shutdown.is_triggered() {
            for (name, child) in &mut self.children {
                if !reported.contains(name)
                    && let Ok(Some(status)) = child.try_wait()
                {
                    gomark_platform::telemetry::root_span("cluster").in_scope(|| {
                        tracing::error!(service = *name, %status, "service exited; the others keep running");
                    });
                    reported.push(name);
                }
            }
            tokio::select! {
                () = self.shutdown.wait() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        self.stop().await;
    }

    /// SIGTERM to every service, the gateway first; SIGKILL for one that outlives its grace.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        for (name, child) in self.children.iter_mut().rev() {
            if let Some(pid) = child.id() {
                // tokio can only SIGKILL; `kill` sends the SIGTERM a graceful drain needs.
                let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            if tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_err() {
                gomark_platform::telemetry::root_span("shutdown")
                    .in_scope(|| tracing::warn!(service = *name, "did not stop in time; killing it"));
                let _ = child.kill().await;
            }
        }
        for saver in self.savers.drain(..) {
            let _ = saver.await;
        }
    }
}
