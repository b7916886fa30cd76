//! Serde helpers that make response parsing tolerant of `null`s.

use serde::{Deserialize, Deserializer};

/// Deserializes `null` (as well as a missing field, together with `#[serde(default)]`) as
/// `T::default()`.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `{results: [...]}` envelope of list responses.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct Collection<T> {
    #[serde(default = "Vec::new", deserialize_with = "null_default")]
    pub(crate) results: Vec<T>,
}

/// A `{string: string}` map that tolerates `null` (as empty) and non-string values (numbers and
/// booleans become their JSON text, `null` values are dropped).
pub(crate) fn lenient_string_map<'de, D>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    let map = Option::<std::collections::BTreeMap<String, serde_json::Value>>::deserialize(deserializer)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some((k, s)),
            other => Some((k, other.to_string())),
        })
        .collect())
}
