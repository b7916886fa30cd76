//! Every producing service's migration to an outbox whose sent rows are deleted keeps what
//! waits, in order, drops what an older release had marked sent, and lets the relay carry on.
//! Runs each service's real migrations on SQLite and, when configured, Postgres.

use gomark_events::bus::{ConsumerSpec, EventBus};
use gomark_events::envelope::new_event;
use gomark_events::memory::MemoryBus;
use gomark_events::outbox;
use gomark_events::relay::{OutboxRelay, RelayWaker};
use gomark_proto::events::v1::CompanyCreated;
use gomark_storage::sqlx::migrate::Migrator;
use gomark_storage::sqlx::{self, Row};
use gomark_storage::{Database, Migrations};
use std::sync::Arc;
use std::time::Duration;

static HUBSPOT_PG: Migrator = sqlx::migrate!("../../migrations/hubspot-sync/postgres");
static HUBSPOT_SQLITE: Migrator = sqlx::migrate!("../../migrations/hubspot-sync/sqlite");
static ORCHESTRATOR_PG: Migrator = sqlx::migrate!("../../migrations/orchestrator/postgres");
static ORCHESTRATOR_SQLITE: Migrator = sqlx::migrate!("../../migrations/orchestrator/sqlite");
static UPSO_PG: Migrator = sqlx::migrate!("../../migrations/upso-cadence/postgres");
static UPSO_SQLITE: Migrator = sqlx::migrate!("../../migrations/upso-cadence/sqlite");

/// The migrations before the one named `outbox_deleted_when_sent`.
fn before_deleting(migrator: &'static Migrator) -> &'static Migrator {
    let last = migrator
        .migrations
        .iter()
        .find(|m| m.description == "outbox deleted when sent")
        .map(|m| m.version)
        .expect("the service has the migration");
    let kept: Vec<_> = migrator.migrations.iter().filter(|m| m.version < last).cloned().collect();
    Box::leak(Box::new(Migrator { migrations: kept.into(), ..Migrator::DEFAULT }))
}

async fn rows(db: &Database) -> Vec<(String, bool)> {
    sqlx::query("SELECT event_id, published_at FROM outbox ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .expect("outbox")
        .iter()
        .map(|r| {
            let published: Option<i64> = r.try_get("published_at").expect("published_at");
            (r.try_get("event_id").expect("event_id"), published.is_some())
        })
        .collect()
}

#[tokio::test]
async fn each_service_outbox_keeps_what_waits_and_drops_what_was_sent() {
    let services: [(&str, &'static Migrator, &'static Migrator); 3] = [
        ("hubspot-sync", &HUBSPOT_PG, &HUBSPOT_SQLITE),
        ("orchestrator", &ORCHESTRATOR_PG, &ORCHESTRATOR_SQLITE),
        ("upso-cadence", &UPSO_PG, &UPSO_SQLITE),
    ];
    for (service, pg, sqlite) in services {
        for tdb in gomark_testkit::TestDatabase::all() {
            let label = format!("{service} on {}", tdb.label);
            let db = Database::connect(&tdb.settings).await.expect("connect");
            let old = Migrations { postgres: before_deleting(pg), sqlite: before_deleting(sqlite) };
            db.migrate(&old).await.expect("older migrations");

            // An older release's outbox: one event it had marked sent, two waiting.
            let events: Vec<_> =
                (0..3).map(|i| new_event(&format!("c{i}"), "company.created", &CompanyCreated::default())).collect();
            let mut tx = db.begin().await.expect("begin");
            outbox::enqueue_all(&mut tx, &events).await.expect("enqueue");
            tx.commit().await.expect("commit");
            sqlx::query("UPDATE outbox SET published_at = 1 WHERE event_id = $1")
                .bind(events[0].id.clone())
                .execute(db.pool())
                .await
                .expect("mark");

            db.migrate(&Migrations { postgres: pg, sqlite }).await.expect("every migration");
            let waiting = vec![(events[1].id.clone(), false), (events[2].id.clone(), false)];
            assert_eq!(rows(&db).await, waiting, "{label}: the waiting events, in order; the sent one gone");

            // New events go after them, and the relay sends all and keeps none.
            let mut tx = db.begin().await.expect("begin");
            outbox::enqueue(&mut tx, &events[1]).await.expect("the same id twice is no longer refused");
            tx.commit().await.expect("commit");
            let bus = Arc::new(MemoryBus::new());
            let relay = OutboxRelay::new(db.clone(), bus.clone(), RelayWaker::default());
            assert_eq!(relay.relay_once().await.expect("relay"), 3, "{label}");
            assert_eq!(rows(&db).await, vec![], "{label}: sent rows are deleted");
            let mut stream = bus.subscribe(&ConsumerSpec::new("t", "company.created")).await.expect("subscribe");
            for expected in [&events[1], &events[2]] {
                let d = tokio::time::timeout(Duration::from_secs(5), stream.next())
                    .await
                    .expect("delivery")
                    .expect("some")
                    .expect("ok");
                assert_eq!(d.event.id, expected.id, "{label}: order kept");
                d.ack().await.expect("ack");
            }
            db.close().await;
        }
    }
}
