//! The webhooks journal reader: every entry read once by two replicas sharing a database,
//! duplicates across the journal and push webhooks taken once, and an expired offset
//! recovered with a snapshot (every deal re-read) before reading on from the latest entry.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gomark_events::relay::RelayWaker;
use gomark_hubspot_sync::credentials::{ClientCredentials, Credential, Vault};
use gomark_hubspot_sync::{DealSync, DealSyncSettings, JournalReader, JournalSettings, MIGRATIONS, Portals};
use gomark_proto::hubspot_sync::v1::WebhookEvent;
use gomark_storage::Database;
use hubspot_client::{ClientConfig, HubSpotClient};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const PORTAL: &str = "5150";

/// A fake HubSpot with a journal of `entries` (offset `o{i}`; entry i holds deals 2i, 2i+1),
/// offsets before `expired_before` answering 404, and a deal list for snapshots.
#[derive(Default)]
struct Fake {
    base: String,
    entries: usize,
    expired_before: usize,
    downloads: HashMap<usize, usize>,
    lists: usize,
    tokens: usize,
    /// HubSpot refuses every call (an outage, revoked credentials).
    down: bool,
}

type Shared = Arc<Mutex<Fake>>;

fn entry(f: &Fake, i: usize) -> Value {
    json!({"currentOffset": format!("o{i}"), "expiresAt": "2026-12-03T10:00:00Z", "url": format!("{}/files/{i}", f.base)})
}

async fn token(State(s): State<Shared>) -> Response {
    let mut f = s.lock().expect("lock");
    if f.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    f.tokens += 1;
    axum::Json(json!({"access_token": "cc-token", "expires_in": 1800})).into_response()
}

async fn earliest(State(s): State<Shared>) -> Response {
    let f = s.lock().expect("lock");
    if f.entries == 0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        axum::Json(entry(&f, f.expired_before)).into_response()
    }
}

async fn latest(State(s): State<Shared>) -> Response {
    let f = s.lock().expect("lock");
    if f.entries == 0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        axum::Json(entry(&f, f.entries - 1)).into_response()
    }
}

async fn next(State(s): State<Shared>, Path(offset): Path<String>) -> Response {
    let f = s.lock().expect("lock");
    if f.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Some(i) = offset.strip_prefix('o').and_then(|i| i.parse::<usize>().ok()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if i < f.expired_before {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"status": "error", "message": "expired", "category": "OBJECT_NOT_FOUND"})),
        )
            .into_response();
    }
    if i + 1 >= f.entries {
        return StatusCode::NO_CONTENT.into_response();
    }
    axum::Json(entry(&f, i + 1)).into_response()
}

async fn file(State(s): State<Shared>, Path(i): Path<usize>) -> impl IntoResponse {
    *s.lock().expect("lock").downloads.entry(i).or_default() += 1;
    let event = |deal: usize| json!({"eventId": 1000 + deal, "portalId": PORTAL.parse::<u64>().unwrap_or(0), "objectId": deal, "objectTypeId": "0-3", "occurredAt": 1_700_000_000_000u64 + deal as u64, "subscriptionType": "object.creation", "changeSource": "INTEGRATION"});
    axum::Json(json!([event(2 * i), event(2 * i + 1)]))
}

fn deal(id: usize) -> Value {
    json!({"id": id.to_string(), "properties": {"dealname": format!("D{id}"), "dealstage": "appointmentscheduled", "pipeline": "default", "hs_lastmodifieddate": "2026-12-01T00:00:00Z"}, "createdAt": "2026-12-01T00:00:00Z", "updatedAt": "2026-12-01T00:00:00Z", "archived": false})
}

async fn list_deals(State(s): State<Shared>) -> impl IntoResponse {
    let mut f = s.lock().expect("lock");
    f.lists += 1;
    axum::Json(json!({"results": (0..2 * f.entries).map(deal).collect::<Vec<_>>()}))
}

struct Setup {
    fake: Shared,
    db: Database,
    client: HubSpotClient,
    portals: Portals,
    deals: DealSync,
}

