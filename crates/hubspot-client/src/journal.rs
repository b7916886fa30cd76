//! The webhooks journal, local variant (one portal's change events, 3 days of history):
//! `GET /webhooks-journal/journal-local/2026-03/{earliest|latest|offset/{o}/next}?installPortalId=`.
//!
//! Each answer names one journal entry: its offset and a temporary, pre-signed URL of a JSON
//! file holding the entry's events, fetched without the Authorization header. An offset older
//! than the 3-day window answers 404 ([`Error::is_expired_offset`]): the reader must recover
//! with a full read (snapshot) and start again from `latest`. Calls need a client-credentials
//! token ([`HubSpotClient::client_credentials_token`]).

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::client::{HubSpotClient, RawResponse, with_query};
use crate::error::{Error, Result};
use crate::token::AccessToken;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// Where the reader is after this entry: pass it to [`HubSpotClient::journal_next`].
    pub current_offset: String,
    /// When `url` stops working (ISO-8601).
    #[serde(default)]
    pub expires_at: String,
    /// Pre-signed URL of the entry's events.
    pub url: String,
}

/// One change event of a journal entry, in the terms GoMark uses (unknown fields ignored).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JournalEvent {
    /// HubSpot's event id (not guaranteed unique: dedupe with `object_id` and `occurred_at`).
    pub event_id: String,
    pub portal_id: Option<u64>,
    pub object_id: String,
    /// e.g. `0-3` for deals.
    pub object_type_id: String,
    /// e.g. `object.propertyChange`, `deal.creation`.
    pub subscription_type: String,
    /// Epoch ms.
    pub occurred_at: i64,
    /// Who made the change (`CRM_UI`, `INTEGRATION`, `API`, …), when HubSpot says.
    pub change_source: String,
    pub source_id: String,
    /// The property a value or definition change is about (empty otherwise).
    pub property_name: String,
}

impl JournalEvent {
    /// Whether the event is about a deal record: a `deal.*` event, or an `object.*` one for
    /// object type `0-3` (definition events such as `property.change` are not).
    pub fn is_about_deals(&self) -> bool {
        self.subscription_type.starts_with("deal.")
            || (self.subscription_type.starts_with("object.") && matches!(self.object_type_id.as_str(), "0-3" | ""))
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn epoch_ms(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or_default(),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .ok()
            .or_else(|| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()))
            .unwrap_or_default(),
        _ => 0,
    }
}

fn event(v: &Value) -> Option<JournalEvent> {
    let o = v.as_object()?;
    let get = |names: &[&str]| names.iter().find_map(|n| o.get(*n));
    let event = JournalEvent {
        event_id: text(get(&["eventId", "id"])),
        portal_id: get(&["portalId", "installPortalId"]).and_then(|p| match p {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }),
        object_id: text(get(&["objectId"])),
        object_type_id: text(get(&["objectTypeId"])),
        subscription_type: text(get(&["subscriptionType", "eventType", "action"])),
        occurred_at: epoch_ms(get(&["occurredAt", "timestamp"])),
        change_source: text(get(&["changeSource"])),
        source_id: text(get(&["sourceId"])),
        property_name: text(get(&["propertyName"])),
    };
    // A record change names its object; a definition change (journal only) its property.
    (!event.object_id.is_empty() || !event.property_name.is_empty()).then_some(event)
}

/// The events of a journal entry file: a JSON array of events, or an object holding one under
/// `events`/`results`/`data` (the shape is not pinned down in HubSpot's docs; accept both).
pub fn parse_entry_events(body: &[u8]) -> Result<Vec<JournalEvent>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::Decode(e.to_string()))?;
    let list = match &value {
        Value::Array(items) => items.as_slice(),
        Value::Object(o) => match ["events", "results", "data"].iter().find_map(|k| o.get(*k)) {
            Some(Value::Array(items)) => items.as_slice(),
            _ => std::slice::from_ref(&value),
        },
        _ => return Err(Error::Decode("journal entry is neither an array nor an object".into())),
    };
    Ok(list.iter().filter_map(event).collect())
}

impl HubSpotClient {
    fn journal_url(&self, token: &AccessToken, portal_id: &str, tail: &[&str]) -> Result<Url> {
        let mut segments = vec!["webhooks-journal", "journal-local", self.api_version_for(token).journal_segment()];
        segments.extend_from_slice(tail);
        Ok(with_query(self.root_url(&segments)?, &[("installPortalId", portal_id)]))
    }

