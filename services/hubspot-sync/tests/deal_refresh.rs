//! Re-reading queued deals: each version published once however many replicas read the same
//! batch (one conditional upsert per batch decides), deletions once, deals queued while
//! the portal's budget is spent gathered into one batch read instead of one read each, and a
//! change arriving while its deal's re-read is in flight read again, never dropped; a
//! webhook's stage or pipeline change published at once as `deal.stage_changed`.

use gomark_cache::MemoryCache;
use gomark_events::relay::RelayWaker;
use gomark_hubspot_sync::budget::PortalBudget;
use gomark_hubspot_sync::credentials::{Credential, Vault};
use gomark_hubspot_sync::{DealSync, DealSyncSettings, MIGRATIONS, Portals};
use gomark_platform::Shutdown;
use gomark_proto::hubspot_sync::v1::WebhookEvent;
use gomark_storage::Database;
use hubspot_client::{ClientConfig, HubSpotClient};
use hubspot_sim::{HubSpotSim, SimConfig};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

const PORTAL: u64 = 7070;
const TOKEN: &str = "refresh-token";

async fn setup(db: &Database, sim_config: SimConfig) -> (HubSpotSim, HubSpotClient, Portals) {
    let (sim, addr) = hubspot_sim::spawn(sim_config, "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    sim.register_portal(TOKEN, PORTAL);
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault);
    portals
        .register("c1", &PORTAL.to_string(), &Credential::PrivateApp { token: TOKEN.into() })
        .await
        .expect("register");
    let client = HubSpotClient::new(ClientConfig { base_url: format!("http://{addr}"), ..ClientConfig::default() })
        .expect("client")
        .with_budget(Arc::new(PortalBudget::new(Arc::new(MemoryCache::new("refresh")))));
    (sim, client, portals)
}

fn webhooks(ids: &[String], event: &mut u64) -> Vec<WebhookEvent> {
    ids.iter()
        .map(|id| {
            *event += 1;
            WebhookEvent {
                portal_id: PORTAL,
                object_id: id.parse().expect("numeric id"),
                event_id: *event,
                occurred_time: gomark_proto::time::timestamp_opt(gomark_storage::now_ms()),
                subscription_type: "deal.propertyChange".into(),
                ..Default::default()
            }
        })
        .collect()
}

/// The events in the outbox, oldest first.
async fn outbox(db: &Database) -> Vec<gomark_events::EventEnvelope> {
    let rows = sqlx::query("SELECT envelope FROM outbox ORDER BY seq").fetch_all(db.pool()).await.expect("outbox");
    rows.iter()
        .map(|r| {
            let bytes: Vec<u8> = r.try_get("envelope").expect("envelope");
            <gomark_events::EventEnvelope as prost::Message>::decode(bytes.as_slice()).expect("decode")
        })
        .collect()
}

