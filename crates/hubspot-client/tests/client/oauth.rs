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
            ApiVersion::V3 => "/oauth/v1/token",
            ApiVersion::Date2026_03 | ApiVersion::Date2026_09 => "/oauth/2026-03/token",
        };
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", path));
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