    async fn journal_entry(&self, token: &AccessToken, url: Url) -> Result<Option<JournalEntry>> {
        let response: RawResponse = self.send_json::<()>(token, Method::GET, url, None).await?;
        // No entry (an empty journal, or nothing after the offset yet): 204 or an empty body.
        if response.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let value: Value = response.json()?;
        if value.is_null() || value.get("currentOffset").is_none() {
            return Ok(None);
        }
        serde_json::from_value(value).map(Some).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The oldest entry still in the portal's journal; `None` if it is empty (204 or 404).
    pub async fn journal_earliest(&self, token: &AccessToken, portal_id: &str) -> Result<Option<JournalEntry>> {
        let url = self.journal_url(token, portal_id, &["earliest"])?;
        empty_on_404(self.journal_entry(token, url).await)
    }

    /// The newest entry of the portal's journal; `None` if it is empty (204 or 404).
    pub async fn journal_latest(&self, token: &AccessToken, portal_id: &str) -> Result<Option<JournalEntry>> {
        let url = self.journal_url(token, portal_id, &["latest"])?;
        empty_on_404(self.journal_entry(token, url).await)
    }

    /// The entry after `offset`; `None` when there is none yet. An expired or unknown offset is
    /// [`Error::is_expired_offset`].
    pub async fn journal_next(
        &self,
        token: &AccessToken,
        portal_id: &str,
        offset: &str,
    ) -> Result<Option<JournalEntry>> {
        let url = self.journal_url(token, portal_id, &["offset", offset, "next"])?;
        self.journal_entry(token, url).await
    }

    /// The events of `entry`, from its pre-signed URL (no Authorization header, no budget: it
    /// is not a HubSpot API call). One attempt: the reader simply tries again next poll.
    pub async fn journal_entry_events(&self, entry: &JournalEntry) -> Result<Vec<JournalEvent>> {
        let body = self.download(&entry.url).await?;
        parse_entry_events(&body)
    }
}

/// An empty journal answers 404 to earliest/latest: that is no entry, not an error.
fn empty_on_404(result: Result<Option<JournalEntry>>) -> Result<Option<JournalEntry>> {
    match result {
        Err(Error::Api { status: 404, .. }) => Ok(None),
        other => other,
    }
}

impl Error {
    /// The journal answered 404 to an offset: it fell out of the 3-day window (or never existed).
    pub fn is_expired_offset(&self) -> bool {
        self.status() == Some(404)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_files_parse_in_both_shapes() -> Result<()> {
        let array = br#"[{"eventId":100,"portalId":62515,"objectId":123,"objectTypeId":"0-3","subscriptionType":"object.propertyChange","occurredAt":1700000000000,"changeSource":"CRM_UI","sourceId":"userId:7"}]"#;
        let events = parse_entry_events(array)?;
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.event_id.as_str(), e.object_id.as_str(), e.occurred_at), ("100", "123", 1_700_000_000_000));
        assert_eq!((e.portal_id, e.change_source.as_str(), e.source_id.as_str()), (Some(62515), "CRM_UI", "userId:7"));
        assert!(e.is_about_deals());
        let wrapped =
            br#"{"events":[{"eventId":"e1","objectId":"9","objectTypeId":"0-1","occurredAt":"2026-12-01T10:00:00Z"}]}"#;
        let events = parse_entry_events(wrapped)?;
        assert_eq!(events[0].occurred_at, 1_796_119_200_000);
        assert!(!events[0].is_about_deals(), "a contact");
        let definition = br#"[{"eventId":1,"objectId":"5","objectTypeId":"0-3","subscriptionType":"property.change"}]"#;
        assert!(!parse_entry_events(definition)?[0].is_about_deals(), "a property definition");
        assert!(parse_entry_events(b"42").is_err());
        Ok(())
    }

    #[test]
    fn journal_paths_name_the_portal() -> Result<()> {
        let c = HubSpotClient::new(crate::ClientConfig {
            base_url: "http://h:1".into(),
            ..crate::ClientConfig::default()
        })?;
        let t = AccessToken::new("t");
        assert_eq!(
            c.journal_url(&t, "42", &["offset", "a/b", "next"])?.as_str(),
            "http://h:1/webhooks-journal/journal-local/2026-03/offset/a%2Fb/next?installPortalId=42"
        );
        Ok(())
    }
}
