//! Batch responses (200/201 and 207 multi-status, CONTRACT.md §2) and input chunking.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::serde_util::null_default;

/// Inputs per batch call. HubSpot caps CRM object batches at 100 and documents no cap for
/// property batches, so 100 is used everywhere (CONTRACT.md §4, §6).
pub const BATCH_CHUNK_SIZE: usize = 100;

/// The merged outcome of one or more batch calls.
///
/// A 207 (multi-status) body is a success at the HTTP level: the items that failed are in
/// `errors`, the ones that worked in `results`. Callers must check `errors`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct BatchResult<T> {
    /// Items that succeeded.
    #[serde(default = "Vec::new", deserialize_with = "null_default")]
    pub results: Vec<T>,
    /// Items that failed (only on 207).
    #[serde(default = "Vec::new", deserialize_with = "null_default")]
    pub errors: Vec<BatchError>,
}

impl<T> BatchResult<T> {
    /// No item failed.
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty()
    }

    /// Appends another chunk's outcome.
    pub(crate) fn merge(&mut self, other: BatchResult<T>) {
        self.results.extend(other.results);
        self.errors.extend(other.errors);
    }
}

/// One failed item of a 207 body (`StandardError`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchError {
    /// Usually `"error"`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: String,
    /// E.g. `OBJECT_NOT_FOUND`, `VALIDATION_ERROR`.
    #[serde(default, deserialize_with = "lenient_string")]
    pub category: String,
    /// Human-readable message.
    #[serde(default, deserialize_with = "lenient_string")]
    pub message: String,
    /// Which inputs failed, e.g. `{"ids": ["123"]}` or `{"names": ["x"]}`.
    #[serde(default, deserialize_with = "lenient_context")]
    pub context: BTreeMap<String, Vec<String>>,
    /// The failing input's id, when HubSpot names it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_opt_string")]
    pub id: Option<String>,
    /// The spec types it as an object but real bodies send a string; objects are kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_opt_string")]
    pub sub_category: Option<String>,
}

/// Splits `items` into HubSpot-sized chunks (none for an empty slice).
pub(crate) fn chunks<T>(items: &[T]) -> std::slice::Chunks<'_, T> {
    items.chunks(BATCH_CHUNK_SIZE)
}

/// Any JSON scalar as text; objects/arrays as compact JSON; `null` as `None`.
fn value_to_string(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Deserializes a string-ish value leniently (numbers become text, `null` becomes `None`).
pub(crate) fn lenient_opt_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(value_to_string(Value::deserialize(deserializer)?))
}

fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(lenient_opt_string(deserializer)?.unwrap_or_default())
}

/// `context` is `{key: [string]}`; single values and non-strings are tolerated rather than
/// failing the whole batch response.
fn lenient_context<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let Value::Object(map) = Value::deserialize(deserializer)? else { return Ok(BTreeMap::new()) };
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let values = match value {
                Value::Array(items) => items.into_iter().filter_map(value_to_string).collect(),
                other => value_to_string(other).into_iter().collect(),
            };
            (key, values)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_207_body() -> Result<(), serde_json::Error> {
        let r: BatchResult<Value> = serde_json::from_value(json!({
            "status": "COMPLETE",
            "results": [{"id": "1"}],
            "numErrors": 2,
            "errors": [
                {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some DEAL objects",
                 "context": {"ids": ["7", "8"]}, "errors": [], "links": {}},
                {"status": "error", "category": "VALIDATION_ERROR", "message": "bad", "id": 9,
                 "subCategory": {"kind": "X"}, "context": {"names": "one"}}
            ],
            "startedAt": "2026-01-01T00:00:00Z",
            "completedAt": "2026-01-01T00:00:01Z"
        }))?;
        assert_eq!(r.results.len(), 1);
        assert!(!r.is_complete());
        assert_eq!(r.errors[0].category, "OBJECT_NOT_FOUND");
        assert_eq!(r.errors[0].context["ids"], vec!["7", "8"]);
        assert_eq!(r.errors[0].id, None);
        assert_eq!(r.errors[1].id.as_deref(), Some("9"));
        assert_eq!(r.errors[1].sub_category.as_deref(), Some(r#"{"kind":"X"}"#));
        assert_eq!(r.errors[1].context["names"], vec!["one"]);
        let ok: BatchResult<Value> =
            serde_json::from_value(json!({"status": "COMPLETE", "results": [], "errors": null}))?;
        assert!(ok.is_complete());
        Ok(())
    }

    #[test]
    fn chunking() {
        let items: Vec<u32> = (0..250).collect();
        let sizes: Vec<usize> = chunks(&items).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        assert_eq!(chunks::<u32>(&[]).count(), 0);
    }
}
