//! Incremental sync against a fake search endpoint that behaves like HubSpot's: one sort rule,
//! ties in arbitrary (but stable) order, `limit ≤ 200`, and a 400 past 10,000 results.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hubspot_client::{ClientConfig, Error, HubSpotClient, IncrementalSync};
use serde_json::{Value, json};

use crate::fake_server::token;

const BASE: i64 = 1_767_225_600_000;
const UNTIL: i64 = BASE + 40_000_000;
const BULK_TS: i64 = BASE + 5_000_000;

#[derive(Clone)]
struct FakeDeal {
    id: u64,
    ts: i64,
}

#[derive(Default)]
struct Log {
    requests: Vec<Value>,
    rejected: usize,
}

struct Search {
    deals: Vec<FakeDeal>,
    log: Mutex<Log>,
}

/// 25,000 deals in the window, 12,000 of them stamped with one timestamp by a "bulk update",
/// the rest spread with some ties; plus deals just outside the window on both sides.
fn portal() -> Vec<FakeDeal> {
    let mut deals = Vec::new();
    for id in 1..=25_000u64 {
        let ts = if id % 25 < 12 {
            BULK_TS
        } else {
            // 13,000 deals over 9,973 distinct instants, ids scrambled against time order.
            BASE + i64::try_from((id * 7_919) % 9_973).unwrap_or(0) * 3_001
        };
        deals.push(FakeDeal { id, ts });
    }
    deals.extend((25_001..=25_050).map(|id| FakeDeal { id, ts: UNTIL + 1 }));
    deals.extend((25_051..=25_100).map(|id| FakeDeal { id, ts: BASE - 1 }));
    deals
}

fn number(v: &Value) -> Option<i64> {
    v.as_str()?.parse().ok()
}

fn matches(deal: &FakeDeal, filter: &Value) -> bool {
    let actual = match filter["propertyName"].as_str() {
        Some("hs_lastmodifieddate") => deal.ts,
        Some("hs_object_id") => i64::try_from(deal.id).unwrap_or(i64::MAX),
        _ => return false,
    };
    let Some(value) = number(&filter["value"]) else { return false };
    match filter["operator"].as_str() {
        Some("EQ") => actual == value,
        Some("GT") => actual > value,
        Some("GTE") => actual >= value,
        Some("LT") => actual < value,
        Some("LTE") => actual <= value,
        _ => false,
    }
}

/// HubSpot's order among equal sort keys is unspecified: use a scrambled but stable one.
fn tie_key(id: u64) -> u64 {
    id.wrapping_mul(2_654_435_761) % 4_294_967_291
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": "error", "message": message, "category": "VALIDATION_ERROR", "correlationId": "c"})),
    )
        .into_response()
}

async fn search(State(state): State<Arc<Search>>, Json(body): Json<Value>) -> Response {
    let limit = body["limit"].as_u64().unwrap_or(10);
    let after: u64 = body["after"].as_str().and_then(|a| a.parse().ok()).unwrap_or(0);
    let sorts = body["sorts"].as_array().cloned().unwrap_or_default();
    {
        let mut log = state.log.lock().expect("lock");
        log.requests.push(body.clone());
        if limit > 200 || sorts.len() > 1 || after + limit > 10_000 {
            log.rejected += 1;
            return bad_request("paging past 10000 results / bad limit / several sorts");
        }
    }
    let groups = body["filterGroups"].as_array().cloned().unwrap_or_default();
    let mut hits: Vec<&FakeDeal> = state
        .deals
        .iter()
        .filter(|d| groups.iter().any(|g| g["filters"].as_array().is_some_and(|fs| fs.iter().all(|f| matches(d, f)))))
        .collect();
    match sorts.first().and_then(|s| s["propertyName"].as_str()) {
        Some("hs_object_id") => hits.sort_by_key(|d| d.id),
        _ => hits.sort_by_key(|d| (d.ts, tie_key(d.id))),
    }
    let total = hits.len();
    let start = usize::try_from(after).unwrap_or(usize::MAX).min(total);
    let end = (start + usize::try_from(limit).unwrap_or(0)).min(total);
    let results: Vec<Value> = hits[start..end]
        .iter()
        .map(|d| {
            // Both encodings HubSpot uses for datetimes.
            let modified = if d.id % 2 == 0 {
                d.ts.to_string()
            } else {
                chrono::DateTime::from_timestamp_millis(d.ts).map(|t| t.to_rfc3339()).unwrap_or_default()
            };
            json!({
                "id": d.id.to_string(),
                "properties": {"hs_lastmodifieddate": modified, "hs_object_id": d.id.to_string(), "dealname": format!("Deal {}", d.id)},
                "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z", "archived": false
            })
        })
        .collect();
    let mut response = json!({"total": total, "results": results});
    if end < total {
        response["paging"] = json!({"next": {"after": end.to_string(), "link": "x"}});
    }
    Json(response).into_response()
}

