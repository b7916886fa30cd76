//! Starting every service in this process, wired to each other over loopback gRPC.

use crate::demo::DemoState;
use gomark_cache::MemoryCache;
use gomark_events::memory::MemoryBus;
use gomark_platform::Shutdown;
use gomark_platform::settings::{Secret, ServerSettings};
use gomark_service::{Backends, CommonSettings, RunningService};
use gomark_storage::{Database, DatabaseSettings};
use hubspot_sim::{HubSpotSim, SimConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// SQLite files live here, one per service.
    pub data_dir: PathBuf,
    /// The gateway's HTTP port; 0 picks a free one.
    pub port: u16,
    /// The interface every service and simulator listens on (loopback: they are internal).
    pub host: IpAddr,
    /// The interface of the gateway's HTTP port alone (`serve --bind`); `0.0.0.0` lets a
    /// container publish it while the rest stays on `host`.
    pub http_host: IpAddr,
    /// Load the demo portfolio into an empty installation.
    pub demo: bool,
    pub sim: SimConfig,
    /// Requests per minute per API key at the gateway.
    pub rate_limit_per_minute: u64,
    /// How the simulator delivers webhooks (its target and secret are filled in).
    pub webhooks: hubspot_sim::WebhookConfig,
    /// hubspot-sync's deal sync timing.
    pub deal_sync: gomark_hubspot_sync::DealSyncSettings,
    /// hubspot-sync's webhooks journal reader timing.
    pub journal: gomark_hubspot_sync::JournalSettings,
    pub upso_sim: upso_sim::SimConfig,
    /// upso-cadence's engine timing.
    pub upsell_engine: gomark_upso_cadence::EngineSettings,
    /// With the demo portfolio: simulated sales activity this often (None: none).
    pub demo_activity: Option<std::time::Duration>,
    /// How often every company is checked for drift (the orchestrator's setting).
    pub drift_interval: std::time::Duration,
    /// The HubSpot API version hubspot-sync calls: `v3`, `2026-03` or `2026-09` (which
    /// enforces the portals' validation rules on record writes).
    pub hubspot_api_version: String,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            port: 8080,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            demo: true,
            sim: SimConfig::default(),
            rate_limit_per_minute: gomark_gateway::AuthSettings::default().rate_limit_per_minute,
            webhooks: hubspot_sim::WebhookConfig::default(),
            // The simulator's search has no index lag, and a local demo should move quickly.
            deal_sync: gomark_hubspot_sync::DealSyncSettings {
                interval_secs: 30,
                index_lag_secs: 0,
                ..Default::default()
            },
            journal: gomark_hubspot_sync::JournalSettings { poll_ms: 500, ..Default::default() },
            upso_sim: upso_sim::SimConfig::default(),
            upsell_engine: gomark_upso_cadence::EngineSettings::default(),
            demo_activity: None,
            drift_interval: std::time::Duration::from_secs(
                gomark_orchestrator::OrchestratorSettings::default().drift_interval_secs,
            ),
            hubspot_api_version: gomark_hubspot_sync::HubSpotSettings::default().api_version,
        }
    }
}

