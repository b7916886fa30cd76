//! Deal ingest: deals made in HubSpot reach `deal.upserted` exactly once each, whatever
//! the webhooks do (duplicated, out of order, a batch lost: the incremental sync catches up).

use crate::scenarios::create_company;
use crate::support::Api;
use gomark::{Embedded, EmbeddedOptions};
use gomark_events::bus::ConsumerSpec;
use gomark_events::envelope::decode_payload;
use gomark_events::event_types;
use gomark_platform::Shutdown;
use gomark_proto::events::v1::DealUpserted;
use hubspot_sim::WebhookConfig;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn a_thousand_deals_are_published_exactly_once_despite_the_webhooks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        webhooks: WebhookConfig {
            batch_size: 100,
            batch_delay: Duration::from_millis(50),
            duplicate_rate: 0.3,
            shuffle: true,
            ..WebhookConfig::default()
        },
        deal_sync: gomark_hubspot_sync::DealSyncSettings {
            interval_secs: 2,
            overlap_secs: 5,
            queue_poll_ms: 50,
            index_lag_secs: 0,
        },
        ..EmbeddedOptions::default()
    };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let token = "deals-token";
    let company = create_company(&api, &gomark.hubspot_sim, "Deals Co", token, 961).await;

    // Listen from the start of the stream: a durable consumer sees every event.
    let mut stream =
        gomark.bus.subscribe(&ConsumerSpec::new("test.deals", event_types::DEAL_UPSERTED)).await.expect("subscribe");
    let sim = gomark.hubspot_sim.clone();
    sim.drop_next_batches(1);
    let ids = sim.create_deals(token, 1000, "appointmentscheduled", "default");
    assert_eq!(ids.len(), 1000);

    let mut seen: HashMap<String, u32> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 1000 && tokio::time::Instant::now() < deadline {
        let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await else {
            continue;
        };
        let deal: DealUpserted = decode_payload(&delivery.event).expect("payload");
        assert_eq!(deal.company_id, company);
        assert_eq!(deal.stage_id, "appointmentscheduled");
        *seen.entry(deal.deal_id).or_default() += 1;
        delivery.ack().await.expect("ack");
    }
    assert_eq!(seen.len(), 1000, "every deal arrived");
    // Give late duplicates (redelivered webhooks, the next sync) time to show themselves.
    let settle = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < settle {
        if let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            let deal: DealUpserted = decode_payload(&delivery.event).expect("payload");
            *seen.entry(deal.deal_id).or_default() += 1;
            delivery.ack().await.expect("ack");
        }
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "published more than once: {repeated:?}");
    let stats = sim.webhook_stats();
    assert_eq!(stats.batches_dropped, 1, "one batch was lost on purpose: {stats:?}");
    assert!(stats.events_sent > 1000, "duplicates were delivered: {stats:?}");

    // A change to a deal is a new version: published once more, with the new stage.
    let changed = &ids[0];
    sim.update_deal(token, changed, [("dealstage", "closedwon")]).expect("update");
    let delivery = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the change arrives")
        .expect("stream open")
        .expect("delivery");
    let update: DealUpserted = decode_payload(&delivery.event).expect("payload");
    delivery.ack().await.expect("ack");
    assert_eq!((&update.deal_id, update.stage_id.as_str()), (changed, "closedwon"));
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn the_portal_is_observed_in_canonical_form_and_its_sync_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let company = create_company(&api, &gomark.hubspot_sim, "Observed Co", "observed-token", 971).await;
    gomark.hubspot_sim.create_deals("observed-token", 3, "qualifiedtobuy", "default");

    let observed = api.send(reqwest::Method::GET, &format!("/v1/companies/{company}/hubspot/observed"), None).await;
    assert_eq!(observed.status, 200, "{}", observed.body);
    let stages = observed.body["pipelines"][0]["stages"].as_array().expect("stages").clone();
    let won = stages.iter().find(|s| s["id"] == "closedwon").expect("closedwon");
    assert_eq!((won["probability"].as_str(), won["isClosed"].as_bool()), (Some("1.0"), Some(true)));
    let open = stages.iter().find(|s| s["id"] == "qualifiedtobuy").expect("open stage");
    assert_eq!((open["probability"].as_str(), open["isClosed"].as_bool()), (Some("0.4"), Some(false)));
    assert!(
        observed.body["properties"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "dealname" && p["hubspotDefined"] == true))
    );
    assert!(observed.body["groups"].as_array().is_some_and(|g| g.iter().any(|g| g["name"] == "dealinformation")));

    let status = crate::support::eventually("backfill done", Duration::from_secs(20), || async {
        let r = api.send(reqwest::Method::GET, &format!("/v1/companies/{company}/hubspot/sync"), None).await;
        (r.body["backfillState"] == "done").then_some(r.body)
    })
    .await;
    assert!(status["backfillDeals"].as_u64().is_some(), "{status}");
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}
