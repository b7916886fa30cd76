//! HubSpot webhook support (CONTRACT.md §7): request signature verification and the event
//! payload model.
//!
//! HubSpot POSTs a JSON **array** of events to the app's single target URL and signs the request
//! with the app's client secret. [`verify`] checks that signature (v3 by default; the legacy,
//! replayable v1/v2 schemes only when [`VerifyOptions::allow_legacy`] is set), and
//! [`parse_batch`] turns the raw body into [`WebhookEvent`]s.
//!
//! Webhooks are hints, not data: events arrive out of order and more than once, so dedupe on
//! [`WebhookEvent::dedupe_key`], answer 2xx quickly, and re-read the deal instead of trusting
//! `propertyValue`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use hubspot_client::webhook::{self, SignatureVersion, SignedRequest, VerifyOptions, WebhookSecret};
//!
//! let secret = WebhookSecret::new("my-client-secret");
//! let uri = "https://hooks.example.com/hubspot";
//! let body = br#"[{"eventId":1,"subscriptionId":2,"portalId":3,"appId":4,"occurredAt":1700000000000,"subscriptionType":"deal.creation","attemptNumber":0,"objectId":5}]"#;
//! let ts = 1_700_000_000_000_i64;
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert(webhook::SIGNATURE_V3_HEADER, webhook::sign_v3(&secret, "POST", uri, body, ts).parse()?);
//! headers.insert(webhook::TIMESTAMP_HEADER, ts.to_string().parse()?);
//!
//! let req = SignedRequest { method: "POST", uri, body, headers: &headers };
//! let version = webhook::verify(&secret, &req, ts + 1_000, &VerifyOptions::default())?;
//! assert_eq!(version, SignatureVersion::V3);
//! let events = webhook::parse_batch(body)?;
//! assert_eq!(events[0].dedupe_key(), (3, 2, 1, 1_700_000_000_000));
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Header carrying the v3 signature (base64 HMAC-SHA256).
pub const SIGNATURE_V3_HEADER: &str = "x-hubspot-signature-v3";
/// Header carrying the request timestamp (epoch milliseconds) that v3 signs.
pub const TIMESTAMP_HEADER: &str = "x-hubspot-request-timestamp";
/// Header carrying the legacy v1/v2 signature (hex SHA-256).
pub const SIGNATURE_HEADER: &str = "x-hubspot-signature";
/// Header naming the legacy signature scheme (`v1` or `v2`).
pub const SIGNATURE_VERSION_HEADER: &str = "x-hubspot-signature-version";

/// Default maximum clock distance between the request timestamp and now, in milliseconds
/// (HubSpot's Node SDK uses 300000 ms, the Python SDK 300 s).
pub const DEFAULT_MAX_AGE_MS: i64 = 300_000;

/// SHA-256 output length; every valid signature decodes to exactly this many bytes.
const DIGEST_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The app's client secret, which HubSpot uses to sign webhook requests.
///
/// `Debug` and `Display` print `WebhookSecret(***)` so the secret never reaches logs.
#[derive(Clone)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// Wraps a raw client secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl From<String> for WebhookSecret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

/// The parts of an incoming webhook request that HubSpot signs.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// HTTP method as sent, e.g. `POST`.
    pub method: &'a str,
    /// The full public URL HubSpot called (`https://host/path?query`). Behind a proxy, build it
    /// from the configured target URL, never from the internal URL the service sees.
    pub uri: &'a str,
    /// The raw body bytes, before any JSON parsing or re-encoding.
    pub body: &'a [u8],
    /// The request headers.
    pub headers: &'a http::HeaderMap,
}

/// Which signature scheme a request was verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureVersion {
    /// Legacy `hex(sha256(secret + body))`.
    V1,
    /// Legacy `hex(sha256(secret + method + uri + body))`.
    V2,
    /// `base64(hmac_sha256(secret, method + uri + body + timestamp))`.
    V3,
}

impl SignatureVersion {
    /// The version as HubSpot names it (`v1`, `v2`, `v3`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }
}

