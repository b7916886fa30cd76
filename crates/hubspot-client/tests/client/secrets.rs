//! The token never shows up in Debug/Display of tokens, clients or errors.

use std::time::Duration;

use hubspot_client::{Error, HubSpotClient};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, TOKEN, token};

fn assert_clean(text: &str) {
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(!text.contains("11111111-2222"), "token fragment leaked: {text}");
}

#[tokio::test]
async fn token_formatting_is_redacted() {
    let t = token();
    assert_eq!(format!("{t:?}"), "AccessToken(***)");
    assert_eq!(format!("{t}"), "AccessToken(***)");
    assert_eq!(t.expose(), TOKEN);
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let server = FakeServer::start().await;
    server
        // HubSpot echoing the token back must not leak it either.
        .push(Reply::json(
            401,
            json!({"status":"error","message":format!("Authentication credentials not found: {TOKEN}"),"category":"INVALID_AUTHENTICATION","correlationId":"x"}),
        ))
        .push(Reply::text(500, TOKEN))
        .always(Reply::text(200, TOKEN));
    let client =
        HubSpotClient::new(hubspot_client::ClientConfig { max_retries: 0, ..server.config() }).expect("client");
    let t = token();
    let mut errors: Vec<Error> = Vec::new();
    errors.push(client.list_deal_properties(&t).await.expect_err("401"));
    errors.push(client.list_deal_properties(&t).await.expect_err("500"));
    errors.push(client.list_deal_properties(&t).await.expect_err("decode"));

    let timeout_client = HubSpotClient::new(hubspot_client::ClientConfig {
        max_retries: 0,
        timeout: Duration::from_millis(30),
        ..server.config()
    })
    .expect("client");
    server.push(Reply::text(200, "{}").delay(Duration::from_millis(300)));
    errors.push(timeout_client.list_deal_properties(&t).await.expect_err("timeout"));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let refused = HubSpotClient::new(hubspot_client::ClientConfig {
        base_url: format!("http://{addr}"),
        max_retries: 0,
        ..hubspot_client::ClientConfig::default()
    })
    .expect("client");
    errors.push(refused.list_deal_properties(&t).await.expect_err("refused"));

    assert!(matches!(errors[0], Error::Api { status: 401, .. }));
    assert!(matches!(errors[1], Error::Api { status: 500, ref message, .. } if message == "unexpected response"));
    assert!(matches!(errors[2], Error::Decode(_)));
    assert_eq!(errors[3], Error::Timeout);
    assert!(matches!(errors[4], Error::Transport(_)));
    for err in &errors {
        assert_clean(&err.to_string());
        assert_clean(&format!("{err:?}"));
    }
    assert_clean(&format!("{client:?}"));
}

#[tokio::test]
async fn labelled_tokens_and_new_calls_stay_redacted() {
    let t = token().for_portal("62515");
    for text in [format!("{t:?}"), format!("{t}"), t.budget_key()] {
        assert_clean(&text);
    }
    let server = FakeServer::start().await;
    server.always(Reply::json(
        400,
        json!({"status":"error","message":format!("bad token {TOKEN}"),"category":"VALIDATION_ERROR","correlationId":"x","errors":[{"message":"m","subCategory":TOKEN}]}),
    ));
    let client = server.client();
    let mut errors: Vec<Error> = vec![
        client.list_deals(&t, &[], None, 10).await.expect_err("deals"),
        client.search_deals(&t, &hubspot_client::SearchRequest::default()).await.expect_err("search"),
        client.list_deal_pipelines(&t).await.expect_err("pipelines"),
        client.batch_read_deals(&t, &["1"], &[]).await.expect_err("batch"),
    ];
    errors.push(client.sync_modified_deals(&t, 0, 1, &[], 10, |_| {}).await.expect_err("sync"));
    for err in &errors {
        assert!(matches!(err, Error::Validation(_)) && err.status() == Some(400), "{err:?}");
        assert_clean(&err.to_string());
        assert_clean(&format!("{err:?}"));
    }
}
