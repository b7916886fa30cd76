//! Auth kinds (client credentials, OAuth refresh, service keys) and the webhooks journal.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{DEALS, PIPELINES, Sim, assert_error, start};
use hubspot_sim::{SimConfig, WebhookConfig, private_app_id};

const LOCAL: &str = "/webhooks-journal/journal-local/2026-03";

async fn form(sim: &Sim, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = sim
        .client
        .post(format!("{}{path}", sim.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("json"))
}

async fn journal_token(sim: &Sim) -> String {
    let (status, body) = form(
        sim,
        "/oauth/2026-03/token",
        "grant_type=client_credentials&client_id=hubspot-sim-client-id&client_secret=hubspot-sim-secret\
         &scope=developer.webhooks_journal.read%20developer.webhooks_journal.snapshots.write\
         %20developer.webhooks_journal.snapshots.read%20developer.webhooks_journal.subscriptions.read\
         %20developer.webhooks_journal.subscriptions.write",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    body["access_token"].as_str().expect("token").to_owned()
}

/// Reads every entry of `portal` after `offset` (from the earliest without one): the events
/// and the last offset.
async fn read_from(sim: &Sim, token: &str, portal: u64, mut offset: Option<String>) -> (Vec<Value>, Option<String>) {
    let mut events = Vec::new();
    loop {
        let path = match &offset {
            None => format!("{LOCAL}/earliest?installPortalId={portal}"),
            Some(o) => format!("{LOCAL}/offset/{o}/next?installPortalId={portal}"),
        };
        let resp = sim.call(Method::GET, token, &path, None).await;
        match resp.status() {
            StatusCode::NO_CONTENT => return (events, offset),
            StatusCode::NOT_FOUND if offset.is_none() => return (events, None),
            StatusCode::OK => {}
            other => panic!("{path}: {other}"),
        }
        let entry: Value = resp.json().await.expect("entry");
        assert_eq!(entry["installPortalId"], portal);
        let url = entry["url"].as_str().expect("url");
        // The file is pre-signed: fetched without a token.
        let file: Vec<Value> = sim.client.get(url).send().await.expect("file").json().await.expect("events");
        assert!(!file.is_empty());
        events.extend(file);
        offset = Some(entry["currentOffset"].as_str().expect("offset").to_owned());
    }
}

#[tokio::test]
async fn client_credentials_tokens_reach_the_journal_only() {
    let sim = start(SimConfig::default()).await;
    let (status, body) =
        form(&sim, "/oauth/v1/token", "grant_type=client_credentials&client_id=hubspot-sim-client-id&client_secret=no")
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], "BAD_CLIENT_ID");
    let (status, body) = form(
        &sim,
        "/oauth/2026-03/token",
        "grant_type=client_credentials&client_id=hubspot-sim-client-id&client_secret=hubspot-sim-secret&scope=crm.objects.deals.read",
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::BAD_REQUEST, Some("BAD_SCOPES")));
    let token = journal_token(&sim).await;
    let (status, err) = sim.json(Method::GET, &token, DEALS, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&err, "MISSING_SCOPES");
    let (status, _) = sim.json(Method::GET, "pat-portal", &format!("{LOCAL}/earliest"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a portal token cannot read the journal");
    let (status, _) = sim.json(Method::GET, &token, &format!("{LOCAL}/earliest"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "empty journal");
    sim.sim.expire_access_tokens();
    let (status, err) = sim.json(Method::GET, &token, &format!("{LOCAL}/latest"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&err, "EXPIRED_AUTHENTICATION");
}

#[tokio::test]
async fn journal_has_every_change_in_order_with_its_source() {
    let sim = start(SimConfig::default()).await;
    let token = journal_token(&sim).await;
    let portal = sim.sim.portal_id_for("pat-a");
    let other = sim.sim.portal_id_for("pat-b");
    let deal = json!({"properties": {"dealname": "A", "dealstage": "closedwon"}});
    let (_, created) = sim.json(Method::POST, "pat-a", DEALS, Some(deal.clone())).await;
    let id = created["id"].as_str().expect("id").to_owned();
    sim.json(Method::POST, "pat-b", DEALS, Some(deal)).await;
    let property =
        json!({"name": "gomark_tier", "label": "Tier", "type": "string", "fieldType": "text", "groupName": "gomark"});
    let (status, _) = sim.json(Method::POST, "pat-a", "/crm/properties/2026-09/deals", Some(property)).await;
    assert_eq!(status, StatusCode::CREATED);
    // A hand edit in the UI (test hook header), then one by the library helper.
    let resp = sim
        .client
        .patch(format!("{}{DEALS}/{id}", sim.base))
        .bearer_auth("pat-a")
        .header("X-HubSpot-Sim-UI-User", "42")
        .json(&json!({"properties": {"amount": "10"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::OK);
    sim.sim.update_deal_as_user("pat-a", &id, 7, [("amount", "20")]).expect("ui edit");
    let (status, _) =
        sim.json(Method::PATCH, "pat-a", &format!("{PIPELINES}/default"), Some(json!({"label": "Sales"}))).await;
    assert_eq!(status, StatusCode::OK);

    let (events, last) = read_from(&sim, &token, portal, None).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["subscriptionType"].as_str().expect("type")).collect();
    assert_eq!(
        kinds,
        ["deal.creation", "property.creation", "deal.propertyChange", "deal.propertyChange", "pipeline.change"]
    );
    assert!(events.iter().all(|e| e["portalId"] == portal && e["objectTypeId"] == "0-3"));
    let app = private_app_id(portal).to_string();
    let sources: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["changeSource"].as_str().expect("source"), e["sourceId"].as_str().expect("sourceId")))
        .collect();
    assert_eq!(
        sources,
        [
            ("INTEGRATION", app.as_str()),
            ("INTEGRATION", app.as_str()),
            ("CRM_UI", "userId:42"),
            ("CRM_UI", "userId:7"),
            ("INTEGRATION", app.as_str())
        ]
    );
    assert_eq!(events[1]["propertyName"], "gomark_tier");
    assert_eq!(events[4]["pipelineId"], "default");
    // The other portal's journal is its own; the global journal has both.
    let (theirs, _) = read_from(&sim, &token, other, None).await;
    assert_eq!(theirs.len(), 1);
    let (status, _) = sim.json(Method::GET, &token, "/webhooks-journal/journal/2026-03/latest", None).await;
    assert_eq!(status, StatusCode::OK);

    // Nothing newer: 204. A new write shows up after the stored offset.
    let last = last.expect("offset");
    sim.sim.update_deal("pat-a", &id, [("dealname", "A2")]).expect("edit");
    let (newer, last) = read_from(&sim, &token, portal, Some(last)).await;
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0]["propertyValue"], "A2");

    // Three days later the offset has expired: 404, and the journal is empty.
    sim.sim.age_journal(Duration::from_secs(3 * 24 * 3600 + 1));
    let path = format!("{LOCAL}/offset/{}/next?installPortalId={portal}", last.expect("offset"));
    let (status, err) = sim.json(Method::GET, &token, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&err, "OBJECT_NOT_FOUND");
    let (status, _) = sim.json(Method::GET, &token, &format!("{LOCAL}/earliest?installPortalId={portal}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn journal_aging_over_http_and_partial_expiry() {
    let sim = start(SimConfig::default()).await;
    let token = journal_token(&sim).await;
    let portal = sim.sim.portal_id_for("pat");
    sim.sim.create_deals("pat", 1, "closedwon", "default");
    let (_, first) = read_from(&sim, &token, portal, None).await;
    let first = first.expect("offset");
    let resp =
        sim.client.post(format!("{}/_sim/journal/age", sim.base)).json(&json!({"seconds": 2 * 24 * 3600})).send();
    assert_eq!(resp.await.expect("age").status(), StatusCode::NO_CONTENT);
    sim.sim.create_deals("pat", 1, "closedwon", "default");
    sim.sim.age_journal(Duration::from_secs(24 * 3600 + 60));
    // The first entry is gone, the second (one day old) is still there.
    let path = format!("{LOCAL}/offset/{first}/next?installPortalId={portal}");
    let (status, _) = sim.json(Method::GET, &token, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (events, _) = read_from(&sim, &token, portal, None).await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn snapshots_and_subscriptions() {
    let sim = start(SimConfig::default()).await;
    let token = journal_token(&sim).await;
    let portal = sim.sim.portal_id_for("pat");
    let ids = sim.sim.create_deals("pat", 2, "closedwon", "default");
    let (_, offset) = read_from(&sim, &token, portal, None).await;
    let body = json!({"snapshotRequests": [
        {"portalId": portal, "objectId": ids[0].parse::<u64>().expect("id"), "objectTypeId": "0-3", "properties": ["dealname", "dealstage"]},
        {"portalId": portal, "objectId": 1, "objectTypeId": "0-3", "properties": []},
    ]});
    let (status, answer) = sim.json(Method::POST, &token, "/webhooks-journal/snapshots/2026-03/crm", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let responses = answer["snapshotResponses"].as_array().expect("responses");
    let statuses: Vec<String> = futures_statuses(&sim, &token, responses).await;
    assert_eq!(statuses, ["SUCCESS", "FAILED"]);
    let (events, _) = read_from(&sim, &token, portal, offset).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["subscriptionType"], "object.snapshot");
    assert_eq!(events[0]["properties"], json!({"dealname": "Deal 1", "dealstage": "closedwon"}));

    let sub = json!({"subscriptionType": "OBJECT", "portalId": portal, "actions": ["CREATE", "UPDATE"],
                     "objectTypeId": "0-3", "objectIds": [], "properties": ["dealstage"]});
    let (status, created) = sim.json(Method::POST, &token, "/webhooks-journal/subscriptions/2026-03", Some(sub)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/webhooks-journal/subscriptions/2026-03/{}", created["id"]);
    let (status, list) = sim.json(Method::GET, &token, "/webhooks-journal/subscriptions/2026-03", None).await;
    assert_eq!((status, list["results"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, _) = sim.json(Method::DELETE, &token, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = sim.json(Method::GET, &token, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn futures_statuses(sim: &Sim, token: &str, responses: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for response in responses {
        let id = response["snapshotStatusId"].as_str().expect("id");
        let path = format!("/webhooks-journal/snapshots/2026-03/crm/status/{id}");
        let (status, body) = sim.json(Method::GET, token, &path, None).await;
        assert_eq!(status, StatusCode::OK);
        out.push(body["status"].as_str().expect("status").to_owned());
    }
    out
}

#[tokio::test]
async fn oauth_refresh_issues_tokens_for_the_portal() {
    let sim = start(SimConfig::default()).await;
    let portal = sim.sim.portal_id_for("install-a");
    sim.sim.register_refresh_token("refresh-a", "install-a");
    let refresh = "grant_type=refresh_token&client_id=hubspot-sim-client-id&client_secret=hubspot-sim-secret&refresh_token=refresh-a";
    let (status, body) = form(&sim, "/oauth/v1/token", refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hub_id"], portal);
    assert_eq!(body["refresh_token"], "refresh-a");
    let access = body["access_token"].as_str().expect("token").to_owned();
    let deal = json!({"properties": {"dealname": "OAuth", "dealstage": "closedwon"}});
    let (status, _) = sim.json(Method::POST, &access, DEALS, Some(deal)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(sim.sim.deal_count("install-a"), 1, "the access token acts for the refresh token's portal");
    sim.sim.expire_access_tokens();
    let (status, _) = sim.json(Method::GET, &access, DEALS, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = form(&sim, "/oauth/v3/token", refresh).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = sim.json(Method::GET, body["access_token"].as_str().expect("token"), DEALS, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = form(&sim, "/oauth/v1/token", &refresh.replace("refresh-a", "nope")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::BAD_REQUEST, Some("BAD_REFRESH_TOKEN")));
}

#[tokio::test]
async fn service_key_portals_get_no_push_webhooks_but_a_journal() {
    let sim = start(SimConfig::default()).await;
    let token = journal_token(&sim).await;
    sim.sim.register_service_key("sk-1", 42_000_001);
    // Webhooks to a dead address: events would queue if pushed.
    sim.sim.configure_webhooks(WebhookConfig {
        target_url: "http://127.0.0.1:9/hook".into(),
        batch_delay: Duration::from_secs(60),
        ..WebhookConfig::default()
    });
    let deal = json!({"properties": {"dealname": "SK", "dealstage": "closedwon"}});
    let (status, _) = sim.json(Method::POST, "sk-1", DEALS, Some(deal.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(sim.sim.pending_webhook_events(), 0, "a service key portal gets no push webhooks");
    let (events, _) = read_from(&sim, &token, 42_000_001, None).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["changeSource"], "INTEGRATION");
    sim.json(Method::POST, "pat", DEALS, Some(deal)).await;
    assert_eq!(sim.sim.pending_webhook_events(), 1, "an ordinary portal's event is pushed");
    let resp = sim
        .client
        .post(format!("{}/_sim/service-keys", sim.base))
        .json(&json!({"key": "sk-2", "portalId": 42_000_002}))
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.sim.portal_id("sk-2"), Some(42_000_002));
}