impl fmt::Display for SignatureVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a webhook request was rejected. Messages are safe to log: they never contain the secret
/// or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No HubSpot signature header at all.
    #[error("request has no HubSpot signature header")]
    Missing,
    /// A v3 signature without the `X-HubSpot-Request-Timestamp` header it signs.
    #[error("v3 signature without X-HubSpot-Request-Timestamp header")]
    MissingTimestamp,
    /// The timestamp is outside the allowed window. `age_ms` is `now - timestamp`; a negative
    /// value means the timestamp lies in the future.
    #[error("request timestamp outside the allowed window (age {age_ms} ms)")]
    Stale {
        /// `now_ms - timestamp_ms`.
        age_ms: i64,
    },
    /// The signature is well-formed but does not match.
    #[error("webhook signature mismatch")]
    Mismatch,
    /// A legacy version that is disabled by [`VerifyOptions::allow_legacy`], or an unknown one.
    /// Holds the sanitised `X-HubSpot-Signature-Version` value.
    #[error("unsupported or disabled signature version {0:?}")]
    UnsupportedVersion(String),
    /// A signature or timestamp header that is not valid text, base64/hex or a number.
    #[error("malformed webhook signature or timestamp header")]
    Malformed,
}

/// Knobs of [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept legacy v1/v2 signatures when no v3 signature is present. Off by default: they carry
    /// no timestamp, so a captured request can be replayed forever.
    pub allow_legacy: bool,
    /// Largest accepted `|now - timestamp|` for v3, in milliseconds.
    pub max_age_ms: i64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { allow_legacy: false, max_age_ms: DEFAULT_MAX_AGE_MS }
    }
}

/// Verifies the signature of a HubSpot webhook request.
///
/// A v3 signature, when present, is the only one considered: falling back to a legacy header
/// after a v3 failure would let an attacker downgrade to the replayable schemes.
pub fn verify(
    secret: &WebhookSecret,
    req: &SignedRequest<'_>,
    now_ms: i64,
    options: &VerifyOptions,
) -> Result<SignatureVersion, SignatureError> {
    if let Some(signature) = header_str(req.headers, SIGNATURE_V3_HEADER)? {
        return verify_v3(secret, req, signature, now_ms, options.max_age_ms);
    }
    let Some(signature) = header_str(req.headers, SIGNATURE_HEADER)? else {
        return Err(SignatureError::Missing);
    };
    // HubSpot's SDKs treat a missing version header as v1, the original scheme.
    let version = header_str(req.headers, SIGNATURE_VERSION_HEADER)?.unwrap_or("v1");
    let version = match version {
        "v1" => SignatureVersion::V1,
        "v2" => SignatureVersion::V2,
        other => return Err(SignatureError::UnsupportedVersion(sanitize(other))),
    };
    if !options.allow_legacy {
        return Err(SignatureError::UnsupportedVersion(version.as_str().to_owned()));
    }
    let provided = hex::decode(signature.trim()).map_err(|_| SignatureError::Malformed)?;
    if provided.len() != DIGEST_LEN {
        return Err(SignatureError::Malformed);
    }
    let expected = match version {
        SignatureVersion::V1 => legacy_digest(secret, &[req.body]),
        _ => legacy_digest(secret, &[req.method.as_bytes(), req.uri.as_bytes(), req.body]),
    };
    if bool::from(expected.as_slice().ct_eq(&provided)) { Ok(version) } else { Err(SignatureError::Mismatch) }
}

fn verify_v3(
    secret: &WebhookSecret,
    req: &SignedRequest<'_>,
    signature: &str,
    now_ms: i64,
    max_age_ms: i64,
) -> Result<SignatureVersion, SignatureError> {
    // The timestamp string is signed exactly as sent; parsing it is only for the age check
    // (re-formatting it broke validation in HubSpot's Python SDK, issue #263).
    let timestamp = header_str(req.headers, TIMESTAMP_HEADER)?.ok_or(SignatureError::MissingTimestamp)?;
    let timestamp_ms: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    let age_ms = now_ms.saturating_sub(timestamp_ms);
    if age_ms > max_age_ms || age_ms < max_age_ms.saturating_neg() {
        return Err(SignatureError::Stale { age_ms });
    }

    let provided = BASE64.decode(signature.trim()).map_err(|_| SignatureError::Malformed)?;
    if provided.len() != DIGEST_LEN {
        return Err(SignatureError::Malformed);
    }

    let as_given = v3_mac(secret, req.method, req.uri, req.body, timestamp);
    let mut matches = as_given.as_slice().ct_eq(&provided);
    // HubSpot's docs say to decode a few escapes in the URI before signing; the SDKs don't
    // (UNVERIFIED which one HubSpot really does), so accept either form.
    if let Cow::Owned(decoded) = decode_signed_uri(req.uri) {
        let decoded_mac = v3_mac(secret, req.method, &decoded, req.body, timestamp);
        matches |= decoded_mac.as_slice().ct_eq(&provided);
    }
    if bool::from(matches) { Ok(SignatureVersion::V3) } else { Err(SignatureError::Mismatch) }
}