/// A running embedded GoMark.
pub struct Embedded {
    pub gateway_url: String,
    /// The in-process event bus every service publishes to (tests and benchmarks listen).
    pub bus: Arc<dyn gomark_events::EventBus>,
    pub hubspot_sim_url: String,
    pub hubspot_sim: HubSpotSim,
    pub upso_sim_url: String,
    pub upso_sim: upso_sim::UpsoSim,
    /// The admin API key created on the first start of this data folder (shown once).
    pub admin_api_key: Option<String>,
    /// `(service, gRPC address)` for each of the five services.
    pub services: Vec<(&'static str, SocketAddr)>,
    pub admin_addr: SocketAddr,
    pub shutdown: Shutdown,
    running: Vec<RunningService>,
    memory_bus: MemoryBus,
    /// The tasks keeping the simulators' state in the data folder (they save once more at
    /// shutdown).
    savers: Vec<tokio::task::JoinHandle<()>>,
    /// How far the demo's background staging got (`Ready` at once without a demo).
    demo_state: tokio::sync::watch::Sender<DemoState>,
    /// This process's hold on the data folder, for as long as it runs.
    _folder: crate::folder_lock::FolderLock,
}

/// A fresh secret for this run's simulated HubSpot app (it signs webhooks).
fn webhook_secret() -> String {
    format!("sim-{:032x}", rand::random::<u128>())
}

/// The key sealing HubSpot credentials in this data folder, created on first start and
/// readable by this user only.
fn credential_key(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let path = data_dir.join("credential.key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    let key = gomark_hubspot_sync::credentials::Vault::generate_setting("k1");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, key.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

fn grpc_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

impl Embedded {
    pub async fn start(options: EmbeddedOptions, shutdown: Shutdown) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        // A folder made here holds the credential keys and every service's database: its
        // owner's only. An existing folder is left as it is (it may be `.`); the files in it
        // are created 0600 anyway.
        let mut folder = std::fs::DirBuilder::new();
        folder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
        folder
            .create(&options.data_dir)
            .with_context(|| format!("cannot create the data folder {}", options.data_dir.display()))?;
        let folder = crate::folder_lock::FolderLock::take(&options.data_dir)?;
        let loopback = |port| SocketAddr::new(options.host, port);

        let sim = HubSpotSim::new(options.sim.clone());
        let mut savers = Vec::new();
        let sim_file = options.data_dir.join("hubspot-sim.json");
        crate::sim_state::load(&sim_file, |b| sim.restore(b))
            .context("HubSpot simulator state (delete the file to start the demo afresh)")?;
        let saved = sim.clone();
        savers.push(tokio::spawn(crate::sim_state::keep_saved(sim_file, move || saved.snapshot(), shutdown.clone())));
        let sim_listener = gomark_platform::server::bind(loopback(0), "HubSpot simulator").await?;
        let sim_addr = sim_listener.local_addr()?;
        let stop = shutdown.clone();
        tokio::spawn(sim.clone().serve(sim_listener, async move { stop.wait().await }));

        // One bus and one cache for everyone: that is what makes this one process. The bus
        // keeps its events in the data folder, so a crash loses none (at-least-once).
        let memory_bus = MemoryBus::open(&options.data_dir.join("events.db")).await.context("event journal")?;
        let bus: Arc<dyn gomark_events::EventBus> = Arc::new(memory_bus.clone());
        let common = |service: &str| CommonSettings {
            server: ServerSettings {
                grpc_addr: loopback(0),
                admin_addr: loopback(0),
                shutdown_grace_secs: 10,
                ..Default::default()
            },
            database: DatabaseSettings {
                url: Secret::new(format!(
                    "sqlite://{}?mode=rwc",
                    options.data_dir.join(format!("{service}.db")).display()
                )),
                schema: gomark_service::schema_of(service),
                max_connections: 4,
                acquire_timeout_secs: 10,
            },
            ..CommonSettings::default()
        };
        // Five separate database files: created and migrated at once rather than one service
        // after another (most of a first start is SQLite making files and running
        // migrations). Each service's own `migrate` then finds nothing left to do.
        let open = |service: &'static str, migrations: &'static gomark_storage::Migrations| {
            let database = common(service).database;
            async move {
                let db = Database::connect(&database).await.with_context(|| format!("{service}'s database"))?;
                db.migrate(migrations).await.with_context(|| format!("{service}'s migrations"))?;
                anyhow::Ok(db)
            }
        };
        let (hubspot_sync_db, upso_db, orchestrator_db, tracker_db, gateway_db) = tokio::try_join!(
            open(gomark_hubspot_sync::NAME, &gomark_hubspot_sync::MIGRATIONS),
            open(gomark_upso_cadence::NAME, &gomark_upso_cadence::MIGRATIONS),
            open(gomark_orchestrator::NAME, &gomark_orchestrator::MIGRATIONS),
            open(gomark_pipeline_tracker::NAME, &gomark_pipeline_tracker::MIGRATIONS),
            open(gomark_gateway::NAME, &gomark_gateway::MIGRATIONS),
        )?;
        // The folder's lock makes these databases this process's alone.
        let backends = |common: &CommonSettings, db: Database| Backends {
            db,
            bus: bus.clone(),
            cache: Arc::new(MemoryCache::new(&common.cache.key_prefix)),
            exclusive: true,
        };

        let mut running = Vec::new();
        let mut services = Vec::new();

        let settings = gomark_hubspot_sync::Settings {
            common: common(gomark_hubspot_sync::NAME),
            hubspot: gomark_hubspot_sync::HubSpotSettings {
                base_url: format!("http://{sim_addr}"),
                api_version: options.hubspot_api_version.clone(),
                credential_keys: Secret::new(credential_key(&options.data_dir)?),
                ..Default::default()
            },
            deals: options.deal_sync.clone(),
            journal: options.journal.clone(),
        };
        let b = backends(&settings.common, hubspot_sync_db);
        let hubspot_sync = gomark_hubspot_sync::start(settings, b, shutdown.clone()).await.context("hubspot-sync")?;
        let hubspot_sync_addr = hubspot_sync.grpc_addr;
        services.push((gomark_hubspot_sync::NAME, hubspot_sync_addr));

        // upso-cadence before the orchestrator, which plans and applies cadences through it.
        let (upso_sim, upso_sim_addr) =
            crate::upso::start_sim(options.upso_sim.clone(), loopback(0), &shutdown).await?;
        let upso_file = options.data_dir.join("upso-sim.json");
        crate::sim_state::load(&upso_file, |b| upso_sim.restore(b))
            .context("Upso simulator state (delete the file to start the demo afresh)")?;
        let saved = upso_sim.clone();
        savers.push(tokio::spawn(crate::sim_state::keep_saved(upso_file, move || saved.snapshot(), shutdown.clone())));
        let settings = gomark_upso_cadence::Settings {
            common: common(gomark_upso_cadence::NAME),
            upso: gomark_upso_cadence::UpsoSettings {
                base_url: format!("http://{upso_sim_addr}"),
                credential_keys: Secret::new(crate::upso::credential_key(&options.data_dir)?),
                ..Default::default()
            },
            engine: options.upsell_engine.clone(),
        };
        let b = backends(&settings.common, upso_db);
        let upso = gomark_upso_cadence::start(settings, b, shutdown.clone()).await.context("upso-cadence")?;
        let upso_addr = upso.grpc_addr;
        services.push((gomark_upso_cadence::NAME, upso_addr));
        running.push(upso);

        let settings = gomark_orchestrator::Settings {
            common: common(gomark_orchestrator::NAME),
            orchestrator: gomark_orchestrator::OrchestratorSettings {
                hubspot_sync_url: grpc_url(hubspot_sync.grpc_addr),
                upso_cadence_url: grpc_url(upso_addr),
                drift_interval_secs: options.drift_interval.as_secs().max(1),
                ..Default::default()
            },
        };
        running.push(hubspot_sync);
        let b = backends(&settings.common, orchestrator_db);
        let orchestrator = gomark_orchestrator::start(settings, b, shutdown.clone()).await.context("orchestrator")?;
        let orchestrator_addr = orchestrator.grpc_addr;
        services.push((gomark_orchestrator::NAME, orchestrator_addr));
        running.push(orchestrator);

        let server = common(gomark_gateway::NAME).server;
        let settings = gomark_pipeline_tracker::Settings {
            common: common(gomark_pipeline_tracker::NAME),
            tracker: gomark_pipeline_tracker::TrackerSettings {
                hubspot_sync_url: grpc_url(hubspot_sync_addr),
                orchestrator_url: grpc_url(orchestrator_addr),
                ..Default::default()
            },
        };
        let b = backends(&settings.common, tracker_db);
        let tracker =
            gomark_pipeline_tracker::start(settings, b, shutdown.clone()).await.context("pipeline-tracker")?;
        let tracker_addr = tracker.grpc_addr;
        services.push((gomark_pipeline_tracker::NAME, tracker_addr));
        running.push(tracker);

        let gateway_common = common(gomark_gateway::NAME);
        let gateway_backends = backends(&gateway_common, gateway_db);
        // The simulator's webhooks are signed for the gateway's real address: bind first.
        let http_addr = SocketAddr::new(options.http_host, options.port);
        let http_listener = gomark_platform::server::bind(http_addr, "REST API").await?;
        // Bound to every interface, the gateway is still reached locally through loopback
        // (the simulator's webhooks, the URL printed).
        let mut reachable = http_listener.local_addr()?;
        if reachable.ip().is_unspecified() {
            reachable.set_ip(options.host);
        }
        let webhook_url = format!("http://{reachable}/webhooks/hubspot");
        let webhook_secret = webhook_secret();
        let gateway = gomark_gateway::start_gateway_on(
            http_listener,
            gomark_gateway::Settings {
                server,
                gateway: gomark_gateway::GatewaySettings {
                    http_addr,
                    orchestrator_url: grpc_url(orchestrator_addr),
                    upso_cadence_url: grpc_url(upso_addr),
                    hubspot_sync_url: grpc_url(hubspot_sync_addr),
                    pipeline_tracker_url: grpc_url(tracker_addr),
                    ..Default::default()
                },
                auth: gomark_gateway::AuthSettings {
                    rate_limit_per_minute: options.rate_limit_per_minute,
                    hubspot_webhook_secret: Some(Secret::new(webhook_secret.clone())),
                    hubspot_webhook_url: webhook_url.clone(),
                    ..Default::default()
                },
                ..Default::default()
            },
            gateway_backends.db,
            gateway_backends.cache,
            shutdown.clone(),
        )
        .await
        .context("gateway")?;
        let admin_api_key = gateway.bootstrap_admin_key.clone();
        sim.configure_webhooks(hubspot_sim::WebhookConfig {
            target_url: webhook_url,
            client_secret: webhook_secret,
            ..options.webhooks.clone()
        });
        services.insert(0, (gomark_gateway::NAME, gateway.service.grpc_addr));
        let gateway_url = format!("http://{reachable}");

        // One admin endpoint for the process: the metrics recorder is process-wide anyway.
        let gateway_service = gateway.service.with_admin(loopback(0)).await?;
        let admin_addr = gateway_service.admin_addr.unwrap_or(loopback(0));
        running.push(gateway_service);

        let embedded = Self {
            gateway_url,
            bus: bus.clone(),
            hubspot_sim_url: format!("http://{sim_addr}"),
            hubspot_sim: sim,
            upso_sim_url: format!("http://{upso_sim_addr}"),
            upso_sim,
            admin_api_key,
            services,
            admin_addr,
            shutdown,
            running,
            memory_bus,
            savers,
            demo_state: tokio::sync::watch::Sender::new(DemoState::Ready),
            _folder: folder,
        };
        if options.demo {
            // Only the companies before `start` returns (tests and the CLI expect them);
            // the import, rollout, customers and drift follow in the background.
            crate::demo::seed_demo_portfolio(&embedded.hubspot_sim, &grpc_url(orchestrator_addr))
                .await
                .context("demo portfolio")?;
            crate::upso::seed_demo_accounts(&embedded.upso_sim, &grpc_url(orchestrator_addr), &grpc_url(upso_addr))
                .await
                .context("demo Upso accounts")?;
            embedded.demo_state.send_replace(DemoState::Staging);
            tokio::spawn(crate::demo::stage_demo(
                embedded.hubspot_sim.clone(),
                embedded.hubspot_sim_url.clone(),
                grpc_url(orchestrator_addr),
                embedded.demo_state.clone(),
            ));
            if let Some(every) = options.demo_activity {
                let (sim, stop) = (embedded.hubspot_sim.clone(), embedded.shutdown.clone());
                tokio::spawn(crate::demo::run_demo_activity(sim, every, stop));
            }
        }
        Ok(embedded)
    }

    /// Waits until the demo is staged (or failed to be), at most `timeout`; returns how far it got.
    pub async fn demo_ready(&self, timeout: std::time::Duration) -> DemoState {
        let mut state = self.demo_state.subscribe();
        let staged = tokio::time::timeout(timeout, state.wait_for(|s| *s != DemoState::Staging)).await;
        match staged {
            Ok(Ok(done)) => done.clone(),
            _ => self.demo_state.borrow().clone(),
        }
    }

    /// The gRPC address of `service`.
    pub fn grpc_addr(&self, service: &str) -> Option<SocketAddr> {
        self.services.iter().find(|(name, _)| *name == service).map(|(_, addr)| *addr)
    }

    /// Runs until shutdown, then waits for every service to drain.
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for service in self.running {
            if let Err(err) = service.wait().await {
                self.shutdown.trigger();
                first_error.get_or_insert(err);
            }
        }
        for saver in self.savers {
            // A saver only ends by itself; a panic in it is already logged by the runtime.
            let _ = saver.await;
        }
        if let Err(err) = self.memory_bus.flush().await {
            gomark_platform::telemetry::root_span("shutdown").in_scope(|| {
                tracing::warn!(error = %err, "could not save consumer positions; some events will be delivered again");
            });
        }
        first_error.map_or(Ok(()), Err)
    }
}