async fn outbox_count(db: &Database, event_type: &str) -> usize {
    outbox(db).await.iter().filter(|e| e.r#type == event_type).count()
}

/// A `deal.propertyChange` webhook: `property` of `deal` set to `value` at `at_ms`.
fn property_change(event_id: u64, deal: u64, property: &str, value: &str, at_ms: i64) -> WebhookEvent {
    WebhookEvent {
        portal_id: PORTAL,
        object_id: deal,
        event_id,
        occurred_time: gomark_proto::time::timestamp_opt(at_ms),
        subscription_type: "deal.propertyChange".into(),
        property_name: property.into(),
        property_value: value.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn two_replicas_reading_the_same_batches_publish_each_version_once() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let db = Database::connect(&tdb.settings).await.expect("connect");
        let (sim, client, portals) = setup(&db, SimConfig::default()).await;
        let replica = || {
            DealSync::new(
                db.clone(),
                portals.clone(),
                client.clone(),
                RelayWaker::default(),
                DealSyncSettings::default(),
            )
        };
        let (a, b) = (replica(), replica());
        let mut event = 0;
        // More than one batch read and more than one statement's rows.
        let ids = sim.create_deals(TOKEN, 250, "appointmentscheduled", "default");
        a.ingest(webhooks(&ids, &mut event)).await.expect("ingest");
        let drain = |sync: DealSync| async move { while sync.refresh_queued("c1").await.expect("refresh") > 0 {} };
        tokio::join!(drain(a.clone()), drain(b.clone()));
        assert_eq!(outbox_count(&db, "deal.upserted").await, 250, "{label}: each new deal once");

        // One deal changes, one is deleted, all are queued again (a resync): only those two
        // are news, on whichever replica reads them.
        tokio::time::sleep(Duration::from_millis(5)).await;
        sim.update_deal(TOKEN, &ids[7], [("dealname", "Renamed")]).expect("update");
        assert!(sim.delete_deal(TOKEN, &ids[9]));
        a.ingest(webhooks(&ids, &mut event)).await.expect("ingest");
        tokio::join!(drain(a.clone()), drain(b.clone()));
        assert_eq!(outbox_count(&db, "deal.upserted").await, 251, "{label}: the changed deal's new version once");
        assert_eq!(outbox_count(&db, "deal.deleted").await, 1, "{label}: the deletion once");
        a.ingest(webhooks(&ids[..20], &mut event)).await.expect("ingest");
        drain(b.clone()).await;
        assert_eq!(outbox_count(&db, "deal.upserted").await, 251, "{label}: nothing twice");
        assert_eq!(outbox_count(&db, "deal.deleted").await, 1, "{label}: a deletion once");
        db.close().await;
    }
}

/// The portal allows one request per 2 s. Deals queued while its budget is spent wait for the
/// next slot together: one batch read for all of them, not one for the first (picked before
/// the wait) and another for those queued during it.
#[tokio::test]
async fn deals_queued_while_the_budget_is_spent_share_one_read() {
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("connect");
    let config = SimConfig { burst_limit: 1, burst_window: Duration::from_secs(2), ..SimConfig::default() };
    let (sim, client, portals) = setup(&db, config).await;
    let settings = DealSyncSettings { interval_secs: 3600, queue_poll_ms: 20, ..DealSyncSettings::default() };
    let sync = DealSync::new(db.clone(), portals, client.clone(), RelayWaker::default(), settings);
    let shutdown = Shutdown::new();
    let running = tokio::spawn(sync.clone().run(shutdown.clone()));
    // The backfill (one list call) finishes first.
    let started = tokio::time::Instant::now();
    while sync.status("c1").await.expect("status").backfill_state != "done" {
        assert!(started.elapsed() < Duration::from_secs(10), "backfill done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids = sim.create_deals(TOKEN, 3, "appointmentscheduled", "default");
    // Spend the window: the next slot is 2 s after this call.
    let token = hubspot_client::AccessToken::new(TOKEN.to_owned()).for_portal(PORTAL.to_string());
    client.list_deal_properties(&token).await.expect("spend the budget");
    sim.clear_requests();
    let mut event = 0;
    for id in &ids {
        sync.ingest(webhooks(std::slice::from_ref(id), &mut event)).await.expect("ingest");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    while outbox_count(&db, "deal.upserted").await < 3 {
        assert!(started.elapsed() < Duration::from_secs(20), "all three published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reads: Vec<_> =
        sim.requests().into_iter().filter(|r| r.path.ends_with("/batch/read") && r.status == 200).collect();
    assert_eq!(reads.len(), 1, "one read for the three deals: {reads:?}");
    assert_eq!(sim.rate_limited_count(PORTAL), 0, "within the budget");
    shutdown.trigger();
    running.await.expect("run");
    db.close().await;
}

/// A webhook for a deal whose re-read is in flight (HubSpot answered, the publish not yet
/// committed) must leave the deal queued: what was read predates that change. Postgres only:
/// the test holds the re-read between its HubSpot read and its commit with a table lock,
/// which SQLite's single writer would turn into blocking the webhook too.
#[tokio::test]
async fn a_change_during_its_deals_reread_is_read_again() {
    let Some(tdb) = gomark_testkit::TestDatabase::postgres() else {
        return;
    };
    let db = Database::connect(&tdb.settings).await.expect("connect");
    let (sim, client, portals) = setup(&db, SimConfig::default()).await;
    let sync = DealSync::new(db.clone(), portals, client, RelayWaker::default(), DealSyncSettings::default());
    let mut event = 0;
    let ids = sim.create_deals(TOKEN, 1, "appointmentscheduled", "default");
    sync.ingest(webhooks(&ids, &mut event)).await.expect("ingest");

    // The re-read's publish writes deal_versions first: hold it there.
    let mut hold = db.begin().await.expect("begin");
    sqlx::query("LOCK TABLE deal_versions IN EXCLUSIVE MODE").execute(&mut *hold).await.expect("lock");
    let reread = tokio::spawn({
        let sync = sync.clone();
        async move { sync.refresh_queued("c1").await }
    });
    let started = tokio::time::Instant::now();
    loop {
        let waiting: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM pg_locks WHERE NOT granted AND relation = 'deal_versions'::regclass",
        )
        .fetch_one(db.pool())
        .await
        .expect("pg_locks")
        .try_get("n")
        .expect("n");
        if waiting > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the re-read reaches its publish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // HubSpot has answered the re-read; now the deal changes and its webhook arrives.
    tokio::time::sleep(Duration::from_millis(5)).await;
    sim.update_deal(TOKEN, &ids[0], [("dealname", "Changed mid-read")]).expect("update");
    sync.ingest(webhooks(&ids, &mut event)).await.expect("ingest during the read");
    hold.commit().await.expect("release");
    assert_eq!(reread.await.expect("join").expect("refresh"), 1);
    assert_eq!(outbox_count(&db, "deal.upserted").await, 1, "the version read before the change");

    assert_eq!(sync.status("c1").await.expect("status").queued_deals, 1, "the changed deal is still queued");
    assert_eq!(sync.refresh_queued("c1").await.expect("refresh"), 1);
    assert_eq!(outbox_count(&db, "deal.upserted").await, 2, "the change is published, not dropped");
    assert_eq!(sync.refresh_queued("c1").await.expect("refresh"), 0, "then the queue is empty");
    db.close().await;
}

/// The `deal.stage_changed` events in the outbox.
async fn moves_in_outbox(db: &Database) -> Vec<gomark_proto::events::v1::DealStageChanged> {
    outbox(db)
        .await
        .into_iter()
        .filter(|e| e.r#type == "deal.stage_changed")
        .map(|e| gomark_events::envelope::decode_payload(&e).expect("payload"))
        .collect()
}

#[tokio::test]
async fn a_webhooks_stage_and_pipeline_change_is_published_at_once_and_once() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let db = Database::connect(&tdb.settings).await.expect("connect");
        let (_sim, client, portals) = setup(&db, SimConfig::default()).await;
        let sync = DealSync::new(db.clone(), portals, client, RelayWaker::default(), DealSyncSettings::default());
        let at = gomark_storage::now_ms();
        let change = |event_id: u64, deal: u64, property: &str, value: &str| {
            property_change(event_id, deal, property, value, at)
        };
        // A move to another pipeline (two events, one instant), a stage move of another
        // deal, an amount change (left to the re-read) and a creation.
        let batch = vec![
            change(1, 11, "pipeline", "renewals"),
            change(2, 11, "dealstage", "qualifiedtobuy"),
            change(3, 12, "dealstage", "closedwon"),
            change(4, 13, "amount", "500"),
            WebhookEvent { subscription_type: "deal.creation".into(), ..change(5, 14, "", "") },
        ];
        let ingested = sync.ingest(batch.clone()).await.expect("ingest");
        assert_eq!(ingested.accepted, 5, "{label}");
        let moves = moves_in_outbox(&db).await;
        let summary: Vec<(String, Option<String>, Option<String>, i64)> = moves
            .iter()
            .map(|m| (m.deal_id.clone(), m.pipeline_id.clone(), m.stage_id.clone(), m.changed_at_millis()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("11".into(), Some("renewals".into()), Some("qualifiedtobuy".into()), at),
                ("12".into(), None, Some("closedwon".into()), at),
            ],
            "{label}: one event per deal and instant"
        );
        assert!(moves.iter().all(|m| m.company_id == "c1" && m.portal_id == PORTAL.to_string()), "{label}");
        // Delivered again: duplicates publish nothing.
        sync.ingest(batch.clone()).await.expect("ingest");
        assert_eq!(moves_in_outbox(&db).await.len(), 2, "{label}: a duplicate moves nothing");
        db.close().await;
    }
}

/// Stage moves already published wait (up to a second) to share one re-read; a change the
/// webhook gave no value for (here a creation) is read at the usual pace, and takes the
/// waiting moves with it.
#[tokio::test]
async fn published_moves_wait_to_share_a_read_and_other_changes_do_not() {
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("connect");
    let (sim, client, portals) = setup(&db, SimConfig::default()).await;
    let settings = DealSyncSettings { interval_secs: 3600, queue_poll_ms: 20, ..DealSyncSettings::default() };
    let sync = DealSync::new(db.clone(), portals, client, RelayWaker::default(), settings);
    let shutdown = Shutdown::new();
    let running = tokio::spawn(sync.clone().run(shutdown.clone()));
    let started = tokio::time::Instant::now();
    while sync.status("c1").await.expect("status").backfill_state != "done" {
        assert!(started.elapsed() < Duration::from_secs(10), "backfill done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reads = || sim.requests().into_iter().filter(|r| r.path.ends_with("/batch/read") && r.status == 200).count();
    let ids = sim.create_deals(TOKEN, 4, "appointmentscheduled", "default");
    let mut event = 0;
    let moved = |id: &str, event: &mut u64| {
        *event += 1;
        sim.update_deal(TOKEN, id, [("dealstage", "qualifiedtobuy")]).expect("move");
        let deal = id.parse().expect("numeric id");
        property_change(*event, deal, "dealstage", "qualifiedtobuy", gomark_storage::now_ms())
    };
    sim.clear_requests();

    // Three moves 100 ms apart: no read before the first has waited its second, then one.
    let first = tokio::time::Instant::now();
    for id in &ids[..3] {
        sync.ingest(vec![moved(id, &mut event)]).await.expect("ingest");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while outbox_count(&db, "deal.upserted").await < 3 {
        assert!(first.elapsed() < Duration::from_secs(5), "the moves are re-read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(first.elapsed() >= Duration::from_millis(900), "read after {:?}, before the wait", first.elapsed());
    assert_eq!(reads(), 1, "one read for the three moves");

    // A move, then a change without a value: both read at once, together.
    sim.clear_requests();
    sync.ingest(vec![moved(&ids[3], &mut event)]).await.expect("ingest");
    sync.ingest(webhooks(std::slice::from_ref(&ids[0]), &mut event)).await.expect("ingest");
    let second = tokio::time::Instant::now();
    while reads() == 0 {
        assert!(second.elapsed() < Duration::from_secs(5), "read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(second.elapsed() < Duration::from_millis(500), "read after {:?}: without the wait", second.elapsed());
    while outbox_count(&db, "deal.upserted").await < 4 {
        assert!(second.elapsed() < Duration::from_secs(5), "the fourth move is re-read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(reads(), 1, "the waiting move shares the read");
    shutdown.trigger();
    running.await.expect("run");
    db.close().await;
}

/// Webhook requests arriving together share transactions (a group commit): each still gets
/// its own counts, an event in two of them is taken once, and each move is published once.
#[tokio::test]
async fn concurrent_webhook_batches_each_get_their_own_counts_and_each_move_is_published_once() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let db = Database::connect(&tdb.settings).await.expect("connect");
        let (_sim, client, portals) = setup(&db, SimConfig::default()).await;
        let sync = DealSync::new(db.clone(), portals, client, RelayWaker::default(), DealSyncSettings::default());
        let at = gomark_storage::now_ms();
        let change = |n: u64| property_change(n, 1000 + n, "dealstage", "closedwon", at);
        // 40 batches of 5 moves; each after the first also carries the previous batch's
        // first event again, as a retried delivery overlapping a new one would.
        let batches: Vec<Vec<WebhookEvent>> = (0..40u64)
            .map(|b| {
                let mut batch: Vec<WebhookEvent> = (b * 5..b * 5 + 5).map(change).collect();
                if b > 0 {
                    batch.push(change((b - 1) * 5));
                }
                batch
            })
            .collect();
        let calls: Vec<_> = batches
            .iter()
            .cloned()
            .map(|batch| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.ingest(batch).await })
            })
            .collect();
        let (mut accepted, mut duplicates) = (0, 0);
        for (call, batch) in calls.into_iter().zip(&batches) {
            let done = call.await.expect("join").expect("ingest");
            assert_eq!((done.accepted + done.duplicates) as usize, batch.len(), "{label}: a count per event");
            assert_eq!(done.unknown_portal, 0, "{label}");
            accepted += done.accepted;
            duplicates += done.duplicates;
        }
        assert_eq!((accepted, duplicates), (200, 39), "{label}");
        let mut deals: Vec<String> = moves_in_outbox(&db).await.into_iter().map(|m| m.deal_id).collect();
        deals.sort();
        let mut expected: Vec<String> = (1000..1200).map(|d: u64| d.to_string()).collect();
        expected.sort();
        assert_eq!(deals, expected, "{label}: each move published once");
        db.close().await;
    }
}
