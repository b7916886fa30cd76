//! Test support: every test gets its own database (a fresh SQLite file, or a fresh Postgres
//! schema), its own NATS stream and subject prefix, its own Redis key prefix.
//!
//! The distributed backends are used when their variables are set:
//! `GOMARK_TEST_POSTGRES_URL`, `GOMARK_TEST_NATS_URL`, `GOMARK_TEST_REDIS_URL`. When a
//! variable is set the server must be reachable: tests fail rather than skip.

use gomark_platform::settings::Secret;
use gomark_storage::DatabaseSettings;

pub const POSTGRES_VAR: &str = "GOMARK_TEST_POSTGRES_URL";
pub const NATS_VAR: &str = "GOMARK_TEST_NATS_URL";
pub const REDIS_VAR: &str = "GOMARK_TEST_REDIS_URL";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn postgres_url() -> Option<String> {
    var(POSTGRES_VAR)
}

pub fn nats_url() -> Option<String> {
    var(NATS_VAR)
}

pub fn redis_url() -> Option<String> {
    var(REDIS_VAR)
}

/// True when all three distributed backends are configured.
pub fn distributed_configured() -> bool {
    postgres_url().is_some() && nats_url().is_some() && redis_url().is_some()
}

/// A short unique token, valid in schema names, NATS subjects and Redis keys.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Says why a distributed variant did not run, so a green run never hides it.
pub fn note_skipped(what: &str, var: &str) {
    eprintln!("note: {what} not run against the real server: {var} is not set");
}

/// A database of its own for one test; removed when dropped.
pub struct TestDatabase {
    pub settings: DatabaseSettings,
    pub label: &'static str,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let path = dir.path().join("test.db");
        let settings = DatabaseSettings {
            url: Secret::new(format!("sqlite://{}?mode=rwc", path.display())),
            schema: "main".into(),
            max_connections: 4,
            acquire_timeout_secs: 5,
        };
        Self { settings, label: "sqlite", _dir: Some(dir), pg_schema: None }
    }

    /// A fresh schema in the configured Postgres, or None when none is configured.
    pub fn postgres() -> Option<Self> {
        let url = postgres_url()?;
        let schema = unique("t");
        let settings = DatabaseSettings {
            url: Secret::new(url.clone()),
            schema: schema.clone(),
            max_connections: 4,
            acquire_timeout_secs: 5,
        };
        Some(Self { settings, label: "postgres", _dir: None, pg_schema: Some((url, schema)) })
    }

    /// SQLite always, Postgres too when configured.
    pub fn all() -> Vec<Self> {
        let mut all = vec![Self::sqlite()];
        match Self::postgres() {
            Some(pg) => all.push(pg),
            None => note_skipped("postgres variant", POSTGRES_VAR),
        }
        all
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((url, schema)) = self.pg_schema.take() else {
            return;
        };
        // Drop runs outside any async context we can rely on: use a private runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let settings = DatabaseSettings {
                    url: Secret::new(url),
                    schema: "public".into(),
                    max_connections: 1,
                    acquire_timeout_secs: 5,
                };
                if let Ok(db) = gomark_storage::Database::connect(&settings).await {
                    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                    let _ =
                        gomark_storage::sqlx::query(gomark_storage::sqlx::AssertSqlSafe(sql)).execute(db.pool()).await;
                    db.close().await;
                }
            });
        })
        .join();
    }
}

/// A free loopback port that the test binds later (a child process, a restarted service).
///
/// Taken below the kernel's ephemeral range (32768+), so no socket the OS numbers itself
/// (`:0` listeners, outgoing connections of the tests running beside this one) can take it
/// between now and the bind. Each test process walks its own slice of 20000–32000 from a
/// counter, checking that the port is free now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 24) as u16 * 500;
    for _ in 0..500 {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 500;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{base}..{}", base + 500)
}
