//! Bounded, jittered retries.

use std::time::{Duration, Instant};

use hubspot_client::{Error, HubSpotClient, PropertyCreate, RateLimitPolicy};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, hubspot_error, property_json, token};

fn ten_secondly() -> Reply {
    Reply::json(
        429,
        json!({"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"TEN_SECONDLY_ROLLING","groupName":"g"}),
    )
}

fn daily() -> Reply {
    Reply::json(
        429,
        json!({"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"DAILY","groupName":"g"}),
    )
}

#[tokio::test]
async fn bad_gateway_then_ok_is_retried() {
    let server = FakeServer::start().await;
    server
        .push(Reply::text(502, "<html>Bad Gateway</html>"))
        .push(Reply::json(200, json!({"results": [property_json("a")]})));
    let properties = server.client().list_deal_properties(&token()).await.expect("retried");
    assert_eq!(properties.len(), 1);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn persistent_500_gives_up_after_max_retries() {
    let server = FakeServer::start().await;
    server.always(hubspot_error(500, "INTERNAL_ERROR", None, "boom"));
    let err = server.client().list_deal_properties(&token()).await.expect_err("500");
    assert!(matches!(err, Error::Api { status: 500, .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(server.requests().len(), 4, "1 attempt + max_retries (3)");
}

#[tokio::test]
async fn max_retries_zero_means_one_request() {
    let server = FakeServer::start().await;
    server.always(Reply::empty(503));
    let client =
        HubSpotClient::new(hubspot_client::ClientConfig { max_retries: 0, ..server.config() }).expect("client");
    let err = client.list_deal_properties(&token()).await.expect_err("503");
    assert_eq!(err.status(), Some(503));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn locked_and_migration_statuses_are_retried() {
    let server = FakeServer::start().await;
    server
        .push(Reply::empty(423))
        .push(Reply::empty(477).header("Retry-After", "0"))
        .push(Reply::empty(524))
        .push(Reply::json(200, json!({"results": []})));
    server.client().list_deal_properties(&token()).await.expect("retried");
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn create_is_retried_after_503_only() {
    let server = FakeServer::start().await;
    server.push(Reply::empty(503)).push(Reply::json(201, property_json("gomark_a")));
    let created = server
        .client()
        .create_deal_property(&token(), &PropertyCreate::new("gomark_a", "A", "string", "text", "dealinformation"))
        .await
        .expect("created");
    assert_eq!(created.name, "gomark_a");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.method == "POST"));
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn ten_secondly_429_then_ok_succeeds() {
    let server = FakeServer::start().await;
    server.push(ten_secondly()).push(Reply::json(200, json!({"results": []})));
    server.client().list_deal_properties(&token()).await.expect("retried after 429");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn ten_secondly_429_uses_configured_backoff() {
    let server = FakeServer::start().await;
    server.always(ten_secondly());
    let client = HubSpotClient::new(hubspot_client::ClientConfig {
        max_retries: 2,
        rate_limit_backoff: Duration::from_millis(40),
        ..server.config()
    })
    .expect("client");
    let started = Instant::now();
    let err = client.list_deal_properties(&token()).await.expect_err("429");
    // Waits 40 ms × 1 + 40 ms × 2 (+ jitter).
    assert!(started.elapsed() >= Duration::from_millis(120), "{:?}", started.elapsed());
    assert_eq!(err, Error::RateLimited { policy: RateLimitPolicy::TenSecondlyRolling, retry_after: None });
    assert!(err.is_retryable());
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn retry_after_is_reported() {
    let server = FakeServer::start().await;
    server.always(Reply::json(429, json!({"category": "RATE_LIMITS"})).header("Retry-After", "0"));
    let err = server.client().list_deal_properties(&token()).await.expect_err("429");
    assert_eq!(err, Error::RateLimited { policy: RateLimitPolicy::Unknown, retry_after: Some(Duration::ZERO) });
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn daily_429_is_never_retried() {
    let server = FakeServer::start().await;
    server.always(daily());
    let err = server.client().list_deal_properties(&token()).await.expect_err("daily");
    assert_eq!(err, Error::RateLimited { policy: RateLimitPolicy::Daily, retry_after: None });
    assert!(!err.is_retryable());
    assert_eq!(err.status(), Some(429));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn timeout_is_honoured_and_retried() {
    let server = FakeServer::start().await;
    server.always(Reply::json(200, json!({"results": []})).delay(Duration::from_millis(500)));
    let client = HubSpotClient::new(hubspot_client::ClientConfig {
        timeout: Duration::from_millis(50),
        max_retries: 1,
        ..server.config()
    })
    .expect("client");
    let started = Instant::now();
    let err = client.list_deal_properties(&token()).await.expect_err("timeout");
    assert_eq!(err, Error::Timeout);
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_millis(450), "{:?}", started.elapsed());
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = HubSpotClient::new(hubspot_client::ClientConfig {
        base_url: format!("http://{addr}"),
        max_retries: 2,
        retry_base_delay: Duration::from_millis(1),
        ..hubspot_client::ClientConfig::default()
    })
    .expect("client");
    let err = client.list_deal_properties(&token()).await.expect_err("refused");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.status(), None);
}