async fn start(deals: Vec<FakeDeal>) -> (HubSpotClient, Arc<Search>, tokio::task::JoinHandle<()>) {
    let state = Arc::new(Search { deals, log: Mutex::new(Log::default()) });
    let app = Router::new().fallback(axum::routing::post(search)).with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    let client = HubSpotClient::new(ClientConfig {
        base_url: format!("http://{addr}"),
        max_retries: 0,
        timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    })
    .expect("client");
    (client, state, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deal_exactly_once_despite_12000_sharing_one_timestamp() {
    let deals = portal();
    let expected: BTreeMap<u64, i64> =
        deals.iter().filter(|d| (BASE..=UNTIL).contains(&d.ts)).map(|d| (d.id, d.ts)).collect();
    assert_eq!(expected.len(), 25_000);
    assert_eq!(expected.values().filter(|ts| **ts == BULK_TS).count(), 12_000);
    let (client, state, task) = start(deals).await;

    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut previous_ts = i64::MIN;
    let mut in_order = true;
    let mut pages = 0usize;
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        client.sync_modified_deals(&token(), BASE, UNTIL, &["dealname"], 200, |page| {
            pages += 1;
            for deal in page {
                let ts = deal.last_modified().expect("timestamp");
                in_order &= ts >= previous_ts;
                previous_ts = ts;
                assert!(deal.name().is_some());
                *seen.entry(deal.id.parse().expect("numeric id")).or_default() += 1;
            }
        }),
    )
    .await
    .expect("sync terminates")
    .expect("sync succeeds");
    task.abort();

    assert_eq!(seen.len(), 25_000, "every deal in the window");
    assert!(seen.values().all(|n| *n == 1), "each exactly once");
    assert!(seen.keys().all(|id| expected.contains_key(id)), "nothing outside the window");
    assert!(in_order, "handed out in timestamp order");
    assert!(pages > 0);
    assert_eq!(outcome.deals_seen, 25_000);
    let newest = expected.values().max().copied();
    assert_eq!(outcome.last_modified_ms, newest);
    let newest_id = expected.iter().filter(|(_, ts)| Some(**ts) == newest).map(|(id, _)| *id).max();
    assert_eq!(outcome.last_id, newest_id.map(|id| id.to_string()));

    let log = state.log.lock().expect("lock");
    assert_eq!(log.rejected, 0, "never paged past 10,000");
    let tie_queries =
        log.requests.iter().filter(|r| r["sorts"][0]["propertyName"] == "hs_object_id" && r["after"].is_null()).count();
    assert!(tie_queries >= 2, "the 12,000-deal timestamp needs an id-ordered restart: {tie_queries}");
    // 25,000 deals at 200 per page: ~125 pages plus a bounded number of re-reads.
    assert!(log.requests.len() < 260, "{} requests", log.requests.len());
    for request in &log.requests {
        assert_eq!(request["limit"], 200);
        assert_eq!(request["sorts"].as_array().map(Vec::len), Some(1));
        let props = request["properties"].as_array().cloned().unwrap_or_default();
        assert!(props.contains(&json!("hs_lastmodifieddate")) && props.contains(&json!("hs_object_id")));
    }
    let first = &log.requests[0];
    assert_eq!(
        first["filterGroups"],
        json!([{"filters": [
            {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": BASE.to_string()},
            {"propertyName": "hs_lastmodifieddate", "operator": "LTE", "value": UNTIL.to_string()}
        ]}])
    );
    assert_eq!(first["sorts"], json!([{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]));
}

#[tokio::test]
async fn resumes_inside_a_timestamp_and_checks_page_size() {
    let deals: Vec<FakeDeal> = (1..=30).map(|id| FakeDeal { id, ts: if id <= 20 { BASE } else { BASE + 1 } }).collect();
    let (client, state, task) = start(deals).await;
    let mut ids = Vec::new();
    let start_at = IncrementalSync { cursor_ms: BASE, last_id: Some("15".into()) };
    let outcome = client
        .sync_modified_deals_from(&token(), start_at, UNTIL, &[], 4, |page| ids.extend(page.into_iter().map(|d| d.id)))
        .await
        .expect("sync");
    let expected: Vec<String> = (16..=30).map(|id: u64| id.to_string()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id.parse::<u64>().unwrap_or(0));
    assert_eq!(sorted, expected);
    assert_eq!(ids.len(), 15);
    assert_eq!((outcome.deals_seen, outcome.last_modified_ms), (15, Some(BASE + 1)));
    {
        let log = state.log.lock().expect("lock");
        assert_eq!(
            log.requests[0]["filterGroups"],
            json!([{"filters": [
                {"propertyName": "hs_lastmodifieddate", "operator": "EQ", "value": BASE.to_string()},
                {"propertyName": "hs_object_id", "operator": "GT", "value": "15"}
            ]}])
        );
        let last_query = log.requests.iter().rev().find(|r| r["after"].is_null()).cloned().unwrap_or_default();
        assert_eq!(last_query["filterGroups"][0]["filters"][0]["value"], (BASE + 1).to_string());
    }

    for page_size in [0, 201] {
        let err = client.sync_modified_deals(&token(), BASE, UNTIL, &[], page_size, |_| {}).await.expect_err("size");
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    }
    // An empty or inverted window costs nothing.
    let before = state.log.lock().expect("lock").requests.len();
    let none = client.sync_modified_deals(&token(), UNTIL, BASE, &[], 100, |_| {}).await.expect("empty");
    assert_eq!((none.deals_seen, none.last_modified_ms), (0, None));
    assert_eq!(state.log.lock().expect("lock").requests.len(), before);
    task.abort();
}
