//! OAuth refresh: path per version, form body, no bearer header, secrets kept out of errors.

use std::time::Duration;

use hubspot_client::{AccessToken, ApiVersion, ClientConfig, Error, HubSpotClient};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, VERSIONS};

const SECRET: &str = "cs-7e57-5ec2e7";
const REFRESH: &str = "na1-rt-0123-4567-89ab";

#[tokio::test]
async fn refresh_posts_a_form_to_the_versioned_token_endpoint() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        server.push(Reply::json(
            200,
            json!({"token_type": "bearer", "refresh_token": "na1-rt-new", "access_token": "CJT-new-access", "expires_in": 1800, "hub_id": 62515, "scopes": ["crm.objects.deals.read"]}),
        ));
        let client = server.client_for(version);
        let refresh = AccessToken::new(REFRESH).for_portal("62515");
        let tokens = client.refresh_access_token("client-id-1", SECRET, &refresh).await.expect("refresh");
        assert_eq!(tokens.access_token.expose(), "CJT-new-access");
        assert_eq!(tokens.refresh_token.expose(), "na1-rt-new");
        assert_eq!(tokens.access_token.portal(), Some("62515"));
        assert_eq!(tokens.expires_in, Duration::from_secs(1800));
        assert_eq!(tokens.hub_id, Some(62515));
        let debug = format!("{tokens:?}");
        assert!(!debug.contains("CJT-new-access") && !debug.contains("na1-rt-new"), "{debug}");

        let requests = server.requests();
        let request = &requests[0];
        let path = match version {
            ApiVersion::V3 => "/oauth/v1/token".to_owned(),
            _ => "/oauth/2026-03/token".to_owned(),
        };
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", path.as_str()));
        assert_eq!(request.headers.get("content-type").map(String::as_str), Some("application/x-www-form-urlencoded"));
        assert!(!request.headers.contains_key("authorization"));
        assert_eq!(
            String::from_utf8_lossy(&request.body),
            format!("grant_type=refresh_token&client_id=client-id-1&client_secret={SECRET}&refresh_token={REFRESH}")
        );
    }
}

#[tokio::test]
async fn refresh_errors_never_contain_secrets() {
    let server = FakeServer::start().await;
    server
        .push(Reply::json(
            400,
            json!({"status": "BAD_REFRESH_TOKEN", "message": format!("missing or unknown refresh token {REFRESH} for {SECRET}"), "correlationId": "c", "category": "BAD_REFRESH_TOKEN"}),
        ))
        // A success body of the wrong shape must not quote the tokens it carries.
        .push(Reply::json(200, json!({"access_token": "CJT-leaky", "refresh_token": 5, "expires_in": "soon"})));
    let client = HubSpotClient::new(ClientConfig { max_retries: 0, ..server.config() }).expect("client");
    let refresh = AccessToken::new(REFRESH);
    let rejected = client.refresh_access_token("id", SECRET, &refresh).await.expect_err("400");
    assert!(matches!(rejected, Error::Api { status: 400, .. }), "{rejected:?}");
    let malformed = client.refresh_access_token("id", SECRET, &refresh).await.expect_err("decode");
    assert!(matches!(malformed, Error::Decode(_)), "{malformed:?}");
    for err in [rejected, malformed] {
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(SECRET) && !text.contains(REFRESH) && !text.contains("CJT-leaky"), "{text}");
        }
    }
}

#[tokio::test]
async fn a_pinned_refresh_token_uses_its_version_whatever_the_client_default() {
    let server = FakeServer::start().await;
    server.push(Reply::json(200, json!({"refresh_token": "rt", "access_token": "at", "expires_in": 60})));
    let client = server.client_for(ApiVersion::V3);
    let refresh = AccessToken::new(REFRESH).with_api_version(ApiVersion::Date2026_03);
    client.refresh_access_token("id", SECRET, &refresh).await.expect("refresh");
    assert_eq!(server.requests()[0].path, "/oauth/2026-03/token");
}

#[tokio::test]
async fn client_credentials_token_for_the_journal() {
    let server = FakeServer::start().await;
    server.push(Reply::json(200, json!({"access_token": "cc-access", "expires_in": 1800, "token_type": "bearer"})));
    let client = server.client_for(ApiVersion::V3);
    let portal = AccessToken::new("pat-unused").for_portal("62515").with_api_version(ApiVersion::Date2026_03);
    let token = client
        .client_credentials_token(&portal, "cid", SECRET, hubspot_client::JOURNAL_READ_SCOPE)
        .await
        .expect("token");
    assert_eq!(token.access_token.expose(), "cc-access");
    assert_eq!(token.access_token.portal(), Some("62515"));
    assert_eq!(token.access_token.api_version(), Some(ApiVersion::Date2026_03));
    assert_eq!(token.expires_in, Duration::from_secs(1800));
    let request = &server.requests()[0];
    assert_eq!(request.path, "/oauth/2026-03/token");
    assert!(!request.headers.contains_key("authorization"), "the portal token is never sent");
    assert_eq!(
        String::from_utf8_lossy(&request.body),
        format!(
            "grant_type=client_credentials&client_id=cid&client_secret={SECRET}&scope=developer.webhooks_journal.read"
        )
    );
}
