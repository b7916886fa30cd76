//! Deal records (CONTRACT.md §6): every property value is a string (or `null`); numbers are
//! decimal strings and dates ISO-8601 or epoch-millisecond strings.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::serde_util::null_default;

/// `dealname`.
pub const DEAL_NAME: &str = "dealname";
/// `dealstage`: the stage **id**.
pub const DEAL_STAGE: &str = "dealstage";
/// `pipeline`: the pipeline **id**.
pub const PIPELINE: &str = "pipeline";
/// `amount`: decimal string.
pub const AMOUNT: &str = "amount";
/// `deal_currency_code`: ISO 4217 code of `amount` (the account's company currency unless set).
pub const DEAL_CURRENCY_CODE: &str = "deal_currency_code";
/// `closedate`.
pub const CLOSE_DATE: &str = "closedate";
/// `createdate`.
pub const CREATE_DATE: &str = "createdate";
/// `hubspot_owner_id`.
pub const OWNER: &str = "hubspot_owner_id";
/// `hs_lastmodifieddate` (deals; contacts use `lastmodifieddate`).
pub const LAST_MODIFIED: &str = "hs_lastmodifieddate";
/// `hs_object_id`: the record id as a property (searchable and sortable).
pub const OBJECT_ID: &str = "hs_object_id";

/// A deal (`SimplePublicObject`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deal {
    /// Record id (numeric string).
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Requested properties; `None` for `null`. Non-string JSON values are kept as their text.
    #[serde(default, deserialize_with = "lenient_properties")]
    pub properties: BTreeMap<String, Option<String>>,
    /// ISO-8601 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// ISO-8601 last-update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Archived (only returned when asked for archived records).
    #[serde(default, deserialize_with = "null_default")]
    pub archived: bool,
}

impl Deal {
    /// A property's value; `None` when absent, `null` or empty (HubSpot returns `""` for a
    /// cleared value).
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name)?.as_deref().filter(|v| !v.is_empty())
    }

    /// `dealname`.
    pub fn name(&self) -> Option<&str> {
        self.property(DEAL_NAME)
    }

    /// `dealstage` (a stage id, never a label).
    pub fn stage(&self) -> Option<&str> {
        self.property(DEAL_STAGE)
    }

    /// `pipeline` (a pipeline id).
    pub fn pipeline(&self) -> Option<&str> {
        self.property(PIPELINE)
    }

    /// `amount` as a number; `None` when absent or not a finite number.
    pub fn amount(&self) -> Option<f64> {
        self.property(AMOUNT)?.trim().parse::<f64>().ok().filter(|a| a.is_finite())
    }

    /// `amount` exactly as HubSpot wrote it (a decimal string), trimmed; `None` when absent
    /// or empty. Money is parsed from this text, never from [`Deal::amount`]'s float.
    pub fn amount_text(&self) -> Option<&str> {
        self.property(AMOUNT).map(str::trim).filter(|a| !a.is_empty())
    }

    /// `deal_currency_code`: the currency of `amount`.
    pub fn currency_code(&self) -> Option<&str> {
        self.property(DEAL_CURRENCY_CODE).map(str::trim).filter(|c| !c.is_empty())
    }

    /// `closedate` in epoch milliseconds (see [`parse_timestamp_ms`]).
    pub fn close_date(&self) -> Option<i64> {
        parse_timestamp_ms(self.property(CLOSE_DATE)?)
    }

    /// `createdate` in epoch milliseconds.
    pub fn create_date(&self) -> Option<i64> {
        parse_timestamp_ms(self.property(CREATE_DATE)?)
    }

    /// `hubspot_owner_id`.
    pub fn owner(&self) -> Option<&str> {
        self.property(OWNER)
    }

    /// `hs_lastmodifieddate` in epoch milliseconds (see [`parse_timestamp_ms`]).
    pub fn last_modified(&self) -> Option<i64> {
        parse_timestamp_ms(self.property(LAST_MODIFIED)?)
    }
}

/// Parses a HubSpot date/datetime value to epoch milliseconds: an epoch-ms integer string
/// (`"1767225600000"`), RFC 3339 (`"2026-01-01T00:00:00.000Z"`), a zone-less datetime (taken
/// as UTC) or a plain date (`"2026-01-01"`, midnight UTC).
pub fn parse_timestamp_ms(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.timestamp_millis());
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(at.and_utc().timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// One page of a paged list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page<T> {
    /// This page's items.
    pub results: Vec<T>,
    /// `paging.next.after`: pass it back to get the next page; `None` on the last page.
    pub next_after: Option<String>,
}

