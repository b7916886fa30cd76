//! A NATS outage heals by itself: with the server killed while events keep being stored,
//! the outbox relay and a durable consumer carry on once it is back, without a restart,
//! and every event is handled; a listener hears announcements again. Runs against a NATS
//! server of its own (the `nats-server` binary, on a free port), so it can be stopped;
//! skipped when the binary is missing.

use async_trait::async_trait;
use gomark_events::consumer::{EventHandler, HandlerError, run_consumer};
use gomark_events::envelope::new_event;
use gomark_events::nats::NatsBus;
use gomark_events::relay::{OutboxRelay, RelayWaker};
use gomark_events::{BusSettings, ConsumerSpec, EventBus, EventEnvelope, inbox, outbox};
use gomark_platform::Shutdown;
use gomark_platform::settings::Secret;
use gomark_proto::events::v1::CompanyCreated;
use gomark_storage::{Database, DatabaseSettings, Migrations};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

static PG: gomark_storage::sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations/postgres");
static SQLITE: gomark_storage::sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations/sqlite");

const CONSUMER: &str = "test.outage";

fn nats_server() -> Option<PathBuf> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A NATS server that is killed when dropped, so a failing test leaves none behind.
struct Nats(std::process::Child);

impl Nats {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_nats(binary: &Path, port: u16, store: &Path) -> Nats {
    let mut child = std::process::Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server starts");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Nats(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nats-server did not listen on {port}");
}

/// Everything logged during the test, to count the outage reports.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).matches(needle).count()
    }
}

struct Claimer(Database);

#[async_trait]
impl EventHandler for Claimer {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        let retry = |e: &dyn std::fmt::Display| HandlerError::Retry(e.to_string());
        let mut tx = self.0.begin().await.map_err(|e| retry(&e))?;
        inbox::claim(&mut tx, CONSUMER, &event.id).await.map_err(|e| retry(&e))?;
        tx.commit().await.map_err(|e| retry(&e))?;
        Ok(())
    }
}

async fn processed(db: &Database) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM processed_events").fetch_one(db.pool()).await.expect("count")
}

async fn enqueue(db: &Database, n: usize, waker: &RelayWaker) {
    let mut tx = db.begin().await.expect("begin");
    for i in 0..n {
        outbox::enqueue(&mut tx, &new_event(&format!("c{i}"), "company.created", &CompanyCreated::default()))
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    waker.wake();
}

async fn wait_processed(db: &Database, want: i64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = processed(db).await;
        if n == want {
            return;
        }
        assert!(n < want, "more handled than published: {n}");
        assert!(tokio::time::Instant::now() < deadline, "only {n} of {want} handled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn relay_and_consumer_resume_after_nats_comes_back() {
    let Some(binary) = nats_server() else {
        gomark_testkit::note_skipped("the NATS outage test", "a nats-server binary");
        return;
    };
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = gomark_testkit::free_port();
    let mut nats = start_nats(&binary, port, &dir.path().join("js"));

    let settings = DatabaseSettings {
        url: Secret::new(format!("sqlite://{}?mode=rwc", dir.path().join("service.db").display())),
        ..DatabaseSettings::default()
    };
    let db = Database::connect(&settings).await.expect("connect");
    db.migrate(&Migrations { postgres: &PG, sqlite: &SQLITE }).await.expect("migrate");
    let bus_settings = BusSettings {
        kind: gomark_events::bus::BusKind::Nats,
        nats_url: format!("nats://127.0.0.1:{port}"),
        stream: gomark_testkit::unique("OUTAGE"),
        subject_prefix: gomark_testkit::unique("outage"),
    };
    let bus: Arc<dyn EventBus> = Arc::new(NatsBus::connect(&bus_settings).await.expect("nats"));

    let shutdown = Shutdown::new();
    let waker = RelayWaker::default();
    let relay = tokio::spawn(OutboxRelay::new(db.clone(), bus.clone(), waker.clone()).run(shutdown.clone()));
    let consumer = tokio::spawn(run_consumer(
        bus.clone(),
        ConsumerSpec::new(CONSUMER, "company.created"),
        Arc::new(Claimer(db.clone())),
        shutdown.clone(),
    ));

    enqueue(&db, 50, &waker).await;
    wait_processed(&db, 50, Duration::from_secs(20)).await;

    // The outage: NATS dies; the service keeps storing events.
    nats.kill();
    enqueue(&db, 50, &waker).await;
    // Longer than the client's 5 s request timeout, so publishing really fails.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(processed(&db).await, 50, "nothing can be delivered while NATS is down");

    let mut nats = start_nats(&binary, port, &dir.path().join("js"));
    wait_processed(&db, 100, Duration::from_secs(60)).await;
    let unpublished: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(unpublished, 0, "the relay caught up");

    // Reported once when it started and once when it ended, per loop, not per attempt.
    let (failing, recovered) = (logs.count("failing; retrying quietly"), logs.count("recovered"));
    let all = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!((1..=3).contains(&failing), "outage reported {failing} times:\n{all}");
    assert!(recovered >= 1 && recovered <= failing, "{recovered} recoveries for {failing} outages");

    shutdown.trigger();
    relay.await.expect("relay ends");
    consumer.await.expect("consumer ends");
    nats.kill();
}

#[tokio::test]
async fn a_listener_hears_announcements_again_after_nats_comes_back() {
    use futures::StreamExt;
    let Some(binary) = nats_server() else {
        gomark_testkit::note_skipped("the NATS announcement outage test", "a nats-server binary");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let port = gomark_testkit::free_port();
    let mut nats = start_nats(&binary, port, &dir.path().join("js"));
    let settings = BusSettings {
        kind: gomark_events::bus::BusKind::Nats,
        nats_url: format!("nats://127.0.0.1:{port}"),
        stream: gomark_testkit::unique("HINTS"),
        subject_prefix: gomark_testkit::unique("hints"),
    };
    let (speaker, listener) =
        (NatsBus::connect(&settings).await.expect("nats"), NatsBus::connect(&settings).await.expect("nats"));
    let mut heard = listener.listen("test.hints").await.expect("listen");
    // Announces `what` until it is heard, for up to 30 s: a subscription reaches the server
    // asynchronously, at the start and again after the reconnect.
    async fn until_heard(speaker: &NatsBus, heard: &mut gomark_events::Announcements, what: &'static str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            speaker.announce("test.hints", bytes::Bytes::from_static(what.as_bytes())).await.ok();
            match tokio::time::timeout(Duration::from_millis(200), heard.next()).await {
                Ok(Some(payload)) if payload == what.as_bytes() => return,
                Ok(None) => panic!("the listener ended"),
                _ => assert!(tokio::time::Instant::now() < deadline, "{what} not heard within 30 s"),
            }
        }
    }
    until_heard(&speaker, &mut heard, "before").await;
    nats.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _nats = start_nats(&binary, port, &dir.path().join("js"));
    // The same stream, without listening anew: the client subscribes again by itself.
    until_heard(&speaker, &mut heard, "after").await;
}