async fn setup(entries: usize) -> (Setup, gomark_testkit::TestDatabase) {
    let fake: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/oauth/2026-03/token", post(token))
        .route("/webhooks-journal/journal-local/2026-03/earliest", get(earliest))
        .route("/webhooks-journal/journal-local/2026-03/latest", get(latest))
        .route("/webhooks-journal/journal-local/2026-03/offset/{offset}/next", get(next))
        .route("/files/{i}", get(file))
        .route("/crm/objects/2026-09/deals", get(list_deals))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    {
        let mut f = fake.lock().expect("lock");
        f.base = format!("http://{addr}");
        f.entries = entries;
    }
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault);
    portals.register("c1", PORTAL, &Credential::ServiceKey { token: "sk-1".into() }).await.expect("register");
    let cc = ClientCredentials { client_id: "app".into(), client_secret: "cs-secret".into() };
    portals.set_journal_credential("c1", Some(&cc)).await.expect("journal credential");
    let client = HubSpotClient::new(ClientConfig {
        base_url: format!("http://{addr}"),
        max_retries: 0,
        ..ClientConfig::default()
    })
    .expect("client");
    let deals =
        DealSync::new(db.clone(), portals.clone(), client.clone(), RelayWaker::default(), DealSyncSettings::default());
    (Setup { fake, db, client, portals, deals }, tdb)
}

fn reader(s: &Setup) -> JournalReader {
    JournalReader::new(s.db.clone(), s.portals.clone(), s.client.clone(), s.deals.clone(), JournalSettings::default())
}

async fn queued(db: &Database) -> Vec<String> {
    let rows = sqlx::query("SELECT deal_id FROM deal_refresh_queue ORDER BY deal_id")
        .fetch_all(db.pool())
        .await
        .expect("queue");
    rows.iter().map(|r| r.try_get::<String, _>("deal_id").expect("id")).collect()
}

#[tokio::test]
async fn two_replicas_read_every_entry_exactly_once() {
    let (s, _tdb) = setup(30).await;
    let (a, b) = (reader(&s), reader(&s));
    let mut leased_elsewhere = 0;
    for _ in 0..10 {
        let (pa, pb) = tokio::join!(a.poll("c1"), b.poll("c1"));
        for pass in [pa.expect("a"), pb.expect("b")] {
            leased_elsewhere += u32::from(pass.leased_elsewhere);
        }
    }
    assert!(leased_elsewhere >= 10, "one replica holds the lease, the other reads nothing: {leased_elsewhere}");
    let downloads = s.fake.lock().expect("lock").downloads.clone();
    assert_eq!(downloads.len(), 30, "every entry read");
    assert!(downloads.values().all(|n| *n == 1), "none twice: {downloads:?}");
    let mut expected: Vec<String> = (0..60).map(|d| d.to_string()).collect();
    expected.sort();
    assert_eq!(queued(&s.db).await, expected, "each deal queued for a re-read");
    let status = a.status("c1").await.expect("status");
    assert_eq!(status.offset, "o29");
    assert!(status.caught_up_at_ms > 0 && status.last_error.is_empty(), "{status:?}");
    assert_eq!(
        s.fake.lock().expect("lock").tokens,
        1,
        "one client-credentials token, cached; the other replica never read"
    );

    // The same event pushed as a webhook afterwards is a duplicate; a new one is not.
    let pushed = |event_id: u64, object_id: u64| WebhookEvent {
        event_id,
        subscription_id: 1,
        portal_id: PORTAL.parse().expect("portal"),
        occurred_time: Some(gomark_proto::time::timestamp(1_700_000_000_000 + object_id as i64)),
        subscription_type: "deal.creation".into(),
        object_id,
        ..WebhookEvent::default()
    };
    let done = s.deals.ingest(vec![pushed(1003, 3), pushed(9999, 77)]).await.expect("ingest");
    assert_eq!((done.accepted, done.duplicates), (1, 1));
}

