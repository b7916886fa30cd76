//! A service's own database: Postgres (a schema per service) in distributed mode, SQLite
//! (a file per service) embedded.
//!
//! Stores are written once, in portable SQL with `$1` placeholders, against sqlx's `Any`
//! driver; each engine gets its own migration folder (`migrations/<service>/{postgres,sqlite}`)
//! because DDL is where the two really differ.
//!
//! Every statement run inside a span becomes an OpenTelemetry client span (`SELECT deals`,
//! with `db.system.name` and `db.operation.name`) without any code here: the telemetry
//! subscriber turns sqlx's per-statement events into spans.

use gomark_platform::settings::{Secret, SettingsError, Validate};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;
use turns::Urgency;

mod checkpoint;
pub mod group;
mod turns;

pub use sqlx;

/// How long a writer waits for its turn at a SQLite file before it tries anyway (SQLite's
/// own `busy_timeout` then decides): the same bound, so a turn never hangs for ever.
const WRITER_TURN_WAIT: Duration = Duration::from_millis(5000);

/// A transaction on the service's database. On SQLite it also holds this process's turn at
/// the file's single writer until it commits, rolls back or is dropped.
pub struct Transaction {
    // Declared before the turn: a dropped transaction starts its rollback first.
    inner: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<WriterTurn>,
}

impl Transaction {
    pub async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    pub async fn rollback(self) -> std::result::Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl std::ops::Deref for Transaction {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Transaction {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// This process's turn at a SQLite file's single writer, held while writing.
pub struct WriterTurn {
    _turn: turns::Turn,
}

/// A SQLite file holds hashes, sealed credentials and audit trails: readable by its owner
/// only. The file is created here (mode 0600) before SQLite opens it, so its journal and
/// WAL, which SQLite creates with the database file's mode, are private too; a file from an
/// older installation is tightened.
fn restrict_sqlite_file(url: &str) -> std::io::Result<()> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path.contains(":memory:") || query.contains("mode=memory") {
        return Ok(());
    }
    let path = std::path::Path::new(path);
    if !path.exists() && query.split('&').any(|p| p == "mode=rwc") {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database unreachable: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot restrict the database file to its owner: {0}")]
    Permissions(#[source] std::io::Error),
}

pub type Result<T> = std::result::Result<T, StorageError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `postgres://user@host:5432/db` or `sqlite:///path/to/file.db`.
    pub url: Secret,
    /// Postgres schema this service owns (ignored for SQLite, where the file is the boundary).
    pub schema: String,
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: Secret::default(), schema: String::new(), max_connections: 10, acquire_timeout_secs: 5 }
    }
}

impl Validate for DatabaseSettings {
    fn validate(&self) -> std::result::Result<(), SettingsError> {
        let url = self.url.expose();
        match Engine::of_url(url) {
            None if url.is_empty() => Err(SettingsError::invalid("database.url", "is required")),
            None => Err(SettingsError::invalid("database.url", "must start with postgres:// or sqlite:")),
            Some(Engine::Postgres) if !valid_schema(&self.schema) => {
                Err(SettingsError::invalid("database.schema", "must match ^[a-z_][a-z0-9_]{0,62}$"))
            }
            Some(_) if self.max_connections == 0 => {
                Err(SettingsError::invalid("database.max_connections", "must be at least 1"))
            }
            Some(_) => Ok(()),
        }
    }
}

fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_lowercase())
        && s.len() <= 63
        && chars.all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

impl Engine {
    /// OpenTelemetry's `db.system.name` for the engine.
    pub fn otel_name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgresql",
            Engine::Sqlite => "sqlite",
        }
    }

    /// The engine a connection talks to.
    pub fn of_connection(conn: &sqlx::AnyConnection) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") { Engine::Sqlite } else { Engine::Postgres }
    }

    /// A multi-row VALUES list of `rows` tuples of `columns` parameters, which must be all of
    /// the statement's parameters, bound row after row: `($1, $2), ($3, $4)` on Postgres,
    /// `(?, ?), (?, ?)` on SQLite. sqlx's SQLite driver finds each `$n` by walking the
    /// statement's parameter names, quadratic in a batch's size (14 % of the embedded
    /// process's CPU in one profile); anonymous ones bind in order.
    pub fn values_rows(self, rows: usize, columns: usize) -> String {
        use std::fmt::Write as _;
        let mut sql = String::with_capacity(rows * columns * 5);
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for col in 0..columns {
                if col > 0 {
                    sql.push_str(", ");
                }
                match self {
                    // Writing to a String cannot fail.
                    Engine::Postgres => drop(write!(sql, "${}", row * columns + col + 1)),
                    Engine::Sqlite => sql.push('?'),
                }
            }
            sql.push(')');
        }
        sql
    }

    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Engine::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else {
            None
        }
    }
}

/// A service's migrations, one set per engine (`sqlx::migrate!` embeds them at build time).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static Migrator,
    pub sqlite: &'static Migrator,
}

