//! Applying change requests is idempotent and order-safe, on SQLite and Postgres.

use gomark_events::consumer::EventHandler;
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_events::relay::RelayWaker;
use gomark_hubspot_sync::credentials::{Credential, Vault};
use gomark_hubspot_sync::{ApplyChanges, MIGRATIONS, Portals};
use gomark_proto::common::v1::DealPropertySpec;
use gomark_proto::events::v1::{DealPropertyChangeRequested, PropertyAction};
use gomark_storage::Database;
use hubspot_client::{ClientConfig, HubSpotClient};
use hubspot_sim::SimConfig;
use std::net::SocketAddr;

fn vault() -> std::sync::Arc<Vault> {
    std::sync::Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"))
}

fn request(version: i64, label: &str, action: PropertyAction) -> gomark_events::EventEnvelope {
    let req = DealPropertyChangeRequested {
        company_id: "c1".into(),
        version,
        action: action as i32,
        spec: Some(DealPropertySpec {
            name: "gomark_seats".into(),
            label: label.into(),
            r#type: "number".into(),
            field_type: "number".into(),
            group_name: "dealinformation".into(),
            ..DealPropertySpec::default()
        }),
    };
    new_event("c1", event_types::DEAL_PROPERTY_CHANGE_REQUESTED, &req)
}

#[tokio::test]
async fn each_request_writes_once_and_old_versions_never_win() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let (sim, addr): (_, SocketAddr) =
            hubspot_sim::spawn(SimConfig::default(), ([127, 0, 0, 1], 0).into()).await.expect("sim");
        let db = Database::connect(&tdb.settings).await.expect("connect");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        let portals = Portals::new(db.clone(), vault());
        portals.register("c1", "555", &Credential::PrivateApp { token: "apply-token".into() }).await.expect("register");
        let client = HubSpotClient::new(ClientConfig { base_url: format!("http://{addr}"), ..ClientConfig::default() })
            .expect("client");
        let apply = ApplyChanges::new(db.clone(), portals, client, RelayWaker::default());
        let writes = || sim.requests().into_iter().filter(|r| r.method != "GET").count();

        let v1 = request(1, "Seats", PropertyAction::Upsert);
        apply.handle(&v1).await.expect("apply v1");
        apply.handle(&v1).await.expect("redelivered v1");
        apply.handle(&request(1, "Seats", PropertyAction::Upsert)).await.expect("v1 again, new event id");
        assert_eq!(writes(), 1, "{}: one create for three deliveries", tdb.label);
        assert_eq!(sim.property("apply-token", "gomark_seats").expect("created")["label"], "Seats");

        apply.handle(&request(2, "Licensed seats", PropertyAction::Upsert)).await.expect("v2");
        assert_eq!(writes(), 2, "{}: one patch", tdb.label);
        apply.handle(&request(1, "Seats", PropertyAction::Upsert)).await.expect("late v1");
        assert_eq!(
            sim.property("apply-token", "gomark_seats").expect("kept")["label"],
            "Licensed seats",
            "{}",
            tdb.label
        );

        apply.handle(&request(3, "Licensed seats", PropertyAction::Archive)).await.expect("archive");
        apply.handle(&request(3, "Licensed seats", PropertyAction::Archive)).await.expect("archive again");
        assert_eq!(writes(), 3, "{}: one archive", tdb.label);
        assert_eq!(sim.property("apply-token", "gomark_seats").expect("archived")["archived"], true);

        let replies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(db.pool()).await.expect("count");
        assert_eq!(replies, 3, "{}: one applied event per version, none for skipped repeats", tdb.label);
        db.close().await;
    }
}

#[tokio::test]
async fn a_company_without_a_portal_fails_with_a_reason() {
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let client = HubSpotClient::new(ClientConfig { base_url: "http://127.0.0.1:1".into(), ..ClientConfig::default() })
        .expect("client");
    let apply = ApplyChanges::new(db.clone(), Portals::new(db.clone(), vault()), client, RelayWaker::default());
    apply.handle(&request(1, "Seats", PropertyAction::Upsert)).await.expect("handled, not retried");
    let envelope: Vec<u8> =
        sqlx::query_scalar("SELECT envelope FROM outbox").fetch_one(db.pool()).await.expect("reply");
    let event = <gomark_events::EventEnvelope as prost::Message>::decode(envelope.as_slice()).expect("envelope");
    let applied: gomark_proto::events::v1::DealPropertyApplied =
        gomark_events::envelope::decode_payload(&event).expect("payload");
    assert!(applied.error.contains("no HubSpot portal"), "{}", applied.error);
}
