//! What every GoMark service stands on: the settings sections they all share, the
//! backends (database, bus, cache) chosen from them, the tasks a running service is made
//! of, and the `main` they all run.

use gomark_cache::{Cache, CacheSettings};
use gomark_events::{BusSettings, EventBus};
use gomark_platform::Shutdown;
use gomark_platform::settings::{self, ServerSettings, SettingsError, TelemetrySettings, Validate};
use gomark_storage::{Database, DatabaseSettings};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::task::JoinSet;

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
}

impl Backends {
    /// Connects everything `common` describes. The service's `start` runs its migrations.
    pub async fn connect(common: &CommonSettings) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let db = Database::connect(&common.database).await.context("database")?;
        let bus = gomark_events::bus::connect(&common.bus).await.context("event bus")?;
        let cache = gomark_cache::build(&common.cache).context("cache")?;
        Ok(Self { db, bus, cache })
    }
}

/// A started service: where it listens, and the tasks it is made of.
pub struct RunningService {
    pub name: &'static str,
    pub grpc_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub shutdown: Shutdown,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl RunningService {
    pub fn new(name: &'static str, grpc_addr: SocketAddr, shutdown: Shutdown) -> Self {
        Self { name, grpc_addr, admin_addr: None, shutdown, tasks: JoinSet::new() }
    }

    /// Adds a task; if it fails, the whole service shuts down.
    pub fn spawn(&mut self, what: &'static str, task: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
        let name = self.name;
        self.tasks.spawn(async move {
            let result = task.await;
            if let Err(err) = &result {
                tracing::error!(service = name, task = what, error = format!("{err:#}"), "task failed");
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

    /// Also serves `/metrics` and `/healthz` on `addr`.
    pub async fn with_admin(mut self, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = gomark_platform::server::bind(addr, "admin").await?;
        self.admin_addr = Some(listener.local_addr()?);
        let shutdown = self.shutdown.clone();
        self.spawn("admin", async move { Ok(gomark_platform::server::serve_admin(listener, shutdown).await?) });
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
    match run(name, settings, start).await {
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
    let service = start(settings, shutdown).await?.with_admin(admin_addr).await?;
    tracing::info!(service = name, grpc = %service.grpc_addr, admin = ?service.admin_addr, "serving");
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

/// Loads and validates `S`, filling in the service's own schema name when none is given.
pub fn load_settings<S: ServiceSettings>(
    name: &str,
    file: Option<PathBuf>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<S, SettingsError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut with_schema = env.clone();
    if !env.iter().any(|(k, _)| k == "GOMARK__DATABASE__SCHEMA") {
        with_schema.push(("GOMARK__DATABASE__SCHEMA".into(), schema_of(name)));
    }
    settings::load(file.as_deref(), with_schema)
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
