//! HubSpot's 2026 platform end to end: portals on service keys, read through their webhooks
//! journal only (no push webhooks), track every deal exactly once through an outage longer
//! than the poll interval and an offset that expired; and a fleet API version upgrade rolls
//! out in waves (canary first) and rolls back, the pins checked in the portals' traffic.

use crate::support::{Api, eventually};
use gomark::{Embedded, EmbeddedOptions};
use gomark_events::bus::ConsumerSpec;
use gomark_events::envelope::decode_payload;
use gomark_events::event_types;
use gomark_platform::Shutdown;
use gomark_proto::events::v1::DealUpserted;
use hubspot_sim::HubSpotSim;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const POLL_MS: u64 = 200;

/// Registers a company whose portal uses a service key and whose changes come from its
/// journal, read with the simulator app's client credentials.
async fn register(
    api: &Api,
    sim: &HubSpotSim,
    config: &hubspot_sim::SimConfig,
    name: &str,
    key: &str,
    portal: u64,
) -> String {
    sim.register_service_key(key, portal);
    let body = json!({
        "name": name,
        "hubspotPortalId": portal.to_string(),
        "hubspotToken": key,
        "hubspotTokenKind": "serviceKey",
        "hubspotJournal": {"clientId": config.client_id, "clientSecret": config.client_secret},
    });
    let reply = api.send(Method::POST, "/v1/companies", Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let text = reply.body.to_string();
    assert!(!text.contains(key) && !text.contains(&config.client_secret), "no secret is echoed: {text}");
    reply.body["id"].as_str().expect("id").to_owned()
}

/// Both run modes: service-key portals on the journal only; pipeline-tracker holds exactly
/// the deals made, through an outage longer than the poll interval and an expired offset.
pub async fn journal_only_portals_are_counted_exactly(
    api: &Api,
    sim: &HubSpotSim,
    config: &hubspot_sim::SimConfig,
    first_portal: u64,
) {
    let mut companies = Vec::new();
    for i in 0..2u64 {
        let key = format!("sk-counted-{first_portal}-{i}");
        let name = format!("Counted {first_portal} {i}");
        companies.push((register(api, sim, config, &name, &key, first_portal + i).await, key));
    }
    let counted = |want: u64| {
        let companies = &companies;
        async move {
            for (company, _) in companies {
                eventually(&format!("{want} open deals in pipeline-tracker"), Duration::from_secs(60), || async {
                    (open_count(api, company).await == want).then_some(())
                })
                .await;
            }
        }
    };
    for (_, key) in &companies {
        sim.create_deals(key, 10, "appointmentscheduled", "default");
    }
    counted(10).await;
    // HubSpot refuses every CRM call for longer than the poll interval.
    sim.set_failure_rate(1.0);
    for (_, key) in &companies {
        sim.create_deals(key, 3, "appointmentscheduled", "default");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.set_failure_rate(0.0);
    counted(13).await;
    // The journal moves three days on: offsets expire, a snapshot recovers.
    for (_, key) in &companies {
        sim.create_deals(key, 2, "appointmentscheduled", "default");
    }
    sim.age_journal(hubspot_sim::JOURNAL_RETENTION + Duration::from_secs(60));
    counted(15).await;
    for (company, _) in &companies {
        let sync = after_recovery(api, company).await;
        assert_eq!(sync["journal"]["recoveries"], 1, "{sync}");
    }
    // Settled: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    counted(15).await;
}

/// The company's sync status once its journal reader has recovered at least once. The reader
/// may have read the last deals before the journal aged: it then notices the expired offset
/// at its next poll, which can come after those deals were counted.
async fn after_recovery(api: &Api, company: &str) -> Value {
    eventually("the journal reader to recover", Duration::from_secs(30), || async {
        let sync = api.send(Method::GET, &format!("/v1/companies/{company}/hubspot/sync"), None).await.body;
        (sync["journal"]["recoveries"].as_i64() != Some(0)).then_some(sync)
    })
    .await
}

async fn open_count(api: &Api, company: &str) -> u64 {
    api.send(Method::GET, &format!("/v1/companies/{company}/funnels/default"), None).await.body["openCount"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn service_key_portals_on_the_journal_track_every_deal_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        // The search safety net runs rarely here: deals must come through the journal.
        deal_sync: gomark_hubspot_sync::DealSyncSettings {
            interval_secs: 3600,
            queue_poll_ms: 50,
            index_lag_secs: 0,
            ..Default::default()
        },
        journal: gomark_hubspot_sync::JournalSettings { poll_ms: POLL_MS, ..Default::default() },
        ..EmbeddedOptions::default()
    };
    let gomark = Embedded::start(options.clone(), Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let sim = gomark.hubspot_sim.clone();
    let mut stream =
        gomark.bus.subscribe(&ConsumerSpec::new("test.journal", event_types::DEAL_UPSERTED)).await.expect("subscribe");
    let mut companies = Vec::new();
    for i in 0..3u64 {
        let key = format!("sk-journal-{i}");
        let id = register(&api, &sim, &options.sim, &format!("Journal {i}"), &key, 3100 + i).await;
        companies.push((id, key));
    }
    let mut expected: HashMap<String, u64> = HashMap::new();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut drain = async |seen: &mut HashMap<String, u32>, want: usize| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < want && tokio::time::Instant::now() < deadline {
            if let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                let deal: DealUpserted = decode_payload(&delivery.event).expect("payload");
                *seen.entry(format!("{}/{}", deal.portal_id, deal.deal_id)).or_default() += 1;
                delivery.ack().await.expect("ack");
            }
        }
    };

    // 1. Deals made in each portal arrive; no push webhook was sent for any of them.
    for (_, key) in &companies {
        sim.create_deals(key, 20, "appointmentscheduled", "default");
    }
    drain(&mut seen, 60).await;
    assert_eq!(seen.len(), 60, "every deal arrived");
    assert_eq!(sim.webhook_stats().events_sent, 0, "service-key portals get no push webhooks");
    for (company, _) in &companies {
        expected.insert(company.clone(), 20);
    }

    // 2. HubSpot refuses every CRM call for longer than the poll interval while deals are
    // made; once it answers again they arrive, each once.
    sim.set_failure_rate(1.0);
    for (_, key) in &companies {
        sim.create_deals(key, 5, "appointmentscheduled", "default");
    }
    tokio::time::sleep(Duration::from_millis(POLL_MS * 10)).await;
    sim.set_failure_rate(0.0);
    drain(&mut seen, 75).await;
    assert_eq!(seen.len(), 75, "the deals made during the outage arrived");
    for n in expected.values_mut() {
        *n += 5;
    }

    // 3. The journal moves three days on (GoMark's offsets fall out of it) while more deals
    // are made: each reader recovers with a snapshot and reads on.
    for (_, key) in &companies {
        sim.create_deals(key, 4, "appointmentscheduled", "default");
    }
    sim.age_journal(hubspot_sim::JOURNAL_RETENTION + Duration::from_secs(60));
    drain(&mut seen, 87).await;
    assert_eq!(seen.len(), 87, "the deals made before the expiry arrived through the snapshot");
    for (company, _) in &companies {
        let sync = after_recovery(&api, company).await;
        assert_eq!(
            (sync["credentialKind"].as_str(), sync["apiVersion"].as_str()),
            (Some("service_key"), Some("2026-09")),
            "{sync}"
        );
        assert_eq!(sync["journal"]["recoveries"], 1, "recovered once, with a snapshot: {sync}");
    }
    for (_, key) in &companies {
        sim.create_deals(key, 1, "appointmentscheduled", "default");
    }
    drain(&mut seen, 90).await;
    assert_eq!(seen.len(), 90, "and the journal is read on afterwards");
    for n in expected.values_mut() {
        *n += 5;
    }

    // Late duplicates (a second replica, a re-read) would show up now.
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < settle {
        if let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            let deal: DealUpserted = decode_payload(&delivery.event).expect("payload");
            *seen.entry(format!("{}/{}", deal.portal_id, deal.deal_id)).or_default() += 1;
            delivery.ack().await.expect("ack");
        }
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "published more than once: {repeated:?}");
    // pipeline-tracker holds exactly the deals made.
    for (company, want) in &expected {
        let got = eventually("pipeline-tracker's counts", Duration::from_secs(30), || async {
            let n = open_count(&api, company).await;
            (n == *want).then_some(n)
        })
        .await;
        assert_eq!(got, *want);
    }
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

fn versioned_document(companies: &[(String, u32)], version: &str) -> String {
    let mut doc = format!("baseline:\n  hubspot: {{apiVersion: \"{version}\"}}\ncompanies:\n");
    for (i, (id, wave)) in companies.iter().enumerate() {
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n    settings: {{rolloutWave: {wave}}}\n"));
    }
    doc
}

async fn finish(api: &Api, id: &str) -> Value {
    eventually("the rollout to finish", Duration::from_secs(60), || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
        matches!(r.body["state"].as_str(), Some("completed" | "halted" | "cancelled")).then_some(r.body)
    })
    .await
}