/// Computes the `X-HubSpot-Signature-v3` value for a request, e.g. for a HubSpot simulator.
/// The timestamp is signed in its decimal form, which is what `X-HubSpot-Request-Timestamp`
/// must then carry.
pub fn sign_v3(secret: &WebhookSecret, method: &str, uri: &str, body: &[u8], timestamp_ms: i64) -> String {
    BASE64.encode(v3_mac(secret, method, uri, body, &timestamp_ms.to_string()))
}

fn v3_mac(secret: &WebhookSecret, method: &str, uri: &str, body: &[u8], timestamp: &str) -> [u8; DIGEST_LEN] {
    let mut mac = hmac_sha256(secret.as_bytes());
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Builds HMAC-SHA256 infallibly. `new_from_slice` returns a `Result` although HMAC accepts any
/// key length; instead, derive the block-sized key exactly as RFC 2104 §2 does (hash keys longer
/// than a block, zero-pad the rest), which needs no error path.
fn hmac_sha256(secret: &[u8]) -> HmacSha256 {
    let mut key = hmac::digest::Key::<HmacSha256>::default();
    if secret.len() > key.len() {
        let hashed = Sha256::digest(secret);
        key[..hashed.len()].copy_from_slice(&hashed);
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    HmacSha256::new(&key)
}

fn legacy_digest(secret: &WebhookSecret, parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(secret.as_bytes());
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Reads a header as text; `Ok(None)` when absent, `Malformed` when not visible ASCII.
fn header_str<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<Option<&'h str>, SignatureError> {
    headers.get(name).map(|value| value.to_str().map_err(|_| SignatureError::Malformed)).transpose()
}

/// Keeps an attacker-supplied header value short and printable before it goes into an error.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .take(16)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '?' })
        .collect()
}

/// Decodes the percent-escapes HubSpot's request-validation docs list (`%3A %2F %3F %40 %21 %24
/// %27 %28 %29 %2A %2C %3B`, either hex case); every other escape is left alone. Borrowed when
/// nothing changes, so callers can skip a second MAC.
fn decode_signed_uri(uri: &str) -> Cow<'_, str> {
    const DECODED: &[u8] = b":/?@!$'()*,;";
    let bytes = uri.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex_pair(*hi, *lo).filter(|b| DECODED.contains(b)),
            _ => None,
        };
        match decoded {
            Some(b) => {
                out.get_or_insert_with(|| bytes[..i].to_vec()).push(b);
                i += 3;
            }
            None => {
                if let Some(out) = out.as_mut() {
                    out.push(bytes[i]);
                }
                i += 1;
            }
        }
    }
    match out {
        // Only ASCII escapes were replaced by ASCII bytes, so the result stays valid UTF-8; the
        // fallback keeps the function total without a panic path.
        Some(out) => String::from_utf8(out).map_or(Cow::Borrowed(uri), Cow::Owned),
        None => Cow::Borrowed(uri),
    }
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()
}

