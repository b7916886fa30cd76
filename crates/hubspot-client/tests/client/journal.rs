//! The webhooks journal: entry paths, the pre-signed download without a bearer, an empty
//! journal, and the 404 of an expired offset.

use hubspot_client::{AccessToken, ApiVersion};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, call};

fn cc_token() -> AccessToken {
    AccessToken::new("cc-token").for_portal("62515").with_api_version(ApiVersion::Date2026_09)
}

#[tokio::test]
async fn reads_entries_and_downloads_their_events() {
    let server = FakeServer::start().await;
    let file = format!("{}/files/entry-1.json", server.base_url);
    server
        .push(Reply::json(200, json!({"currentOffset": "off-1", "expiresAt": "2026-12-03T10:00:00Z", "url": file})))
        .push(Reply::json(200, json!([{"eventId": 7, "objectId": 42, "objectTypeId": "0-3", "occurredAt": 1000, "subscriptionType": "object.creation", "changeSource": "INTEGRATION", "sourceId": "app:9"}])))
        .push(Reply::empty(204))
        .push(Reply::json(404, json!({"status": "error", "message": "offset expired", "category": "OBJECT_NOT_FOUND"})));
    let client = server.client();
    let token = cc_token();
    let entry = client.journal_earliest(&token, "62515").await.expect("earliest").expect("an entry");
    assert_eq!(entry.current_offset, "off-1");
    let events = client.journal_entry_events(&entry).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].object_id.as_str(), events[0].change_source.as_str()), ("42", "INTEGRATION"));
    assert_eq!(client.journal_next(&token, "62515", "off-1").await.expect("caught up"), None);
    let expired = client.journal_next(&token, "62515", "off-0").await.expect_err("expired");
    assert!(expired.is_expired_offset(), "{expired:?}");

    let calls = server.calls();
    assert_eq!(calls[0], call("GET", "/webhooks-journal/journal-local/2026-03/earliest", "installPortalId=62515"));
    assert_eq!(calls[1], call("GET", "/files/entry-1.json", ""));
    assert_eq!(
        calls[2],
        call("GET", "/webhooks-journal/journal-local/2026-03/offset/off-1/next", "installPortalId=62515")
    );
    let requests = server.requests();
    assert_eq!(requests[0].headers.get("authorization").map(String::as_str), Some("Bearer cc-token"));
    assert!(!requests[1].headers.contains_key("authorization"), "pre-signed URLs take no bearer");
}
