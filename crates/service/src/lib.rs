//! What every GoMark service stands on: the settings sections they all share, the
//! backends (database, bus, cache) chosen from them, the tasks a running service is made
//! of, and the `main` they all run.

use gomark_cache::{Cache, CacheSettings};
use gomark_events::{BusSettings, EventBus};
use gomark_platform::settings::{self, ServerSettings, SettingsError, TelemetrySettings, Validate};
use gomark_platform::telemetry::root_span;
use gomark_platform::{Readiness, Shutdown};
use gomark_storage::{Database, DatabaseSettings};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::Instrument;

/// The sections every service's settings contain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CommonSettings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    pub database: DatabaseSettings,
    pub bus: BusSettings,
    pub cache: CacheSettings,
}

impl Validate for CommonSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.database.validate()?;
        self.bus.validate()?;
        self.cache.validate()
    }
}

/// A service's whole settings type.
pub trait ServiceSettings: DeserializeOwned + Validate + Send + 'static {
    fn server(&self) -> &ServerSettings;
    fn telemetry(&self) -> &TelemetrySettings;
}

/// The default Postgres schema of a service.
pub fn schema_of(name: &str) -> String {
    name.replace('-', "_")
}

/// Storage, bus and cache, connected. Embedded mode builds one bus and one cache and hands
/// clones to every service; distributed mode connects each from settings.
#[derive(Clone)]
pub struct Backends {
    pub db: Database,
    pub bus: Arc<dyn EventBus>,
    pub cache: Arc<dyn Cache>,
    /// No other process uses this database (embedded mode holds its data folder's lock), so
    /// a lease another owner holds in it is a dead process's, and is taken back at start
    /// instead of waited out.
    pub exclusive: bool,
}

impl Backends {
    /// What the service cannot work without, for its readiness.
    pub fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Database(self.db.clone()), Dependency::Bus(self.bus.clone())]
    }

    /// Connects everything `common` describes. The service's `start` runs its migrations.
    pub async fn connect(common: &CommonSettings) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let db = Database::connect(&common.database).await.context("database")?;
        let bus = gomark_events::bus::connect(&common.bus).await.context("event bus")?;
        let cache = gomark_cache::build(&common.cache).context("cache")?;
        Ok(Self { db, bus, cache, exclusive: false })
    }
}

/// A backend a service cannot work without; while one is unreachable the service reports
/// itself not ready. (The cache is not one: every use of it falls back when it is down.)
#[derive(Clone)]
pub enum Dependency {
    Database(Database),
    Bus(Arc<dyn EventBus>),
}

/// How often dependencies are probed, and how long one probe may take.
const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl Dependency {
    fn name(&self) -> &'static str {
        match self {
            Dependency::Database(_) => "database",
            Dependency::Bus(_) => "event bus",
        }
    }

    async fn check(&self) -> Result<(), String> {
        let probe = async {
            match self {
                Dependency::Database(db) => gomark_storage::sqlx::query("SELECT 1")
                    .execute(db.pool())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Dependency::Bus(bus) => bus.ping().await.map_err(|e| e.to_string()),
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe).await.unwrap_or_else(|_| Err("no answer in time".into()))
    }
}