/// A pool on the service's own database or schema.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    engine: Engine,
    /// SQLite only: writers of this process take turns here, urgent ones first, each class
    /// first come first served ([`turns`]). Without it they meet at SQLite's lock, whose busy
    /// handler sleeps and polls (1, 2, 5 … up to 100 ms a time): 380 sleeps a second in the
    /// embedded 200-portal live run, where a change waited seconds behind writers that came
    /// later.
    writer: Option<std::sync::Arc<turns::Turns>>,
    /// SQLite only: the log is copied back into the file beside the writers ([`checkpoint`]).
    _checkpointer: Option<std::sync::Arc<checkpoint::Checkpointer>>,
}

impl Database {
    /// Connects, creating the Postgres schema (or SQLite file) if it does not exist yet.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let url = settings.url.expose();
        let engine = Engine::of_url(url).ok_or_else(|| StorageError::Corrupt("unsupported database url".into()))?;
        // SQL client spans (made from sqlx's statement events, see gomark_platform::telemetry)
        // name the engine.
        gomark_platform::telemetry::set_database_system(engine.otel_name());
        let options = AnyConnectOptions::from_str(url).map_err(StorageError::Connect)?;
        let pool_options = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
            // sqlx pings every connection before handing it out by default: a round trip
            // before every query (7% of a service's CPU in profiles). A connection that died
            // with its server fails its query instead, is dropped, and the caller's retry
            // gets a fresh one; idle ones are recycled before a proxy would cut them.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(60));
        let pool = match engine {
            Engine::Postgres => {
                let schema = settings.schema.clone();
                if !valid_schema(&schema) {
                    return Err(StorageError::Corrupt(format!("invalid schema name {schema:?}")));
                }
                pool_options
                    .after_connect(move |conn, _| {
                        let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path TO \"{schema}\"");
                        Box::pin(async move { conn.execute(sqlx::AssertSqlSafe(sql)).await.map(|_| ()) })
                    })
                    .connect_with(options)
                    .await
                    .map_err(StorageError::Connect)?
            }
            Engine::Sqlite => {
                restrict_sqlite_file(url).map_err(StorageError::Permissions)?;
                pool_options
                    .after_connect(|conn, _| {
                        // WAL lets readers run beside the single writer; busy_timeout queues
                        // writers instead of failing them; the log is checkpointed beside the
                        // writers, commits do it only past a bound ([`checkpoint`]).
                        let sql = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = {}",
                            checkpoint::COMMIT_CHECKPOINT_PAGES
                        );
                        Box::pin(async move { conn.execute(sqlx::AssertSqlSafe(sql)).await.map(|_| ()) })
                    })
                    .connect_with(options)
                    .await
                    .map_err(StorageError::Connect)?
            }
        };
        let writer = (engine == Engine::Sqlite).then(std::sync::Arc::default);
        let checkpointer = (engine == Engine::Sqlite).then(|| std::sync::Arc::new(checkpoint::start(pool.clone())));
        Ok(Self { pool, engine, writer, _checkpointer: checkpointer })
    }

    pub async fn migrate(&self, migrations: &Migrations) -> Result<()> {
        let migrator = match self.engine {
            Engine::Postgres => migrations.postgres,
            Engine::Sqlite => migrations.sqlite,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A transaction. On SQLite it holds the write lock from its start: a deferred one that
    /// reads and then writes fails at once with SQLITE_BUSY when another writer went first
    /// (busy_timeout cannot help a lock upgrade), so callers retried after backing off;
    /// now it waits its turn in busy_timeout instead.
    ///
    /// Writers of this process take turns at SQLite first ([`Self::writer_turn`]), so the
    /// lock is free when they get there.
    pub async fn begin(&self) -> Result<Transaction> {
        self.begin_as(Urgency::Ordinary).await
    }

    /// [`Self::begin`] for a write on a change's way to a funnel: on SQLite it goes before
    /// this process's queued ordinary writers ([`turns`]).
    pub async fn begin_urgent(&self) -> Result<Transaction> {
        self.begin_as(Urgency::Urgent).await
    }

    async fn begin_as(&self, urgency: Urgency) -> Result<Transaction> {
        Ok(match self.engine {
            Engine::Sqlite => {
                let turn = self.writer_turn_as(urgency).await;
                Transaction { inner: self.pool.begin_with("BEGIN IMMEDIATE").await?, _turn: turn }
            }
            Engine::Postgres => Transaction { inner: self.pool.begin().await?, _turn: None },
        })
    }

    /// On SQLite, this process's turn at the file's single writer, for a write outside
    /// [`Self::begin`] (a single statement in autocommit); `None` on Postgres, which has no
    /// single writer, or when the turn did not come within SQLite's own busy timeout (the
    /// write then goes ahead and SQLite decides, as another process's writer would).
    pub async fn writer_turn(&self) -> Option<WriterTurn> {
        self.writer_turn_as(Urgency::Ordinary).await
    }

    /// [`Self::writer_turn`] for an urgent write (see [`Self::begin_urgent`]).
    pub async fn urgent_writer_turn(&self) -> Option<WriterTurn> {
        self.writer_turn_as(Urgency::Urgent).await
    }

    async fn writer_turn_as(&self, urgency: Urgency) -> Option<WriterTurn> {
        let writer = self.writer.as_ref()?;
        match tokio::time::timeout(WRITER_TURN_WAIT, writer.take(urgency)).await {
            Ok(turn) => Some(WriterTurn { _turn: turn }),
            Err(_) => {
                tracing::warn!("no turn at the SQLite writer within 5 s; writing anyway");
                None
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch: how GoMark stores instants, identically on both engines.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// True for the error a unique constraint raises, on either engine.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validation_names_the_key() {
        let mut s = DatabaseSettings::default();
        assert!(s.validate().expect_err("empty url").to_string().contains("database.url"));
        s.url = Secret::new("mysql://x");
        assert!(s.validate().expect_err("mysql").to_string().contains("database.url"));
        s.url = Secret::new("postgres://postgres@127.0.0.1/test");
        s.schema = "Bad-Name".into();
        assert!(s.validate().expect_err("schema").to_string().contains("database.schema"));
        s.schema = "orchestrator".into();
        assert!(s.validate().is_ok());
    }

    /// A SQLite file `svc.db` in `dir`, with `max_connections`.
    fn sqlite_settings(dir: &tempfile::TempDir, max_connections: u32) -> DatabaseSettings {
        DatabaseSettings {
            url: Secret::new(format!("sqlite://{}?mode=rwc", dir.path().join("svc.db").display())),
            schema: "main".into(),
            max_connections,
            acquire_timeout_secs: 10,
        }
    }

    /// The log is copied into the database file in the background, not by a commit: rows
    /// written well under the commits' own bound still reach the file within a moment.
    #[tokio::test]
    async fn sqlite_log_is_checkpointed_beside_the_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::connect(&sqlite_settings(&dir, 2)).await.expect("connect");
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(db.pool()).await.expect("pragma");
        assert_eq!(pages, i64::from(checkpoint::COMMIT_CHECKPOINT_PAGES));
        sqlx::query("CREATE TABLE t (b BLOB)").execute(db.pool()).await.expect("create");
        let file = dir.path().join("svc.db");
        let before = std::fs::metadata(&file).expect("db file").len();
        // 2 MB: 500 pages, under the commits' bound of 10,000.
        for _ in 0..20 {
            let mut tx = db.begin().await.expect("begin");
            for _ in 0..10 {
                sqlx::query("INSERT INTO t (b) VALUES (zeroblob(10000))").execute(&mut *tx).await.expect("insert");
            }
            tx.commit().await.expect("commit");
        }
        let deadline = tokio::time::Instant::now() + checkpoint::EVERY * 10;
        while std::fs::metadata(&file).expect("db file").len() < before + 2_000_000 {
            assert!(tokio::time::Instant::now() < deadline, "the log was not copied into the file");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SQLite's busy handler lets waiting writers in by whoever polls first after a sleep;
    /// the writer turn lets them in as they came.
    #[tokio::test]
    async fn sqlite_writers_of_one_process_write_in_the_order_they_came() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::connect(&sqlite_settings(&dir, 30)).await.expect("connect");
        sqlx::query("CREATE TABLE t (n INTEGER)").execute(db.pool()).await.expect("create");
        let first = db.begin().await.expect("first writer");
        let mut writers = Vec::new();
        for n in 0..20_i64 {
            let db = db.clone();
            writers.push(tokio::spawn(async move {
                let mut tx = db.begin().await.expect("begin");
                sqlx::query("INSERT INTO t (n) VALUES ($1)").bind(n).execute(&mut *tx).await.expect("insert");
                tx.commit().await.expect("commit");
            }));
            // Each is waiting before the next comes.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.commit().await.expect("first commits");
        for w in writers {
            w.await.expect("writer");
        }
        let order: Vec<i64> =
            sqlx::query_scalar("SELECT n FROM t ORDER BY rowid").fetch_all(db.pool()).await.expect("read");
        assert_eq!(order, (0..20).collect::<Vec<_>>());
        // A transaction dropped uncommitted gives the turn back too.
        drop(db.begin().await.expect("begin"));
        let _ = db.begin().await.expect("the next writer gets its turn");
        assert!(db.writer_turn().await.is_some());
    }

    #[test]
    fn values_rows_number_postgres_parameters_and_leave_sqlites_anonymous() {
        assert_eq!(Engine::Postgres.values_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(Engine::Sqlite.values_rows(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(Engine::Sqlite.values_rows(1, 1), "(?)");
    }

    #[tokio::test]
    async fn a_connection_knows_its_engine() {
        use sqlx::Acquire as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::connect(&sqlite_settings(&dir, 1)).await.expect("connect");
        let mut conn = db.pool().acquire().await.expect("acquire");
        assert_eq!(Engine::of_connection(conn.acquire().await.expect("conn")), Engine::Sqlite);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::connect(&sqlite_settings(&dir, 1)).await.expect("connect");
        sqlx::query("CREATE TABLE t (x TEXT)").execute(db.pool()).await.expect("create");
        sqlx::query("INSERT INTO t VALUES ('secret')").execute(db.pool()).await.expect("insert");
        for suffix in ["", "-wal"] {
            let file = dir.path().join(format!("svc.db{suffix}"));
            let mode = std::fs::metadata(&file).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
    }
}
