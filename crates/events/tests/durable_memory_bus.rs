//! The embedded mode's bus keeps its promise across a crash: an event the outbox relay
//! published (and deleted from the outbox) is handled after a restart even if the process
//! died (`abort`, as a kill -9) before its consumer got to it.

use async_trait::async_trait;
use gomark_events::consumer::{EventHandler, HandlerError, run_consumer};
use gomark_events::envelope::new_event;
use gomark_events::memory::MemoryBus;
use gomark_events::relay::{OutboxRelay, RelayWaker};
use gomark_events::{ConsumerSpec, EventBus, EventEnvelope, inbox, outbox};
use gomark_platform::Shutdown;
use gomark_platform::settings::Secret;
use gomark_proto::events::v1::CompanyCreated;
use gomark_storage::{Database, DatabaseSettings, Migrations};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static PG: gomark_storage::sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations/postgres");
static SQLITE: gomark_storage::sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations/sqlite");

const EVENTS: usize = 400;
const CRASH_AFTER: usize = 60;
const CONSUMER: &str = "test.durable";
const CRASH_DIR: &str = "GOMARK_TEST_CRASH_DIR";

async fn producer_db(dir: &Path) -> Database {
    let settings = DatabaseSettings {
        url: Secret::new(format!("sqlite://{}?mode=rwc", dir.join("producer.db").display())),
        ..DatabaseSettings::default()
    };
    let db = Database::connect(&settings).await.expect("connect");
    db.migrate(&Migrations { postgres: &PG, sqlite: &SQLITE }).await.expect("migrate");
    db
}

/// Claims each event in the consumer's database, as every GoMark consumer does; counts
/// first-time claims and, in the crashing child, aborts the process after a few.
struct Claimer {
    db: Database,
    handled: AtomicUsize,
    deliveries: AtomicUsize,
    crash_after: Option<usize>,
}

#[async_trait]
impl EventHandler for Claimer {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        let retry = |e: gomark_events::EventError| HandlerError::Retry(e.to_string());
        let mut tx = self.db.begin().await.map_err(|e| HandlerError::Retry(e.to_string()))?;
        let first = inbox::claim(&mut tx, CONSUMER, &event.id).await.map_err(retry)?;
        tx.commit().await.map_err(|e| HandlerError::Retry(e.to_string()))?;
        if first {
            let n = self.handled.fetch_add(1, Ordering::SeqCst) + 1;
            if self.crash_after == Some(n) {
                // kill -9: no destructor, no flush.
                std::process::abort();
            }
        }
        Ok(())
    }
}

async fn processed(db: &Database) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM processed_events").fetch_one(db.pool()).await.expect("count")
}

async fn unpublished(db: &Database) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(db.pool()).await.expect("count")
}

/// The process that crashes: stores the events, relays them all (deleting them from the outbox),
/// then dies while its consumer is part-way through.
async fn crashing_process(dir: &Path) {
    let db = producer_db(dir).await;
    let mut tx = db.begin().await.expect("begin");
    for i in 0..EVENTS {
        outbox::enqueue(&mut tx, &new_event(&format!("c{i}"), "company.created", &CompanyCreated::default()))
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::open(&dir.join("events.db")).await.expect("open"));
    let relay = OutboxRelay::new(db.clone(), bus.clone(), RelayWaker::default());
    while relay.relay_once().await.expect("relay") > 0 {}
    assert_eq!(unpublished(&db).await, 0);
    let claimer = Arc::new(Claimer {
        db,
        handled: AtomicUsize::new(0),
        deliveries: AtomicUsize::new(0),
        crash_after: Some(CRASH_AFTER),
    });
    run_consumer(bus, ConsumerSpec::new(CONSUMER, "company.created"), claimer, Shutdown::new()).await;
    unreachable!("the consumer runs until the process aborts");
}

#[tokio::test]
async fn events_published_are_handled_after_a_crash() {
    if let Ok(dir) = std::env::var(CRASH_DIR) {
        crashing_process(Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "events_published_are_handled_after_a_crash", "--nocapture"])
        .env(CRASH_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the crashing process");
    assert!(!status.success(), "the child process must die mid-way");

    let db = producer_db(dir.path()).await;
    assert_eq!(unpublished(&db).await, 0, "the relay had published every event");
    let before = processed(&db).await;
    assert_eq!(before, CRASH_AFTER as i64, "the consumer died part-way through");

    // The restart.
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::open(&dir.path().join("events.db")).await.expect("reopen"));
    let claimer = Arc::new(Claimer {
        db: db.clone(),
        handled: AtomicUsize::new(0),
        deliveries: AtomicUsize::new(0),
        crash_after: None,
    });
    let shutdown = Shutdown::new();
    let task = tokio::spawn(run_consumer(
        bus,
        ConsumerSpec::new(CONSUMER, "company.created"),
        claimer.clone(),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while processed(&db).await < EVENTS as i64 {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {EVENTS} handled", processed(&db).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
    task.await.expect("consumer ends");
    assert_eq!(claimer.handled.load(Ordering::SeqCst), EVENTS - CRASH_AFTER, "each remaining event handled once");
    let redelivered = claimer.deliveries.load(Ordering::SeqCst) - claimer.handled.load(Ordering::SeqCst);
    assert!(
        redelivered <= CRASH_AFTER,
        "resumed near where it stopped, not from the start: {redelivered} redeliveries"
    );
}

#[tokio::test]
async fn positions_and_unconsumed_events_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    let events: Vec<_> = (0..10).map(|i| new_event(&format!("c{i}"), "t.a", &CompanyCreated::default())).collect();
    {
        let bus = MemoryBus::open(&path).await.expect("open");
        bus.publish_all(&events).await.expect("publish");
        let mut stream = bus.subscribe(&ConsumerSpec::new("reader", "t.a")).await.expect("subscribe");
        for expected in &events[..4] {
            let d = stream.next().await.expect("some").expect("ok");
            assert_eq!(&d.event, expected);
            d.ack().await.expect("ack");
        }
        bus.flush().await.expect("flush");
    }
    let bus = MemoryBus::open(&path).await.expect("reopen");
    // Publishing an already stored event again is still a no-op after the reopen.
    bus.publish(&events[0]).await.expect("republish");
    let mut stream = bus.subscribe(&ConsumerSpec::new("reader", "t.a")).await.expect("subscribe");
    for expected in &events[4..] {
        let d = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("delivery").expect("some");
        let d = d.expect("ok");
        assert_eq!(&d.event, expected, "resumes after the last acknowledged event");
        d.ack().await.expect("ack");
    }
    assert!(tokio::time::timeout(Duration::from_millis(200), stream.next()).await.is_err(), "nothing more");
    // A consumer that never ran before the reopen still gets every event.
    let mut late = bus.subscribe(&ConsumerSpec::new("late", "t.a")).await.expect("subscribe");
    let d = late.next().await.expect("some").expect("ok");
    assert_eq!(d.event, events[0]);
}
