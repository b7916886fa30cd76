//! `X-HubSpot-RateLimit-*` headers are exposed per token.

use std::time::Duration;

use hubspot_client::{AccessToken, RateLimitInfo};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, token};

#[tokio::test]
async fn headers_are_parsed_and_tracked_per_token() {
    let server = FakeServer::start().await;
    server
        .push(
            Reply::json(200, json!({"results": []}))
                .header("X-HubSpot-RateLimit-Max", "190")
                .header("X-HubSpot-RateLimit-Remaining", "189")
                .header("X-HubSpot-RateLimit-Interval-Milliseconds", "10000")
                .header("X-HubSpot-RateLimit-Daily", "625000")
                .header("X-HubSpot-RateLimit-Daily-Remaining", "624999"),
        )
        // An OAuth-style response: no daily headers.
        .push(
            Reply::json(200, json!({"results": []}))
                .header("X-HubSpot-RateLimit-Max", "110")
                .header("X-HubSpot-RateLimit-Remaining", "7")
                .header("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
        )
        // A response without headers does not clear what we know.
        .push(Reply::json(200, json!({"results": []})));
    let client = server.client();
    let portal_a = token();
    let portal_b = AccessToken::new("pat-na1-other-portal");
    assert_eq!(client.last_rate_limit(&portal_a), None);

    client.list_deal_properties(&portal_a).await.expect("a");
    assert_eq!(
        client.last_rate_limit(&portal_a),
        Some(RateLimitInfo {
            max: Some(190),
            remaining: Some(189),
            interval: Some(Duration::from_secs(10)),
            daily: Some(625_000),
            daily_remaining: Some(624_999),
        })
    );
    assert_eq!(client.last_rate_limit(&portal_b), None);

    client.list_deal_properties(&portal_b).await.expect("b");
    let b = RateLimitInfo {
        max: Some(110),
        remaining: Some(7),
        interval: Some(Duration::from_secs(10)),
        daily: None,
        daily_remaining: None,
    };
    assert_eq!(client.last_rate_limit(&portal_b), Some(b));
    assert_eq!(client.last_rate_limit(&portal_a).and_then(|i| i.remaining), Some(189));

    // Clones share the table.
    let clone = client.clone();
    clone.list_deal_properties(&portal_b).await.expect("b again");
    assert_eq!(client.last_rate_limit(&portal_b), Some(b));
}

#[tokio::test]
async fn headers_on_error_responses_are_recorded() {
    let server = FakeServer::start().await;
    server.push(
        Reply::json(429, json!({"message": "You have reached your daily limit.", "policyName": "DAILY"}))
            .header("X-HubSpot-RateLimit-Daily", "250000")
            .header("X-HubSpot-RateLimit-Daily-Remaining", "0"),
    );
    let client = server.client();
    client.list_deal_properties(&token()).await.expect_err("daily");
    assert_eq!(client.last_rate_limit(&token()).and_then(|i| i.daily_remaining), Some(0));
}
