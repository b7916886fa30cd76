//! Moving a portal's pinned API version: planned as one action, applied only after the
//! conformance probe passed on the new version (then every call uses it), refused with the
//! pin kept when the portal does not work on it, and moved back by the previous desired state.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gomark_hubspot_sync::converge::Converger;
use gomark_hubspot_sync::credentials::{Credential, Vault};
use gomark_hubspot_sync::{MIGRATIONS, Portals};
use gomark_storage::Database;
use gtm_config::{EffectiveConfig, Target};
use hubspot_client::{ApiVersion, ClientConfig, HubSpotClient};
use hubspot_sim::SimConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const TOKEN: &str = "sk-version";

#[derive(Clone)]
struct Proxy {
    upstream: String,
    /// When set, every 2026-09 path answers 404 (the portal cannot be used on it).
    refuse_2026_09: Arc<AtomicBool>,
    http: reqwest::Client,
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    if p.refuse_2026_09.load(Ordering::SeqCst) && path.contains("/2026-09") {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"status": "error", "message": "not found", "category": "OBJECT_NOT_FOUND"})),
        )
            .into_response();
    }
    let method = req.method().clone();
    let auth = req.headers().get("authorization").cloned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let mut out =
        p.http.request(method, format!("{}{path}", p.upstream)).body(body).header("content-type", "application/json");
    if let Some(auth) = auth {
        out = out.header("authorization", auth);
    }
    match out.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = r.bytes().await.unwrap_or_default();
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(bytes))
                .unwrap_or_default()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn desired(version: &str) -> EffectiveConfig {
    EffectiveConfig { company_id: "c1".into(), api_version: Some(version.into()), ..EffectiveConfig::default() }
}

#[tokio::test]
async fn a_version_move_is_probed_then_pinned_and_can_be_rolled_back() {
    let (sim, addr) = hubspot_sim::spawn(SimConfig::default(), ([127, 0, 0, 1], 0).into()).await.expect("sim");
    sim.register_service_key(TOKEN, 4343);
    sim.create_deals(TOKEN, 3, "appointmentscheduled", "default");
    let refuse = Arc::new(AtomicBool::new(false));
    let proxy =
        Proxy { upstream: format!("http://{addr}"), refuse_2026_09: refuse.clone(), http: reqwest::Client::new() };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let tdb = gomark_testkit::TestDatabase::sqlite();
    let db = Database::connect(&tdb.settings).await.expect("connect");
    db.migrate(&MIGRATIONS).await.expect("migrate");
    let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let portals = Portals::new(db.clone(), vault).with_default_version(ApiVersion::Date2026_03);
    portals.register("c1", "4343", &Credential::ServiceKey { token: TOKEN.into() }).await.expect("register");
    let client = HubSpotClient::new(ClientConfig {
        base_url: format!("http://{proxy_addr}"),
        max_retries: 0,
        ..ClientConfig::default()
    })
    .expect("client");
    let converger = Converger::new(db, portals.clone(), client);
    let pin = || async { portals.get("c1").await.expect("get").expect("portal").api_version };

    // Declaring the current version plans nothing; a new one plans exactly one action.
    assert!(converger.plan("c1", &desired("2026-03")).await.expect("plan").actions.is_empty());
    let plan = converger.plan("c1", &desired("2026-09")).await.expect("plan");
    assert_eq!(plan.actions.len(), 1, "{plan}");
    assert_eq!(plan.actions[0].target, Target::ApiVersion);
    assert!(plan.to_string().contains("2026-03") && plan.to_string().contains("2026-09"), "{plan}");

    // The portal does not answer on 2026-09: the probe fails, the pin stays, nothing retries.
    refuse.store(true, Ordering::SeqCst);
    let failed = converger.apply("c1", &desired("2026-09"), None, None).await.expect("apply");
    assert!(failed.performed.is_empty(), "{:?}", failed.performed);
    assert_eq!(failed.failed.len(), 1);
    assert!(failed.failed[0].1.contains("2026-09"), "the reason names the version: {}", failed.failed[0].1);
    assert_eq!(pin().await, ApiVersion::Date2026_03);

    // It does now: probed, pinned, and every call (the next plan too) uses 2026-09.
    refuse.store(false, Ordering::SeqCst);
    sim.clear_requests();
    let moved = converger.apply("c1", &desired("2026-09"), None, None).await.expect("apply");
    assert_eq!(moved.performed.len(), 1, "{:?}", moved.failed);
    assert_eq!(pin().await, ApiVersion::Date2026_09);
    let probed: Vec<String> = sim.requests().iter().map(|r| r.path.clone()).collect();
    assert!(probed.iter().any(|p| p == "/crm/objects/2026-09/deals"), "the probe read deals on 2026-09: {probed:?}");
    assert!(converger.plan("c1", &desired("2026-09")).await.expect("plan").actions.is_empty());
    // A plan reads only what is declared: with a property declared, it reads on 2026-09.
    let with_property = EffectiveConfig {
        deal_properties: vec![gtm_config::DealProperty {
            name: "gomark_probe".into(),
            label: "Probe".into(),
            property_type: gtm_config::PropertyType::String,
            field_type: gtm_config::FieldType::Text,
            group_name: "dealinformation".into(),
            description: None,
            options: Vec::new(),
            has_unique_value: false,
        }],
        ..desired("2026-09")
    };
    sim.clear_requests();
    converger.plan("c1", &with_property).await.expect("plan a property");
    let paths: Vec<String> = sim.requests().iter().map(|r| r.path.clone()).collect();
    assert!(!paths.is_empty() && paths.iter().all(|p| p.contains("/2026-09")), "{paths:?}");

    // Rolling back to the previous desired state moves the pin back the same way.
    let back = converger.apply("c1", &desired("2026-03"), None, None).await.expect("apply");
    assert_eq!(back.performed.len(), 1, "{:?}", back.failed);
    assert_eq!(pin().await, ApiVersion::Date2026_03);
    // Undeclared: the pin is left alone.
    let none = EffectiveConfig { company_id: "c1".into(), ..EffectiveConfig::default() };
    assert!(converger.plan("c1", &none).await.expect("plan").actions.is_empty());
}