/// The other order: events pushed as webhooks first are duplicates when the journal brings
/// them; only the journal's other events queue a re-read.
#[tokio::test]
async fn a_sole_process_takes_back_the_lease_a_dead_one_left_at_once() {
    let (s, _tdb) = setup(5).await;
    let dead = reader(&s);
    assert!(!dead.poll("c1").await.expect("first run").leased_elsewhere);
    // The first run is killed here, its lease still 30 s long. A restart waits it out...
    let restarted = reader(&s);
    assert!(restarted.poll("c1").await.expect("restart").leased_elsewhere, "a live lease is respected");
    // ...unless nothing else can use this database (embedded mode, its folder locked).
    assert_eq!(restarted.take_back_leases().await.expect("take back"), 1);
    assert_eq!(restarted.take_back_leases().await.expect("again"), 0, "its own lease is not another's");
    assert!(!restarted.poll("c1").await.expect("restart").leased_elsewhere, "read at once");
    assert!(dead.poll("c1").await.expect("the old owner").leased_elsewhere, "the lease is the restarted reader's");
}

#[tokio::test]
async fn events_pushed_first_are_duplicates_in_the_journal() {
    let (s, _tdb) = setup(2).await;
    let pushed = |object_id: u64| WebhookEvent {
        event_id: 1000 + object_id,
        subscription_id: 1,
        portal_id: PORTAL.parse().expect("portal"),
        occurred_time: Some(gomark_proto::time::timestamp(1_700_000_000_000 + object_id as i64)),
        subscription_type: "deal.creation".into(),
        object_id,
        ..WebhookEvent::default()
    };
    let done = s.deals.ingest(vec![pushed(1), pushed(2)]).await.expect("ingest");
    assert_eq!((done.accepted, done.duplicates), (2, 0));
    assert_eq!(queued(&s.db).await, ["1", "2"]);
    // Those two re-reads done; then the journal (deals 0 to 3) is read.
    sqlx::query("DELETE FROM deal_refresh_queue").execute(s.db.pool()).await.expect("dequeue");
    let pass = reader(&s).poll("c1").await.expect("journal");
    assert_eq!((pass.entries, pass.events), (2, 4), "{pass:?}");
    assert_eq!(queued(&s.db).await, ["0", "3"], "the pushed events were taken once, by the webhook");
}

#[tokio::test]
async fn an_expired_offset_is_recovered_with_a_snapshot() {
    let (s, _tdb) = setup(5).await;
    let r = reader(&s);
    let first = r.poll("c1").await.expect("first pass");
    assert_eq!((first.entries, first.caught_up), (5, true));
    // Three days pass: the journal now starts at entry 8, our offset o4 is gone.
    {
        let mut f = s.fake.lock().expect("lock");
        f.entries = 12;
        f.expired_before = 8;
    }
    let pass = r.poll("c1").await.expect("recovering pass");
    assert!(pass.recovered && pass.caught_up, "{pass:?}");
    assert_eq!(pass.entries, 0, "the snapshot covers up to the latest entry");
    let status = r.status("c1").await.expect("status");
    assert_eq!((status.offset.as_str(), status.recoveries), ("o11", 1));
    assert_eq!(s.fake.lock().expect("lock").lists, 1, "one snapshot");
    let published: i64 = sqlx::query("SELECT COUNT(*) AS n FROM deal_versions WHERE company_id = 'c1'")
        .fetch_one(s.db.pool())
        .await
        .expect("versions")
        .try_get("n")
        .expect("n");
    assert_eq!(published, 24, "every deal of the snapshot published");
    // Reading goes on after the latest entry.
    s.fake.lock().expect("lock").entries = 13;
    let more = r.poll("c1").await.expect("after recovery");
    assert_eq!(more.entries, 1);
    assert_eq!(r.status("c1").await.expect("status").offset, "o12");
}