/// One event of a HubSpot webhook batch.
///
/// Parsing is tolerant: unknown fields are ignored, optional fields may be missing or `null`,
/// ids may be JSON numbers (up to `u64::MAX`) or numeric strings, and `propertyValue` may be any
/// JSON scalar (kept as text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// Event id. **Not unique** on its own; see [`WebhookEvent::dedupe_key`].
    #[serde(deserialize_with = "de_num")]
    pub event_id: u64,
    /// The subscription that fired.
    #[serde(deserialize_with = "de_num")]
    pub subscription_id: u64,
    /// The portal (HubSpot account) the event happened in.
    #[serde(deserialize_with = "de_num")]
    pub portal_id: u64,
    /// The app that owns the subscription.
    #[serde(deserialize_with = "de_num")]
    pub app_id: u64,
    /// When the change happened, epoch milliseconds.
    #[serde(deserialize_with = "de_num")]
    pub occurred_at: i64,
    /// E.g. `deal.propertyChange` or `object.creation`.
    pub subscription_type: String,
    /// Delivery attempt, starting at 0.
    #[serde(default, deserialize_with = "de_num_or_default")]
    pub attempt_number: u32,
    /// The changed object. Optional because association-change events name their objects in
    /// other fields (`fromObjectId`/`toObjectId`) instead.
    #[serde(default, deserialize_with = "de_opt_num", skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u64>,
    /// What made the change, e.g. `CRM`, `API`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_source: Option<String>,
    /// The app or user that made the change (an app id for API writes), when HubSpot says.
    #[serde(default, deserialize_with = "de_opt_scalar_string", skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// E.g. `NEW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_flag: Option<String>,
    /// Property changes only: the property's internal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// Property changes only: the new value. Do not apply it blindly; re-read the object.
    #[serde(default, deserialize_with = "de_opt_scalar_string", skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    /// `object.*` events: the object type, e.g. `0-3` for deals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type_id: Option<String>,
}

impl WebhookEvent {
    /// `(portalId, subscriptionId, eventId, occurredAt)`: HubSpot does not guarantee `eventId`
    /// to be unique, so duplicates are detected on this tuple (CONTRACT.md §7).
    pub fn dedupe_key(&self) -> (u64, u64, u64, i64) {
        (self.portal_id, self.subscription_id, self.event_id, self.occurred_at)
    }
}

/// Parses a webhook request body, a JSON array of events. HubSpot sends at most 100 events per
/// request, but larger batches are accepted rather than dropped.
pub fn parse_batch(body: &[u8]) -> Result<Vec<WebhookEvent>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// A JSON number or a string holding one.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString<T> {
    Num(T),
    Str(String),
}

impl<T: FromStr> NumOrString<T> {
    fn into_num<E: serde::de::Error>(self) -> Result<T, E> {
        match self {
            Self::Num(n) => Ok(n),
            Self::Str(s) => s.trim().parse().map_err(|_| E::custom(format_args!("expected a number, got {s:?}"))),
        }
    }
}

fn de_num<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
{
    NumOrString::<T>::deserialize(deserializer)?.into_num()
}

fn de_opt_num<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
{
    Option::<NumOrString<T>>::deserialize(deserializer)?.map(NumOrString::into_num).transpose()
}

fn de_num_or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr + Default,
{
    Ok(de_opt_num(deserializer)?.unwrap_or_default())
}

/// Accepts a string, number or boolean (kept as its JSON text) or `null`.
fn de_opt_scalar_string<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    use serde::de::Error as _;
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => Ok(Some(v.to_string())),
        _ => Err(D::Error::custom("expected a string, number, boolean or null")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_signed_uri_only_touches_listed_escapes() {
        assert!(matches!(decode_signed_uri("https://x.test/a?b=c"), Cow::Borrowed(_)));
        assert_eq!(decode_signed_uri("https://x.test/p%3Aq?r=%2f%20%3B%2528%29%"), "https://x.test/p:q?r=/%20;%2528)%");
        assert_eq!(decode_signed_uri("%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B"), ":/?@!$'()*,;");
        // Multi-byte UTF-8 next to escapes survives.
        assert_eq!(decode_signed_uri("/é%40ü"), "/é@ü");
    }

    #[test]
    fn padded_key_hmac_equals_new_from_slice() {
        for len in [0usize, 1, 36, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut ours = hmac_sha256(&key);
            let mut reference = <HmacSha256 as KeyInit>::new_from_slice(&key).expect("HMAC accepts any key length");
            ours.update(b"message");
            reference.update(b"message");
            assert_eq!(ours.finalize().into_bytes(), reference.finalize().into_bytes(), "key length {len}");
        }
    }

    #[test]
    fn sanitize_limits_attacker_input() {
        assert_eq!(sanitize("v9"), "v9");
        assert_eq!(sanitize("v1\"; drop\n"), "v1???drop?");
        assert_eq!(sanitize(&"a".repeat(100)).len(), 16);
    }
}
