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