/// The version each portal's latest CRM call used (its pin), from the simulator's log.
fn pins(sim: &HubSpotSim, portals: &[u64]) -> Vec<String> {
    let requests = sim.requests();
    portals
        .iter()
        .map(|portal| {
            requests
                .iter()
                .rev()
                .filter(|r| r.portal_id == Some(*portal) && r.path.starts_with("/crm/"))
                .find_map(|r| ["v3", "2026-03", "2026-09"].into_iter().find(|v| r.path.split('/').any(|s| s == *v)))
                .unwrap_or("none")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_fleet_api_version_upgrade_rolls_out_in_waves_and_rolls_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options.clone(), Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let sim = gomark.hubspot_sim.clone();
    let portals: Vec<u64> = (0..4).map(|i| 3200 + i).collect();
    let mut companies = Vec::new();
    for (i, portal) in portals.iter().enumerate() {
        let key = format!("sk-fleet-{i}");
        let id = register(&api, &sim, &options.sim, &format!("Fleet {i}"), &key, *portal).await;
        companies.push((id, if i == 0 { 0 } else { 1 }));
    }
    let revision = |doc: String| {
        let api = &api;
        async move {
            let r = api
                .send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "api version"})))
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["number"].as_i64().expect("number")
        }
    };
    let roll_out = |number: i64| {
        let api = &api;
        async move {
            let started = api.send(Method::POST, "/v1/rollouts", Some(json!({"revision": number}))).await;
            assert_eq!(started.status, 201, "{}", started.body);
            finish(api, started.body["id"].as_str().expect("id")).await
        }
    };
    let observe_all = || async {
        for (company, _) in &companies {
            let r = api.send(Method::GET, &format!("/v1/companies/{company}/hubspot/observed"), None).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };

    let old = revision(versioned_document(&companies, "2026-03")).await;
    let done = roll_out(old).await;
    assert_eq!(done["state"], "completed", "{done}");
    sim.clear_requests();
    observe_all().await;
    assert_eq!(pins(&sim, &portals), ["2026-03"; 4]);

    // The upgrade: planned as one action per portal, applied canary wave first.
    let new = revision(versioned_document(&companies, "2026-09")).await;
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({"revision": new}))).await;
    let text = plan.body.to_string();
    assert!(text.contains("api_version") && text.contains("2026-09"), "{text}");
    sim.clear_requests();
    let done = roll_out(new).await;
    assert_eq!(done["state"], "completed", "{done}");
    let steps = done["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|s| s["applied"] == 1), "one action per portal: {done}");
    // The canary portal was on 2026-09 (probed and pinned) before any other portal was.
    let requests = sim.requests();
    let first_on_new = |portal: u64| {
        requests.iter().position(|r| r.portal_id == Some(portal) && r.path.contains("/2026-09")).expect("probed")
    };
    let canary = first_on_new(portals[0]);
    assert!(portals[1..].iter().all(|p| first_on_new(*p) > canary), "canary wave first");
    sim.clear_requests();
    observe_all().await;
    assert_eq!(pins(&sim, &portals), ["2026-09"; 4]);
    for (company, _) in &companies {
        let sync = api.send(Method::GET, &format!("/v1/companies/{company}/hubspot/sync"), None).await.body;
        assert_eq!(sync["apiVersion"], "2026-09", "{sync}");
    }

    // Rollback: the previous revision again, rolled out the same way, restores the old pin.
    let rollback = api.send(Method::POST, "/v1/config/rollback", Some(json!({"to": old}))).await;
    assert_eq!(rollback.status, 201, "{}", rollback.body);
    let done = roll_out(rollback.body["number"].as_i64().expect("number")).await;
    assert_eq!(done["state"], "completed", "{done}");
    sim.clear_requests();
    observe_all().await;
    assert_eq!(pins(&sim, &portals), ["2026-03"; 4]);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// The plan, apply and drift path on a service key alone (no private app, no OAuth, no push
/// webhooks): a declared property is planned and applied, a hand edit in HubSpot's UI reaches
/// GoMark only through the journal, and the drift record names that person, the policy
/// going by it (adopted).
#[tokio::test]
async fn plan_apply_and_drift_work_with_a_service_key_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        journal: gomark_hubspot_sync::JournalSettings { poll_ms: POLL_MS, ..Default::default() },
        ..EmbeddedOptions::default()
    };
    let gomark = Embedded::start(options.clone(), Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let sim = gomark.hubspot_sim.clone();
    let (key, portal) = ("sk-drift", 3300u64);
    let company = register(&api, &sim, &options.sim, "Service key only", key, portal).await;
    let doc = format!(
        "baseline:\n  dealProperties:\n    - {{name: gomark_seats, label: Seats, type: number, fieldType: number, groupName: dealinformation}}\n\
         companies:\n  s:\n    companyId: \"{company}\"\n    settings: {{driftPolicy: alert, driftPolicyBySource: {{user: adopt}}}}\n"
    );
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({"document": doc, "message": "plan"}))).await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    let actions = plan.body["companies"][0]["actions"].as_array().cloned().unwrap_or_default();
    assert!(
        actions.iter().any(|a| a.to_string().contains("gomark_seats")),
        "planned on the service key: {}",
        plan.body
    );
    let revision =
        api.send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "seats"}))).await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    let started = api.send(Method::POST, "/v1/rollouts", Some(json!({}))).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let done = finish(&api, started.body["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(sim.property(key, "gomark_seats").is_some(), "applied with the service key");
    let quiet = api.send(Method::POST, "/v1/drift/check", Some(json!({"companyIds": [company]}))).await;
    assert_eq!(quiet.body["drifted"].as_array().map(Vec::len), Some(0), "{}", quiet.body);

    // A person relabels it in HubSpot's UI. No webhook is pushed (service key); the journal
    // carries the change and who made it.
    let relabel = reqwest::Client::new()
        .patch(format!("{}/crm/v3/properties/deals/gomark_seats", gomark.hubspot_sim_url))
        .bearer_auth(key)
        .header("X-HubSpot-Sim-UI-User", "42")
        .json(&json!({"label": "Seats (sold)"}))
        .send()
        .await
        .expect("relabel");
    assert_eq!(relabel.status(), 200);
    assert!(
        sim.journal_events(portal).iter().any(|e| e["propertyName"] == "gomark_seats" && e["changeSource"] == "CRM_UI"),
        "journaled with who made it"
    );
    // The reader records when it last caught up on every pass: two passes after the edit, the
    // second begun after it, have read it.
    let caught_up = || async {
        let sync = api.send(Method::GET, &format!("/v1/companies/{company}/hubspot/sync"), None).await.body;
        sync["journal"]["caughtUpAt"].as_str().unwrap_or_default().to_owned()
    };
    let mut seen = caught_up().await;
    for pass in ["a pass after the edit", "a pass begun after the edit"] {
        seen = eventually(pass, Duration::from_secs(30), || async {
            let now = caught_up().await;
            (now != seen).then_some(now)
        })
        .await;
    }
    let found = api.send(Method::POST, "/v1/drift/check", Some(json!({"companyIds": [company]}))).await;
    assert_eq!(found.status, 200, "{}", found.body);
    let record = found.body["drifted"][0].clone();
    assert_eq!(record["source"]["kind"], "user", "{}", found.body);
    assert_eq!(record["source"]["sourceId"], "userId:42", "{record}");
    assert_eq!(record["policy"], "adopt", "{record}");
    assert!(record["resolution"].as_str().is_some_and(|r| r.starts_with("revision/")), "{record}");
    assert_eq!(sim.webhook_stats().events_sent, 0, "no push webhook was involved");
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// A fleet upgrade whose canary portal fails the conformance probe halts before any other
/// portal is touched: every pin stays where it was.
#[tokio::test]
async fn a_fleet_api_version_upgrade_halts_when_the_canary_fails_its_probe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options.clone(), Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let sim = gomark.hubspot_sim.clone();
    let portals: Vec<u64> = (0..3).map(|i| 3400 + i).collect();
    let mut companies = Vec::new();
    for (i, portal) in portals.iter().enumerate() {
        let key = format!("sk-halt-{i}");
        let id = register(&api, &sim, &options.sim, &format!("Halt {i}"), &key, *portal).await;
        companies.push((id, if i == 0 { 0 } else { 1 }));
    }
    let roll_out = |version: &'static str| {
        let (api, companies) = (&api, &companies);
        async move {
            let doc = versioned_document(companies, version);
            let r = api
                .send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "api version"})))
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            let revision = r.body["number"].as_i64().expect("number");
            let started = api.send(Method::POST, "/v1/rollouts", Some(json!({"revision": revision}))).await;
            assert_eq!(started.status, 201, "{}", started.body);
            finish(api, started.body["id"].as_str().expect("id")).await
        }
    };
    let done = roll_out("2026-03").await;
    assert_eq!(done["state"], "completed", "{done}");

    // The canary portal answers nothing (404) from now on: it cannot be used on any version.
    sim.fail_next("sk-halt-0", 100_000, 404);
    sim.clear_requests();
    let halted = roll_out("2026-09").await;
    assert_eq!(halted["state"], "halted", "{halted}");
    let steps = halted["steps"].as_array().expect("steps");
    let canary = steps.iter().find(|s| s["wave"] == 0).expect("canary step");
    assert_eq!(canary["state"], "failed", "{halted}");
    assert!(canary["detail"].as_str().is_some_and(|d| d.contains("HTTP 404")), "the probe's reason: {halted}");
    assert!(steps.iter().filter(|s| s["wave"] == 1).all(|s| s["state"] == "pending"), "wave 1 never ran: {halted}");
    let requests = sim.requests();
    assert!(
        !requests.iter().any(|r| r.portal_id.is_some_and(|p| p != portals[0]) && r.path.contains("/2026-09")),
        "no other portal was probed on 2026-09"
    );
    sim.fail_next("sk-halt-0", 0, 404);
    for (company, _) in &companies {
        let sync = api.send(Method::GET, &format!("/v1/companies/{company}/hubspot/sync"), None).await.body;
        assert_eq!(sync["apiVersion"], "2026-03", "every pin kept: {sync}");
    }
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// A portal on both feeds (a private-app token, so HubSpot pushes webhooks, and the journal):
/// every change arrives both ways, and each deal is still published once and counted once.
#[tokio::test]
async fn a_portal_on_both_feeds_publishes_each_deal_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        deal_sync: gomark_hubspot_sync::DealSyncSettings {
            interval_secs: 3600,
            queue_poll_ms: 50,
            index_lag_secs: 0,
            ..Default::default()
        },
        journal: gomark_hubspot_sync::JournalSettings { poll_ms: POLL_MS, ..Default::default() },
        ..EmbeddedOptions::default()
    };
    let gomark = Embedded::start(options.clone(), Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let sim = gomark.hubspot_sim.clone();
    let mut stream =
        gomark.bus.subscribe(&ConsumerSpec::new("test.both", event_types::DEAL_UPSERTED)).await.expect("subscribe");
    let (token, portal) = ("both-feeds", 3500u64);
    sim.register_portal(token, portal);
    let body = json!({
        "name": "Both feeds",
        "hubspotPortalId": portal.to_string(),
        "hubspotToken": token,
        "hubspotJournal": {"clientId": options.sim.client_id, "clientSecret": options.sim.client_secret},
    });
    let reply = api.send(Method::POST, "/v1/companies", Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let company = reply.body["id"].as_str().expect("id").to_owned();
    let caught_up = || async {
        let sync = api.send(Method::GET, &format!("/v1/companies/{company}/hubspot/sync"), None).await.body;
        sync["journal"]["caughtUpAt"].as_str().unwrap_or_default().to_owned()
    };

    let sent = sim.webhook_stats().events_sent;
    sim.create_deals(token, 20, "appointmentscheduled", "default");
    // Both feeds carried the 20 creations: HubSpot pushed them, and the reader has read its
    // journal past them (two passes, the second begun after they were made).
    eventually("the webhooks pushed", Duration::from_secs(30), || async {
        (sim.webhook_stats().events_sent >= sent + 20 && sim.pending_webhook_events() == 0).then_some(())
    })
    .await;
    let journaled = sim.journal_events(portal).iter().filter(|e| e["subscriptionType"] == "deal.creation").count();
    assert_eq!(journaled, 20, "the journal holds the same creations");
    let mut seen_at = caught_up().await;
    for pass in ["a journal pass", "a journal pass begun after the deals"] {
        seen_at = eventually(pass, Duration::from_secs(30), || async {
            let now = caught_up().await;
            (!now.is_empty() && now != seen_at).then_some(now)
        })
        .await;
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < settle || seen.len() < 20 {
        assert!(tokio::time::Instant::now() < settle + Duration::from_secs(30), "only {} deals arrived", seen.len());
        if let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            let deal: DealUpserted = decode_payload(&delivery.event).expect("payload");
            *seen.entry(deal.deal_id.clone()).or_default() += 1;
            delivery.ack().await.expect("ack");
        }
    }
    assert_eq!(seen.len(), 20, "every deal");
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    let counted = eventually("pipeline-tracker's count", Duration::from_secs(30), || async {
        let n = open_count(&api, &company).await;
        (n == 20).then_some(n)
    })
    .await;
    assert_eq!(counted, 20);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}
