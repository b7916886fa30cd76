//! End-to-end tests: real HTTP against a simulator spawned on port 0.

use std::net::SocketAddr;
use std::time::Duration;

use hubspot_sim::{HubSpotSim, SimConfig, spawn};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/crm/v3/properties/deals";
const DATED: &str = "/crm/properties/2026-03/deals";

struct Sim {
    sim: HubSpotSim,
    base: String,
    client: Client,
}

async fn start(config: SimConfig) -> Sim {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let (sim, addr) = spawn(config, addr).await.expect("spawn");
    Sim { sim, base: format!("http://{addr}"), client: Client::new() }
}

impl Sim {
    async fn call(&self, method: Method, token: &str, path: &str, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request")
    }

    async fn json(&self, method: Method, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let resp = self.call(method, token, path, body).await;
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("json body") };
        (status, value)
    }
}

fn prop(name: &str) -> Value {
    json!({
        "name": name,
        "label": "GoMark score",
        "type": "number",
        "fieldType": "number",
        "groupName": "gomark",
        "someUnknownField": 1
    })
}

fn assert_error(body: &Value, category: &str) {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["category"], category, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let id = body["correlationId"].as_str().expect("correlationId");
    assert_eq!(id.len(), 36);
}

async fn lifecycle(sim: &Sim, base: &str, token: &str) {
    let (status, created) = sim.json(Method::POST, token, base, Some(prop("gomark_score"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "gomark_score");
    assert_eq!(created["description"], "");
    assert_eq!(created["options"], json!([]));
    assert_eq!(created["hubspotDefined"], false);
    assert_eq!(created["archived"], false);
    assert_eq!(created["modificationMetadata"]["archivable"], true);
    let created_at = created["createdAt"].as_str().expect("createdAt");
    assert_eq!(created_at.len(), 24, "{created_at}");
    assert!(created_at.ends_with('Z'));
    assert!(created.get("archivedAt").is_none());

    let path = format!("{base}/gomark_score");
    let (status, got) = sim.json(Method::GET, token, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["label"], "GoMark score");

    let (status, dup) = sim.json(Method::POST, token, base, Some(prop("gomark_score"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&dup, "OBJECT_ALREADY_EXISTS");
    assert_eq!(dup["subCategory"], "Properties.PROPERTY_WITH_NAME_EXISTS");

    let (status, patched) = sim.json(Method::PATCH, token, &path, Some(json!({"label": "Score (renamed)"}))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["label"], "Score (renamed)");
    assert_eq!(patched["type"], "number");

    let resp = sim.call(Method::DELETE, token, &path, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let (status, missing) = sim.json(Method::GET, token, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&missing, "OBJECT_NOT_FOUND");

    let (status, archived) = sim.json(Method::GET, token, &format!("{path}?archived=true"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(archived["archived"], true);
    assert!(archived["archivedAt"].is_string());

    // Re-creating an archived name restores it.
    let (status, restored) = sim.json(Method::POST, token, base, Some(prop("gomark_score"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(restored["archived"], false);
}

#[tokio::test]
async fn property_lifecycle_v3() {
    let sim = start(SimConfig::default()).await;
    lifecycle(&sim, V3, "tok-a").await;
    let stored = sim.sim.property("tok-a", "gomark_score").expect("stored");
    assert_eq!(stored["archived"], false);
}

#[tokio::test]
async fn property_lifecycle_dated_path_and_object_id_alias() {
    let sim = start(SimConfig::default()).await;
    lifecycle(&sim, DATED, "tok-a").await;
    lifecycle(&sim, "/crm/v3/properties/0-3", "tok-b").await;
    // Both path styles see the same portal state.
    let (status, _) = sim.json(Method::GET, "tok-a", &format!("{V3}/gomark_score"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = sim.json(Method::GET, "tok-a", "/crm/v3/properties/widgets", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "VALIDATION_ERROR");
}

#[tokio::test]
async fn validation_errors() {
    let sim = start(SimConfig::default()).await;
    let cases = [
        json!({"name": "GoMark-Score", "label": "x", "type": "string", "fieldType": "text", "groupName": "gomark"}),
        json!({"name": "1abc", "label": "x", "type": "string", "fieldType": "text", "groupName": "gomark"}),
        json!({"name": "gomark_x", "label": "x", "type": "number", "fieldType": "text", "groupName": "gomark"}),
        json!({"name": "gomark_x", "label": "x", "type": "bool", "fieldType": "checkbox", "groupName": "gomark"}),
        json!({"name": "gomark_x", "label": "x", "type": "json", "fieldType": "text", "groupName": "gomark"}),
        json!({"name": "gomark_x", "label": "x", "type": "enumeration", "fieldType": "select", "groupName": "gomark"}),
        json!({"name": "gomark_x", "label": "x", "type": "enumeration", "fieldType": "select", "groupName": "gomark", "options": []}),
        json!({"name": "gomark_x", "label": "x", "type": "string", "fieldType": "text", "groupName": "no_such_group"}),
        json!({"name": "gomark_x", "type": "string", "fieldType": "text"}),
    ];
    for case in cases {
        let (status, body) = sim.json(Method::POST, "tok", V3, Some(case.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case} -> {body}");
        assert_error(&body, "VALIDATION_ERROR");
    }
    // Malformed JSON.
    let resp = sim
        .client
        .post(format!("{}{V3}", sim.base))
        .bearer_auth("tok")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers()["content-type"].to_str().expect("ct").starts_with("application/json"));
    assert_error(&resp.json().await.expect("json"), "VALIDATION_ERROR");

    // Valid enumeration, then PATCH rules.
    let enum_prop = json!({"name": "gomark_tier", "label": "Tier", "type": "enumeration", "fieldType": "select",
        "groupName": "gomark", "options": [{"label": "Gold", "value": "gold"}, {"label": "Silver", "value": "silver", "displayOrder": 5}]});
    let (status, created) = sim.json(Method::POST, "tok", V3, Some(enum_prop)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["options"][0]["hidden"], false);
    assert_eq!(created["options"][1]["displayOrder"], 5);
    let path = format!("{V3}/gomark_tier");
    for bad in [json!({"name": "other"}), json!({"hasUniqueValue": true}), json!({"options": []})] {
        let (status, body) = sim.json(Method::PATCH, "tok", &path, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_error(&body, "VALIDATION_ERROR");
    }
    let (status, patched) =
        sim.json(Method::PATCH, "tok", &path, Some(json!({"options": [{"label": "Bronze", "value": "bronze"}]}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["options"].as_array().map(Vec::len), Some(1));
    assert_eq!(patched["label"], "Tier");
    let (status, _) = sim.json(Method::PATCH, "tok", &format!("{V3}/nope"), Some(json!({"label": "x"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // HubSpot-defined properties.
    let resp = sim.call(Method::DELETE, "tok", &format!("{V3}/dealname"), None).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (status, _) = sim.json(Method::PATCH, "tok", &format!("{V3}/hs_object_id"), Some(json!({"label": "x"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let resp = sim.call(Method::DELETE, "tok", &format!("{V3}/nope"), None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn default_properties_and_groups() {
    let sim = start(SimConfig::default()).await;
    let (status, list) = sim.json(Method::GET, "tok", V3, None).await;
    assert_eq!(status, StatusCode::OK);
    let results = list["results"].as_array().expect("results");
    let dealstage = results.iter().find(|p| p["name"] == "dealstage").expect("dealstage");
    assert_eq!(dealstage["type"], "enumeration");
    assert_eq!(dealstage["fieldType"], "radio");
    assert_eq!(dealstage["hubspotDefined"], true);
    assert_eq!(dealstage["groupName"], "dealinformation");
    assert!(!dealstage["options"].as_array().expect("options").is_empty());

    let (status, groups) = sim.json(Method::GET, "tok", &format!("{V3}/groups"), None).await;
    assert_eq!(status, StatusCode::OK);
    let labels: Vec<&str> =
        groups["results"].as_array().expect("groups").iter().filter_map(|g| g["label"].as_str()).collect();
    assert!(labels.contains(&"Deal information") && labels.contains(&"GoMark"));

    let groups_path = format!("{DATED}/groups");
    let new_group = json!({"name": "gomark_extra", "label": "Extra"});
    let (status, _) = sim.json(Method::POST, "tok", &groups_path, Some(new_group.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = sim.json(Method::POST, "tok", &groups_path, Some(new_group)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "OBJECT_ALREADY_EXISTS");
    let (status, patched) =
        sim.json(Method::PATCH, "tok", &format!("{groups_path}/gomark_extra"), Some(json!({"label": "Extra 2"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["label"], "Extra 2");
    let (status, body) = sim.json(Method::DELETE, "tok", &format!("{groups_path}/dealinformation"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().expect("msg").contains("GROUP_WITH_ACTIVE_PROPERTIES"));
    let resp = sim.call(Method::DELETE, "tok", &format!("{groups_path}/gomark_extra"), None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, _) = sim.json(Method::GET, "tok", &format!("{groups_path}/gomark_extra"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn batch_endpoints() {
    let sim = start(SimConfig::default()).await;
    let (status, body) = sim
        .json(
            Method::POST,
            "tok",
            &format!("{V3}/batch/create"),
            Some(json!({"inputs": [prop("gomark_a"), prop("gomark_b")]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "COMPLETE");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));

    let (status, body) = sim
        .json(
            Method::POST,
            "tok",
            &format!("{V3}/batch/create"),
            Some(json!({"inputs": [prop("gomark_a"), prop("gomark_c")]})),
        )
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!(body["numErrors"], 1);
    assert_eq!(body["errors"][0]["subCategory"], "Properties.PROPERTY_WITH_NAME_EXISTS");

    let read = json!({"archived": false, "inputs": [{"name": "gomark_a"}, {"name": "dealname"}]});
    let (status, body) = sim.json(Method::POST, "tok", &format!("{DATED}/batch/read"), Some(read)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
    assert!(body["startedAt"].is_string() && body["completedAt"].is_string());

    let archive = json!({"inputs": [{"name": "gomark_a"}, {"name": "never_existed"}, {"name": "dealname"}]});
    let resp = sim.call(Method::POST, "tok", &format!("{V3}/batch/archive"), Some(archive)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let read = json!({"archived": false, "inputs": [{"name": "gomark_a"}, {"name": "gomark_b"}]});
    let (status, body) = sim.json(Method::POST, "tok", &format!("{V3}/batch/read"), Some(read)).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!(body["numErrors"], 1);
    assert_eq!(body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(sim.sim.property("tok", "gomark_a").expect("a")["archived"], true);
}

#[tokio::test]
async fn portals_are_isolated() {
    let sim = start(SimConfig::default()).await;
    sim.sim.register_portal("registered", 4242);
    let (status, _) = sim.json(Method::POST, "tok-1", V3, Some(prop("gomark_only_one"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = sim.json(Method::GET, "tok-2", &format!("{V3}/gomark_only_one"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim.json(Method::GET, "registered", V3, None).await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(sim.sim.portal_id("tok-1"), Some(10_000_001));
    assert_eq!(sim.sim.portal_id("tok-2"), Some(10_000_002));
    assert_eq!(sim.sim.portal_id("registered"), Some(4242));
    assert!(sim.sim.property("tok-1", "gomark_only_one").is_some());
    assert!(sim.sim.property("tok-2", "gomark_only_one").is_none());

    // Missing / empty auth.
    let resp = sim.client.get(format!("{}{V3}", sim.base)).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("x-hubspot-ratelimit-max").is_none());
    assert_error(&resp.json().await.expect("json"), "INVALID_AUTHENTICATION");
    let resp =
        sim.client.get(format!("{}{V3}", sim.base)).header("authorization", "Bearer ").send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let log = sim.sim.requests();
    assert_eq!(log.len(), 5);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, V3);
    assert_eq!(log[0].status, 201);
    assert_eq!(log[0].portal_id, Some(10_000_001));
    assert_eq!(log[3].portal_id, None);
    assert_eq!(log[3].status, 401);
}

fn header_u64(resp: &Response, name: &str) -> u64 {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

#[tokio::test]
async fn rate_limit_headers_and_burst_limit() {
    let config = SimConfig { burst_limit: 3, burst_window: Duration::from_millis(400), ..SimConfig::default() };
    let sim = start(config).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = sim.call(Method::GET, "tok", V3, None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header_u64(&resp, "x-hubspot-ratelimit-max"), 3);
        assert_eq!(header_u64(&resp, "x-hubspot-ratelimit-interval-milliseconds"), 400);
        assert_eq!(header_u64(&resp, "x-hubspot-ratelimit-daily"), 250_000);
        remaining.push((
            header_u64(&resp, "x-hubspot-ratelimit-remaining"),
            header_u64(&resp, "x-hubspot-ratelimit-daily-remaining"),
        ));
    }
    assert_eq!(remaining, vec![(2, 249_999), (1, 249_998), (0, 249_997)]);

    let resp = sim.call(Method::GET, "tok", V3, None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&resp, "x-hubspot-ratelimit-remaining"), 0);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["message"], "You have reached your ten_secondly_rolling limit.");
    assert!(body["groupName"].is_string() && body["correlationId"].is_string());

    // Another portal has its own budget.
    let resp = sim.call(Method::GET, "other", V3, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_u64(&resp, "x-hubspot-ratelimit-remaining"), 2);

    // The window rolls.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let resp = sim.call(Method::GET, "tok", V3, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_u64(&resp, "x-hubspot-ratelimit-remaining"), 2);
}

#[tokio::test]
async fn daily_limit() {
    let config = SimConfig { daily_limit: 2, ..SimConfig::default() };
    let sim = start(config).await;
    for _ in 0..2 {
        assert_eq!(sim.call(Method::GET, "tok", V3, None).await.status(), StatusCode::OK);
    }
    let resp = sim.call(Method::GET, "tok", V3, None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&resp, "x-hubspot-ratelimit-daily-remaining"), 0);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["policyName"], "DAILY");
    assert_eq!(body["message"], "You have reached your daily limit.");
}

#[tokio::test]
async fn injected_failures() {
    let sim = start(SimConfig::default()).await;
    sim.sim.fail_next("tok", 2, 503);
    for _ in 0..2 {
        let (status, body) = sim.json(Method::GET, "tok", V3, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_error(&body, "INTERNAL_ERROR");
    }
    assert_eq!(sim.call(Method::GET, "tok", V3, None).await.status(), StatusCode::OK);
    // Other portals are unaffected.
    sim.sim.fail_next("tok", 1, 429);
    assert_eq!(sim.call(Method::GET, "other", V3, None).await.status(), StatusCode::OK);
    let (status, body) = sim.json(Method::GET, "tok", V3, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");

    sim.sim.set_failure_rate(1.0);
    let resp = sim.call(Method::GET, "tok", V3, None).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.headers().get("x-hubspot-ratelimit-remaining").is_some());
    assert_error(&resp.json().await.expect("json"), "INTERNAL_ERROR");
    sim.sim.set_failure_rate(0.0);

    sim.sim.set_latency(Duration::from_millis(120));
    let started = std::time::Instant::now();
    assert_eq!(sim.call(Method::GET, "tok", V3, None).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(120));
    sim.sim.set_latency(Duration::ZERO);

    let statuses: Vec<u16> = sim.sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 200, 200, 429, 502, 200]);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_error_bodies() {
    let sim = start(SimConfig::default()).await;
    let (status, body) = sim.json(Method::GET, "tok", "/crm/v3/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "OBJECT_NOT_FOUND");
    let (status, body) = sim.json(Method::PUT, "tok", V3, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&body, "VALIDATION_ERROR");
    let (status, body) = sim.json(Method::GET, "tok", &format!("{V3}?archived=maybe"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "VALIDATION_ERROR");
}

#[tokio::test]
async fn the_write_log_lists_each_write_per_portal_and_a_token_finds_its_portal() {
    let sim = start(SimConfig::default()).await;
    let (status, who) = sim.json(Method::GET, "tok-a", "/_sim/portal-id", None).await;
    assert_eq!(status, StatusCode::OK);
    let portal_a = who["portalId"].as_u64().expect("portal id");
    assert_eq!(sim.sim.portal_id("tok-a"), Some(portal_a));

    let (status, _) = sim.json(Method::POST, "tok-a", V3, Some(prop("logged_one"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = sim.json(Method::GET, "tok-a", &format!("{V3}/logged_one"), None).await;
    assert_eq!(status, StatusCode::OK, "a read is not a write");
    sim.json(Method::POST, "tok-b", V3, Some(prop("other_portal"))).await;

    let url = format!("{}/_sim/writes?portalId={portal_a}", sim.base);
    let log: Value = sim.client.get(url).send().await.expect("writes").json().await.expect("json");
    let writes = log["results"].as_array().expect("results");
    assert_eq!(writes.len(), 1, "{log}");
    assert_eq!(writes[0]["method"], "POST");
    assert_eq!(writes[0]["path"], V3);
    assert_eq!(writes[0]["status"], 201);
    assert!(writes[0]["body"].as_str().expect("body").contains("logged_one"));
    assert_eq!(sim.sim.writes(None).len(), 2, "both portals' writes");
    let (status, _) = sim.json(Method::GET, "", "/_sim/portal-id", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