/// A reader that cannot reach HubSpot is the one whose offset ages: it still warns (metric,
/// gauge, sync status) once the offset may be two days old, a day before HubSpot drops it.
#[test]
fn a_failing_reader_warns_well_before_its_offset_leaves_the_window() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let (s, _tdb) = setup(3).await;
            let r = reader(&s);
            assert!(r.poll("c1").await.expect("first pass").caught_up);
            s.fake.lock().expect("lock").down = true;
            // Caught up `hours` ago, and HubSpot down since; a fresh replica (no token cached).
            let behind = |hours: i64| {
                let db = s.db.clone();
                async move {
                    let at = gomark_storage::now_ms() - hours * 3_600_000;
                    sqlx::query("UPDATE journal_state SET caught_up_at_ms = $1, lease_until_ms = 0")
                        .bind(at)
                        .execute(db.pool())
                        .await
                        .expect("age");
                }
            };
            behind(47).await;
            assert!(reader(&s).poll("c1").await.is_err(), "HubSpot is down");
            let status = r.status("c1").await.expect("status");
            assert!(!status.offset_at_risk && !status.last_error.is_empty(), "{status:?}");
            assert!(!metrics.render().contains("hubspot_journal_offset_at_risk_total"), "47 h: no warning yet");
            behind(49).await;
            assert!(reader(&s).poll("c1").await.is_err(), "still down");
            assert!(r.status("c1").await.expect("status").offset_at_risk, "49 h: at risk, 23 h left");
        })
    });
    let rendered = metrics.render();
    assert!(rendered.contains("hubspot_journal_offset_at_risk_total 1"), "{rendered}");
    let age = rendered
        .lines()
        .find(|l| l.starts_with(&format!("hubspot_journal_offset_age_seconds{{portal_id=\"{PORTAL}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the age gauge");
    assert!((49.0 * 3600.0..50.0 * 3600.0).contains(&age), "the gauge follows the failing reader: {age}");
}

/// Against the simulator: a portal on a service key (so no push webhooks) whose deals reach
/// GoMark only through its journal, each version published once, also after the journal
/// aged past an offset.
#[tokio::test]
async fn a_service_key_portal_is_tracked_through_the_simulators_journal() {
    let config = hubspot_sim::SimConfig::default();
    let cc = ClientCredentials { client_id: config.client_id.clone(), client_secret: config.client_secret.clone() };
    let (sim, addr) = hubspot_sim::spawn(config, "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    sim.register_service_key("sk-journal", 6060);
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault);
    portals.register("c1", "6060", &Credential::ServiceKey { token: "sk-journal".into() }).await.expect("register");
    portals.set_journal_credential("c1", Some(&cc)).await.expect("journal credential");
    let client = HubSpotClient::new(ClientConfig { base_url: format!("http://{addr}"), ..ClientConfig::default() })
        .expect("client");
    let deals =
        DealSync::new(db.clone(), portals.clone(), client.clone(), RelayWaker::default(), DealSyncSettings::default());
    let reader = JournalReader::new(db.clone(), portals, client, deals.clone(), JournalSettings::default());
    let published = || async {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM outbox")
            .fetch_one(db.pool())
            .await
            .expect("outbox")
            .try_get("n")
            .expect("n");
        n
    };
    let drain = || async {
        reader.poll("c1").await.expect("journal");
        while deals.refresh_queued("c1").await.expect("refresh") > 0 {}
    };

    sim.create_deals("sk-journal", 12, "appointmentscheduled", "default");
    drain().await;
    assert_eq!(published().await, 12, "each new deal once");
    drain().await;
    assert_eq!(published().await, 12, "nothing twice");

    // Entries age out while GoMark is away: the offset expires and a snapshot recovers,
    // including a deal deleted meanwhile.
    let gone = sim.create_deals("sk-journal", 1, "appointmentscheduled", "default");
    drain().await;
    assert_eq!(published().await, 13);
    sim.create_deals("sk-journal", 3, "appointmentscheduled", "default");
    assert!(sim.delete_deal("sk-journal", &gone[0]));
    sim.age_journal(hubspot_sim::JOURNAL_RETENTION + std::time::Duration::from_secs(60));
    let pass = reader.poll("c1").await.expect("recovering pass");
    assert!(pass.recovered, "{pass:?}");
    while deals.refresh_queued("c1").await.expect("refresh") > 0 {}
    assert_eq!(published().await, 17, "the snapshot published the 3 deals made while away, and the deletion");
    let deleted: i64 = sqlx::query("SELECT COUNT(*) AS n FROM deal_versions WHERE deleted = 1")
        .fetch_one(db.pool())
        .await
        .expect("versions")
        .try_get("n")
        .expect("n");
    assert_eq!(deleted, 1, "the deal deleted while the offset was expired");
    sim.create_deals("sk-journal", 2, "appointmentscheduled", "default");
    drain().await;
    assert_eq!(published().await, 19, "and the journal is read on after it");
}

/// HubSpot sends no push webhook when a property's definition changes; the journal has it,
/// with who made it, so a drift of that property names its author.
#[tokio::test]
async fn a_definition_change_read_from_the_journal_names_who_made_it() {
    let config = hubspot_sim::SimConfig::default();
    let cc = ClientCredentials { client_id: config.client_id.clone(), client_secret: config.client_secret.clone() };
    let (sim, addr) = hubspot_sim::spawn(config, "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    sim.register_service_key("sk-sources", 6161);
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("db");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault);
    portals.register("c1", "6161", &Credential::ServiceKey { token: "sk-sources".into() }).await.expect("register");
    portals.set_journal_credential("c1", Some(&cc)).await.expect("journal credential");
    let base = format!("http://{addr}");
    let client =
        HubSpotClient::new(ClientConfig { base_url: base.clone(), ..ClientConfig::default() }).expect("client");
    let deals =
        DealSync::new(db.clone(), portals.clone(), client.clone(), RelayWaker::default(), DealSyncSettings::default());
    let sources = gomark_hubspot_sync::sources::Sources::new(db.clone(), Vec::new());
    let reader = JournalReader::new(db.clone(), portals, client, deals, JournalSettings::default())
        .with_sources(sources.clone());

    let http = reqwest::Client::new();
    http.post(format!("{base}/crm/v3/properties/deals"))
        .bearer_auth("sk-sources")
        .json(&serde_json::json!({"name": "gomark_tier", "label": "Tier", "type": "string", "fieldType": "text", "groupName": "dealinformation"}))
        .send()
        .await
        .expect("create")
        .error_for_status()
        .expect("created");
    http.patch(format!("{base}/crm/v3/properties/deals/gomark_tier"))
        .bearer_auth("sk-sources")
        .header("X-HubSpot-Sim-UI-User", "42")
        .json(&serde_json::json!({"label": "Tier (edited)"}))
        .send()
        .await
        .expect("edit")
        .error_for_status()
        .expect("edited");
    reader.poll("c1").await.expect("journal");

    let last = sources.last_change("c1", &["gomark_tier".to_owned()]).await.expect("sources").expect("a source");
    assert_eq!(last.change_source, "CRM_UI", "{last:?}");
    assert_eq!(last.source_id, "userId:42", "{last:?}");
}

/// A webhook batch keeps the newest source per property and portal-wide, whatever the
/// order of its events; older events, sourceless events and unknown portals change nothing.
#[tokio::test]
async fn a_batch_of_webhook_events_keeps_the_newest_source_of_each_property() {
    fn event(portal: u64, property: &str, source: &str, id: &str, at_ms: i64) -> WebhookEvent {
        WebhookEvent {
            portal_id: portal,
            property_name: property.into(),
            change_source: source.into(),
            source_id: id.into(),
            occurred_time: Some(gomark_proto::time::timestamp(at_ms)),
            ..Default::default()
        }
    }
    for tdb in gomark_testkit::TestDatabase::all() {
        let db = Database::connect(&tdb.settings).await.expect("db");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
        let portals = Portals::new(db.clone(), vault);
        for (company, portal) in [("c1", "7001"), ("c2", "7002")] {
            let credential = Credential::ServiceKey { token: format!("sk-{portal}") };
            portals.register(company, portal, &credential).await.expect("register");
        }
        let sources = gomark_hubspot_sync::sources::Sources::new(db.clone(), Vec::new());
        sources
            .record(&[
                event(7001, "amount", "CRM_UI", "userId:1", 1_000),
                event(7001, "dealstage", "INTEGRATION", "app:9", 3_000),
                event(7001, "amount", "API", "app:5", 2_000),
                event(7001, "amount", "OLD", "x", 500),
                event(9999, "amount", "NOBODY", "x", 9_000),
                event(7002, "", "CRM_UI", "userId:7", 100),
                event(7001, "amount", "", "", 8_000),
            ])
            .await
            .expect("record");
        let last = |company: &'static str, targets: &'static [&'static str]| {
            let sources = sources.clone();
            async move {
                let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
                let c = sources.last_change(company, &targets).await.expect("read").expect("a source");
                (c.change_source, c.source_id)
            }
        };
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(last("c1", &["amount"]).await, pair("API", "app:5"), "{}", tdb.label);
        assert_eq!(last("c1", &["closedate"]).await, pair("INTEGRATION", "app:9"), "{}: portal-wide", tdb.label);
        assert_eq!(last("c2", &[]).await, pair("CRM_UI", "userId:7"), "{}", tdb.label);
        // A later batch: an older portal-wide change loses; one at the same instant wins.
        sources
            .record(&[event(7001, "", "LATE", "x", 2_500), event(7001, "amount", "TIE", "app:6", 2_000)])
            .await
            .expect("record");
        assert_eq!(last("c1", &["closedate"]).await, pair("INTEGRATION", "app:9"), "{}", tdb.label);
        assert_eq!(last("c1", &["amount"]).await, pair("TIE", "app:6"), "{}", tdb.label);
    }
}

/// A webhook batch's sources are written in its dedupe's transaction: when they cannot be
/// written, the events are not taken either, so HubSpot's retry of the batch is taken whole
/// (not all answered as duplicates with the sources lost).
#[tokio::test]
async fn webhook_events_and_their_sources_are_taken_together() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let db = Database::connect(&tdb.settings).await.expect("db");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
        let portals = Portals::new(db.clone(), vault);
        portals.register("c1", PORTAL, &Credential::ServiceKey { token: "sk-1".into() }).await.expect("register");
        let client = HubSpotClient::new(ClientConfig::default()).expect("client");
        let sources = gomark_hubspot_sync::sources::Sources::new(db.clone(), Vec::new());
        let deals = DealSync::new(db.clone(), portals, client, RelayWaker::default(), DealSyncSettings::default())
            .with_sources(sources.clone());
        let batch = vec![WebhookEvent {
            event_id: 1,
            subscription_id: 1,
            portal_id: PORTAL.parse().expect("portal"),
            occurred_time: Some(gomark_proto::time::timestamp(1_700_000_000_000)),
            subscription_type: "deal.propertyChange".into(),
            property_name: "amount".into(),
            change_source: "CRM_UI".into(),
            source_id: "userId:7".into(),
            object_id: 42,
            ..WebhookEvent::default()
        }];

        sqlx::query("ALTER TABLE change_sources RENAME TO change_sources_away").execute(db.pool()).await.expect("hide");
        assert!(deals.ingest(batch.clone()).await.is_err(), "{}: the sources could not be written", tdb.label);
        sqlx::query("ALTER TABLE change_sources_away RENAME TO change_sources").execute(db.pool()).await.expect("back");

        let retried = deals.ingest(batch.clone()).await.expect("retry");
        assert_eq!((retried.accepted, retried.duplicates), (1, 0), "{}: nothing was taken the first time", tdb.label);
        let last = sources.last_change("c1", &["amount".to_owned()]).await.expect("read").expect("a source");
        assert_eq!((last.change_source.as_str(), last.source_id.as_str()), ("CRM_UI", "userId:7"), "{}", tdb.label);
        let again = deals.ingest(batch.clone()).await.expect("duplicate");
        assert_eq!((again.accepted, again.duplicates), (0, 1), "{}", tdb.label);
    }
}