/// `{results, paging?: {next?: {after}}}` as HubSpot sends it.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct PagedBody<T> {
    #[serde(default = "Vec::new", deserialize_with = "null_default")]
    pub(crate) results: Vec<T>,
    #[serde(default)]
    pub(crate) paging: Option<Paging>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    next: Option<NextPage>,
}

#[derive(Debug, Default, Deserialize)]
struct NextPage {
    #[serde(default, deserialize_with = "crate::batch::lenient_opt_string")]
    after: Option<String>,
}

impl<T> PagedBody<T> {
    pub(crate) fn next_after(paging: Option<Paging>) -> Option<String> {
        paging?.next?.after.filter(|a| !a.is_empty())
    }
}

impl<T> From<PagedBody<T>> for Page<T> {
    fn from(body: PagedBody<T>) -> Self {
        Self { next_after: PagedBody::<T>::next_after(body.paging), results: body.results }
    }
}

fn lenient_properties<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    let map = Option::<BTreeMap<String, Value>>::deserialize(deserializer)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_simple_public_object() -> Result<(), serde_json::Error> {
        let d: Deal = serde_json::from_value(json!({
            "id": "512",
            "properties": {
                "amount": "1500.50", "closedate": "2026-03-31T00:00:00Z", "createdate": "2026-01-01T10:00:00.123Z",
                "dealname": "Acme", "dealstage": "appointmentscheduled", "hs_lastmodifieddate": "1767225600000",
                "hs_object_id": "512", "pipeline": "default", "hubspot_owner_id": null, "odd": 3, "cleared": ""
            },
            "createdAt": "2026-01-01T10:00:00.123Z", "updatedAt": "2026-01-01T10:00:00.123Z", "archived": false,
            "url": "https://app.hubspot.com/x"
        }))?;
        assert_eq!(d.id, "512");
        assert_eq!(d.name(), Some("Acme"));
        assert_eq!(d.stage(), Some("appointmentscheduled"));
        assert_eq!(d.pipeline(), Some("default"));
        assert_eq!(d.amount(), Some(1500.5));
        assert_eq!(d.close_date(), Some(1_774_915_200_000));
        assert_eq!(d.create_date(), Some(1_767_261_600_123));
        assert_eq!(d.last_modified(), Some(1_767_225_600_000));
        assert_eq!(d.owner(), None);
        assert_eq!(d.properties.get("hubspot_owner_id"), Some(&None));
        assert_eq!(d.property("odd"), Some("3"));
        assert_eq!(d.property("cleared"), None);
        let bare: Deal = serde_json::from_value(json!({"id": "1", "properties": null}))?;
        assert!(bare.properties.is_empty());
        assert_eq!(bare.amount(), None);
        Ok(())
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ms("1767225600000"), Some(1_767_225_600_000));
        assert_eq!(parse_timestamp_ms(" 2026-01-01T00:00:00Z "), Some(1_767_225_600_000));
        assert_eq!(parse_timestamp_ms("2026-01-01T01:00:00+01:00"), Some(1_767_225_600_000));
        assert_eq!(parse_timestamp_ms("2026-01-01T00:00:00.5"), Some(1_767_225_600_500));
        assert_eq!(parse_timestamp_ms("2026-01-01"), Some(1_767_225_600_000));
        assert_eq!(parse_timestamp_ms("yesterday"), None);
        assert_eq!(parse_timestamp_ms(""), None);
    }

    #[test]
    fn paging() -> Result<(), serde_json::Error> {
        let p: PagedBody<Deal> =
            serde_json::from_value(json!({"results": [], "paging": {"next": {"after": "200", "link": "x"}}}))?;
        assert_eq!(Page::from(p).next_after.as_deref(), Some("200"));
        let p: PagedBody<Deal> = serde_json::from_value(json!({"results": [], "paging": {"next": {"after": 400}}}))?;
        assert_eq!(Page::from(p).next_after.as_deref(), Some("400"));
        let p: PagedBody<Deal> = serde_json::from_value(json!({"results": [{"id": "1"}]}))?;
        let page = Page::from(p);
        assert_eq!(page.next_after, None);
        assert_eq!(page.results.len(), 1);
        Ok(())
    }
}