/// Probes `dependencies` until shutdown and sets `readiness` from the result, logging each
/// outage once when it starts and once when it ends.
async fn probe_dependencies(
    service: &'static str,
    dependencies: Vec<Dependency>,
    readiness: Readiness,
    shutdown: Shutdown,
) {
    let mut down: Vec<bool> = vec![false; dependencies.len()];
    while !shutdown.is_triggered() {
        for (dependency, was_down) in dependencies.iter().zip(down.iter_mut()) {
            match dependency.check().await {
                Ok(()) if *was_down => {
                    root_span("dependency probe").in_scope(|| {
                        tracing::info!(service, dependency = dependency.name(), "reachable again");
                    });
                    *was_down = false;
                }
                Err(error) if !*was_down => {
                    root_span("dependency probe").in_scope(|| {
                        tracing::warn!(service, dependency = dependency.name(), %error, "unreachable; reporting not ready until it is back");
                    });
                    *was_down = true;
                }
                _ => {}
            }
        }
        readiness.set(!down.iter().any(|d| *d));
        tokio::select! {
            () = shutdown.wait() => {}
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

/// A started service: where it listens, and the tasks it is made of.
pub struct RunningService {
    pub name: &'static str,
    pub grpc_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub shutdown: Shutdown,
    readiness: Readiness,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl RunningService {
    pub fn new(name: &'static str, grpc_addr: SocketAddr, shutdown: Shutdown) -> Self {
        Self { name, grpc_addr, admin_addr: None, shutdown, readiness: Readiness::new(), tasks: JoinSet::new() }
    }

    /// Whether the service can work right now; its gRPC health and `/readyz` report it.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Keeps [`RunningService::readiness`] true exactly while `dependencies` are reachable.
    pub fn watch_dependencies(&mut self, dependencies: Vec<Dependency>) {
        let probe = probe_dependencies(self.name, dependencies, self.readiness.clone(), self.shutdown.clone());
        self.spawn_loop(probe);
    }

    /// Adds a task; if it fails, the whole service shuts down.
    pub fn spawn(&mut self, what: &'static str, task: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
        let name = self.name;
        self.tasks.spawn(async move {
            let result = task.await;
            if let Err(err) = &result {
                root_span("task").in_scope(|| {
                    tracing::error!(service = name, task = what, error = format!("{err:#}"), "task failed");
                });
            }
            result
        });
    }

    /// Adds a background loop that ends by itself at shutdown.
    pub fn spawn_loop(&mut self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(async move {
            fut.await;
            Ok(())
        });
    }

    /// Also serves `/metrics`, `/healthz` and `/readyz` on `addr`.
    pub async fn with_admin(mut self, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = gomark_platform::server::bind(addr, "admin").await?;
        self.admin_addr = Some(listener.local_addr()?);
        let (readiness, shutdown) = (self.readiness.clone(), self.shutdown.clone());
        self.spawn(
            "admin",
            async move { Ok(gomark_platform::server::serve_admin(listener, readiness, shutdown).await?) },
        );
        Ok(self)
    }

    /// Waits until every task has ended; the first failure trips shutdown for the rest.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(err) = result {
                self.shutdown.trigger();
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The whole `main` of a service binary: settings (file named by `GOMARK_CONFIG`, then
/// `GOMARK__...` variables), telemetry, start, run until SIGTERM/SIGINT.
///
/// `name` is the service's name: its default Postgres schema (dashes as underscores), and
/// its name in logs and traces.
pub async fn run_main<S, F, Fut>(name: &'static str, start: F) -> ExitCode
where
    S: ServiceSettings,
    F: FnOnce(S, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<RunningService>>,
{
    gomark_platform::allocator::configure();
    let settings =
        match load_settings::<S>(name, std::env::var_os("GOMARK_CONFIG").map(PathBuf::from), std::env::vars()) {
            Ok(s) => s,
            Err(err) => {
                eprintln!("{}: {err}", name);
                return ExitCode::from(2);
            }
        };
    if let Err(err) = install_assertion_keys(settings.server()) {
        eprintln!("{}: {err}", name);
        return ExitCode::from(2);
    }
    let _telemetry = match gomark_platform::telemetry::init(settings.telemetry(), name) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("{}: telemetry: {err:#}", name);
            return ExitCode::from(2);
        }
    };
    let ran = run(name, settings, start).await;
    let _stopping = root_span("shutdown").entered();
    match ran {
        Ok(()) => {
            tracing::info!(service = name, "stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(service = name, error = format!("{err:#}"), "service failed");
            eprintln!("{}: {err:#}", name);
            ExitCode::FAILURE
        }
    }
}

async fn run<S, F, Fut>(name: &'static str, settings: S, start: F) -> anyhow::Result<()>
where
    S: ServiceSettings,
    F: FnOnce(S, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<RunningService>>,
{
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();
    let admin_addr = settings.server().admin_addr;
    // Start-up (migrations, connections, first calls) is a trace of its own; the tasks it
    // spawns are not part of it.
    let starting = async {
        let service = start(settings, shutdown).await?.with_admin(admin_addr).await?;
        tracing::info!(service = name, grpc = %service.grpc_addr, admin = ?service.admin_addr, "serving");
        anyhow::Ok(service)
    };
    let service = starting.instrument(root_span("start-up")).await?;
    service.wait().await
}

/// A service run on its own must share its assertion keys with the others: without them
/// no call between services could be authenticated, so it refuses to start.
pub fn install_assertion_keys(server: &ServerSettings) -> Result<(), SettingsError> {
    use gomark_platform::assertion::{KeyRing, SETTING};
    let keys = server.assertion_keys.as_ref().filter(|k| !k.is_empty()).ok_or_else(|| {
        SettingsError::invalid(
            SETTING,
            "is required: every service needs the same key to sign and verify calls (GOMARK__SERVER__ASSERTION_KEYS, generate one with `gomark keygen`)",
        )
    })?;
    gomark_platform::assertion::install(KeyRing::from_setting(keys.expose())?);
    Ok(())
}

/// Where each service listens by default: `(service, gRPC port, admin port)`. Distinct, so
/// the five can run on one host without any setting; the peers' default URLs point here.
pub const DEFAULT_PORTS: &[(&str, u16, u16)] = &[
    ("gateway", 50050, 9090),
    ("orchestrator", 50051, 9091),
    ("hubspot-sync", 50052, 9092),
    ("upso-cadence", 50053, 9093),
    ("pipeline-tracker", 50054, 9094),
];

/// The default gRPC and admin ports of service `name` (50051 and 9090 for an unknown one).
pub fn default_ports(name: &str) -> (u16, u16) {
    DEFAULT_PORTS.iter().find(|(n, _, _)| *n == name).map_or((50051, 9090), |(_, grpc, admin)| (*grpc, *admin))
}

/// Loads and validates `S`. What differs per service has a per-service default: the
/// Postgres schema (the service's name) and the ports ([`DEFAULT_PORTS`]); a file or a
/// variable overrides them as any other setting.
pub fn load_settings<S: ServiceSettings>(
    name: &str,
    file: Option<PathBuf>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<S, SettingsError> {
    let (grpc, admin) = default_ports(name);
    let defaults = [
        ("database.schema", schema_of(name)),
        ("server.grpc_addr", format!("0.0.0.0:{grpc}")),
        ("server.admin_addr", format!("0.0.0.0:{admin}")),
    ];
    settings::load_with_defaults(file.as_deref(), env, &defaults)
}

/// The settings of a service that needs nothing but its server and telemetry sections.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerOnlySettings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
}

impl Validate for ServerOnlySettings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.telemetry.validate()
    }
}

impl ServiceSettings for ServerOnlySettings {
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

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn each_service_has_its_own_default_ports_and_settings_override_them() {
        let mut seen = std::collections::HashSet::new();
        for (name, _, _) in DEFAULT_PORTS {
            let s: ServerOnlySettings = load_settings(name, None, vars(&[])).expect("defaults load");
            assert!(seen.insert(s.server.grpc_addr.port()), "{name}: gRPC port clashes");
            assert!(seen.insert(s.server.admin_addr.port()), "{name}: admin port clashes");
        }
        let s: ServerOnlySettings =
            load_settings("hubspot-sync", None, vars(&[("GOMARK__SERVER__GRPC_ADDR", "127.0.0.1:7001")]))
                .expect("load");
        assert_eq!(s.server.grpc_addr.to_string(), "127.0.0.1:7001", "a variable overrides");
        assert_eq!(s.server.admin_addr.port(), 9092, "the rest keeps the service's default");

        let dir = std::env::temp_dir().join(format!("gomark-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("s.yaml");
        std::fs::write(&file, "server:\n  admin_addr: 127.0.0.1:7002\n").expect("write");
        let s: ServerOnlySettings = load_settings("orchestrator", Some(file), vars(&[])).expect("load");
        assert_eq!(s.server.admin_addr.to_string(), "127.0.0.1:7002", "a file overrides too");
        assert_eq!(s.server.grpc_addr.port(), 50051);
        let _ = std::fs::remove_dir_all(dir);
    }
}
