//! The outbox relays what a committed transaction stored, and only that; the inbox makes a
//! second delivery a no-op. Runs on SQLite and, when configured, Postgres.

use gomark_events::bus::{ConsumerSpec, EventBus};
use gomark_events::envelope::new_event;
use gomark_events::memory::MemoryBus;
use gomark_events::relay::{OutboxRelay, RelayWaker};
use gomark_events::{inbox, outbox};
use gomark_proto::events::v1::CompanyCreated;
use gomark_storage::{Database, Migrations};
use std::sync::Arc;
use std::time::Duration;

static PG: gomark_storage::sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations/postgres");
static SQLITE: gomark_storage::sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations/sqlite");

#[tokio::test]
async fn committed_events_are_relayed_once_and_rolled_back_ones_never() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let db = Database::connect(&tdb.settings).await.expect("connect");
        db.migrate(&Migrations { postgres: &PG, sqlite: &SQLITE }).await.expect("migrate");
        let bus = Arc::new(MemoryBus::new());

        let kept = new_event("c1", "company.created", &CompanyCreated::default());
        let mut tx = db.begin().await.expect("begin");
        outbox::enqueue(&mut tx, &kept).await.expect("enqueue");
        tx.commit().await.expect("commit");

        let lost = new_event("c1", "company.created", &CompanyCreated::default());
        let mut tx = db.begin().await.expect("begin");
        outbox::enqueue(&mut tx, &lost).await.expect("enqueue");
        tx.rollback().await.expect("rollback");

        let relay = OutboxRelay::new(db.clone(), bus.clone(), RelayWaker::default());
        assert_eq!(relay.relay_once().await.expect("relay"), 1, "{}", tdb.label);
        assert_eq!(relay.relay_once().await.expect("relay"), 0, "{}: nothing twice", tdb.label);

        let mut stream = bus.subscribe(&ConsumerSpec::new("t", "company.created")).await.expect("subscribe");
        let d = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("delivery")
            .expect("some")
            .expect("ok");
        assert_eq!(d.event, kept, "{}", tdb.label);

        let mut tx = db.begin().await.expect("begin");
        assert!(inbox::claim(&mut tx, "t", &kept.id).await.expect("claim"), "{}", tdb.label);
        tx.commit().await.expect("commit");
        let mut tx = db.begin().await.expect("begin");
        assert!(!inbox::claim(&mut tx, "t", &kept.id).await.expect("claim"), "{}: second claim refused", tdb.label);
        tx.rollback().await.expect("rollback");
        db.close().await;
    }
}

#[tokio::test]
async fn a_backlog_leaves_in_order_batches_and_each_row_is_deleted_once_sent() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let db = Database::connect(&tdb.settings).await.expect("connect");
        db.migrate(&Migrations { postgres: &PG, sqlite: &SQLITE }).await.expect("migrate");
        let bus = Arc::new(MemoryBus::new());
        let events: Vec<_> =
            (0..1250).map(|i| new_event(&format!("c{i}"), "company.created", &CompanyCreated::default())).collect();
        let mut tx = db.begin().await.expect("begin");
        // One at a time and many per statement: both keep the order.
        outbox::enqueue(&mut tx, &events[0]).await.expect("enqueue");
        outbox::enqueue_all(&mut tx, &events[1..]).await.expect("enqueue");
        tx.commit().await.expect("commit");

        let relay = OutboxRelay::new(db.clone(), bus.clone(), RelayWaker::default());
        // The backlog gauges' source: what waits, and for how long.
        let backlog = relay.backlog().await.expect("backlog");
        assert_eq!(backlog.pending, 1250, "{}", tdb.label);
        assert!((0..60_000).contains(&backlog.oldest_age_ms), "{}: {backlog:?}", tdb.label);
        let mut sizes = Vec::new();
        loop {
            let n = relay.relay_once().await.expect("relay");
            sizes.push(n);
            if n == 0 {
                break;
            }
        }
        assert_eq!(sizes, vec![500, 500, 250, 0], "{}", tdb.label);
        let empty = relay.backlog().await.expect("backlog");
        assert_eq!((empty.pending, empty.oldest_age_ms), (0, 0), "{}", tdb.label);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(db.pool()).await.expect("count");
        assert_eq!(left, 0, "{}: a sent row is deleted, not kept", tdb.label);

        let mut stream = bus.subscribe(&ConsumerSpec::new("t", "company.created")).await.expect("subscribe");
        for expected in &events {
            let d = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("delivery")
                .expect("some")
                .expect("ok");
            assert_eq!(d.event.id, expected.id, "{}: outbox order kept", tdb.label);
            d.ack().await.expect("ack");
        }
        db.close().await;
    }
}
