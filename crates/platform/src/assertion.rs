//! Service-to-service identity: the caller travels between services only inside a
//! short-lived assertion signed with a key every service is configured with, never as
//! plain metadata a stranger could forge.
//!
//! The client side ([`crate::grpc_client::TracedChannel`]) turns the plain `x-gomark-*`
//! metadata that [`Caller::request`] wrote into one signed `x-gomark-assertion` and drops
//! the plain keys; the server side ([`VerifyCallerLayer`], installed by
//! [`crate::server::serve_grpc`]) drops any plain keys a request arrives with, verifies the
//! assertion and, only if it is valid, puts its fields back for [`Caller::from_metadata`].
//! A request without a valid assertion therefore has no caller: UNAUTHENTICATED.
//!
//! Format: `v1.<kid>.<base64url(json claims)>.<base64url(HMAC-SHA256)>`, the MAC over
//! everything before the last dot. Keys come from the setting `server.assertion_keys`
//! (`kid:base64key[,…]`, as `gomark keygen` prints): the first signs, all verify, so a
//! key is rotated by putting a new one first everywhere, then removing the old one.

use crate::caller::{ACTOR_METADATA_KEY, Caller, ROLE_METADATA_KEY, Role, SCOPE_METADATA_KEY, Scope};
use crate::settings::{Secret, SettingsError};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The one metadata key an authenticated call carries.
pub const ASSERTION_METADATA_KEY: &str = "x-gomark-assertion";
/// The setting the keys are read from (named in errors).
pub const SETTING: &str = "server.assertion_keys";
/// How long an assertion is valid: long enough for one call, short enough that a stolen
/// one is soon useless.
pub const LIFETIME: Duration = Duration::from_secs(60);
/// Clock difference between hosts tolerated on `iat`.
const SKEW: Duration = Duration::from_secs(5);
const FORMAT: &str = "v1";
/// Shortest key accepted: HMAC-SHA256 wants 256 bits.
const MIN_KEY_BYTES: usize = 32;

/// Why an assertion was refused (kept for tests and debug logs; callers only ever see
/// UNAUTHENTICATED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("malformed assertion")]
    Malformed,
    #[error("assertion signed with an unknown key")]
    UnknownKey,
    #[error("assertion signature does not verify")]
    BadSignature,
    #[error("assertion expired")]
    Expired,
    #[error("assertion issued in the future")]
    NotYetValid,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    /// Actor.
    a: String,
    /// Role.
    r: Role,
    /// Scope, encoded.
    s: String,
    /// Issued at, Unix seconds.
    iat: u64,
    /// Expires at, Unix seconds.
    exp: u64,
}

/// The keys assertions are signed and verified with.
pub struct KeyRing {
    current: String,
    keys: HashMap<String, hmac::Key>,
    setting: Secret,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing(current={}, keys={})", self.current, self.keys.len())
    }
}

impl KeyRing {
    /// Parses `kid:base64key[,…]`; each key at least 32 bytes.
    pub fn from_setting(setting: &str) -> Result<Self, SettingsError> {
        let bad = |why: &str| SettingsError::invalid(SETTING, why);
        let mut keys = HashMap::new();
        let mut current = None;
        for entry in setting.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, key) = entry.split_once(':').ok_or_else(|| bad("each entry must be kid:base64key"))?;
            if kid.is_empty() || !kid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(bad("key ids are letters, digits, '-' or '_'"));
            }
            let bytes = STANDARD.decode(key).map_err(|_| bad("keys must be base64"))?;
            if bytes.len() < MIN_KEY_BYTES {
                return Err(bad("keys must be at least 32 bytes (256 bits)"));
            }
            if keys.insert(kid.to_owned(), hmac::Key::new(hmac::HMAC_SHA256, &bytes)).is_some() {
                return Err(bad("key ids must be unique"));
            }
            current.get_or_insert_with(|| kid.to_owned());
        }
        let current = current.ok_or_else(|| bad("is required (generate a key with `gomark keygen`)"))?;
        Ok(Self { current, keys, setting: Secret::new(setting) })
    }

    /// A ring holding one fresh random key (embedded mode, tests).
    pub fn generate() -> Self {
        let mut key = [0u8; MIN_KEY_BYTES];
        // aws-lc's generator draws from the OS; it cannot fail short of a broken system.
        if aws_lc_rs::rand::fill(&mut key).is_err() {
            key = rand::random();
        }
        let setting = format!("local:{}", STANDARD.encode(key));
        let keys = HashMap::from([("local".to_owned(), hmac::Key::new(hmac::HMAC_SHA256, &key))]);
        Self { current: "local".into(), keys, setting: Secret::new(setting) }
    }

    /// The setting this ring was made from, for handing the same keys to a child process.
    pub fn setting(&self) -> &Secret {
        &self.setting
    }

    /// A signed assertion for `caller`, valid from `now` for [`LIFETIME`].
    pub fn sign(&self, caller: &Caller, now: SystemTime) -> String {
        let iat = unix(now);
        let claims = Claims {
            a: caller.actor.clone(),
            r: caller.role,
            s: caller.scope.encode(),
            iat,
            exp: iat + LIFETIME.as_secs(),
        };
        // Serialising strings and integers cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let signed = format!("{FORMAT}.{}.{}", self.current, URL_SAFE_NO_PAD.encode(json));
        let tag = self.keys.get(&self.current).map(|k| hmac::sign(k, signed.as_bytes()));
        let tag = tag.as_ref().map(|t| URL_SAFE_NO_PAD.encode(t.as_ref())).unwrap_or_default();
        format!("{signed}.{tag}")
    }

    /// The caller `token` asserts, if it is authentic and valid at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Caller, AssertionError> {
        let (signed, tag) = token.rsplit_once('.').ok_or(AssertionError::Malformed)?;
        let mut parts = signed.splitn(3, '.');
        let (Some(FORMAT), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AssertionError::Malformed);
        };
        let key = self.keys.get(kid).ok_or(AssertionError::UnknownKey)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| AssertionError::Malformed)?;
        hmac::verify(key, signed.as_bytes(), &tag).map_err(|_| AssertionError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| AssertionError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| AssertionError::Malformed)?;
        let now = unix(now);
        if claims.iat > now + SKEW.as_secs() {
            return Err(AssertionError::NotYetValid);
        }
        if claims.exp <= now || claims.exp > claims.iat + LIFETIME.as_secs() {
            return Err(AssertionError::Expired);
        }
        let scope = Scope::decode(&claims.s).ok_or(AssertionError::Malformed)?;
        if claims.a.is_empty() {
            return Err(AssertionError::Malformed);
        }
        Ok(Caller { actor: claims.a, role: claims.r, scope })
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

static PROCESS_KEYS: RwLock<Option<Arc<KeyRing>>> = RwLock::new(None);

/// Makes `ring` the keys this process signs and verifies with (a service's `main`, from
/// its settings).
pub fn install(ring: KeyRing) {
    let mut slot = PROCESS_KEYS.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    *slot = Some(Arc::new(ring));
}

/// The keys this process uses: the installed ones, or else one random key made on first
/// use. Embedded mode relies on the latter: every service shares the process, so they
/// share the key, and nothing outside the process can sign.
pub fn process_keys() -> Arc<KeyRing> {
    if let Some(ring) = PROCESS_KEYS.read().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref() {
        return ring.clone();
    }
    let mut slot = PROCESS_KEYS.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    slot.get_or_insert_with(|| Arc::new(KeyRing::generate())).clone()
}

/// Client side: replaces the plain caller metadata [`Caller::request`] wrote with a signed
/// assertion. A request without a caller is left alone (health checks, for instance).
pub fn sign_metadata(md: &mut tonic::metadata::MetadataMap) {
    let plain = Caller::from_metadata(md).ok();
    for key in [ROLE_METADATA_KEY, SCOPE_METADATA_KEY, ACTOR_METADATA_KEY] {
        md.remove(key);
    }
    if let Some(caller) = plain {
        let token = process_keys().sign(&caller, SystemTime::now());
        if let Ok(value) = token.parse() {
            md.insert(ASSERTION_METADATA_KEY, value);
        }
    }
}

/// Server side: whatever plain caller headers arrived are dropped; the caller of a valid
/// assertion is written back in their place.
pub fn verify_headers(headers: &mut http::HeaderMap) {
    for key in [ROLE_METADATA_KEY, SCOPE_METADATA_KEY, ACTOR_METADATA_KEY] {
        headers.remove(key);
    }
    let Some(token) = headers.remove(ASSERTION_METADATA_KEY) else { return };
    let verified = token.to_str().ok().map(|t| process_keys().verify(t, SystemTime::now()));
    match verified {
        Some(Ok(caller)) => {
            let mut md = tonic::metadata::MetadataMap::new();
            caller.to_metadata(&mut md);
            headers.extend(md.into_headers());
        }
        Some(Err(err)) => tracing::debug!(error = %err, "refused a caller assertion"),
        None => tracing::debug!("refused a caller assertion that is not ASCII"),
    }
}

/// The tower layer every gRPC server runs its requests through: see [`verify_headers`].
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyCallerLayer;

impl<S> tower::Layer<S> for VerifyCallerLayer {
    type Service = VerifyCaller<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyCaller { inner }
    }
}

#[derive(Clone, Debug)]
pub struct VerifyCaller<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for VerifyCaller<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        verify_headers(req.headers_mut());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller { actor: "apikey:test".into(), role: Role::Operator, scope: Scope::Company("c1".into()) }
    }

    #[test]
    fn a_signed_caller_verifies_and_round_trips() {
        let ring = KeyRing::generate();
        let now = SystemTime::now();
        let token = ring.sign(&caller(), now);
        assert_eq!(ring.verify(&token, now), Ok(caller()));
        assert_eq!(ring.verify(&token, now + Duration::from_secs(59)), Ok(caller()));
    }

    #[test]
    fn expired_future_tampered_and_foreign_assertions_are_refused() {
        let ring = KeyRing::generate();
        let now = SystemTime::now();
        let token = ring.sign(&caller(), now);
        assert_eq!(ring.verify(&token, now + LIFETIME), Err(AssertionError::Expired));
        assert_eq!(ring.verify(&token, now - Duration::from_secs(30)), Err(AssertionError::NotYetValid));
        // Widen the scope to the portfolio, keep the signature.
        let (signed, tag) = token.rsplit_once('.').expect("dot");
        let (head, _) = signed.rsplit_once('.').expect("dot");
        let forged_claims = serde_json::json!({"a": "attacker", "r": "admin", "s": "portfolio",
            "iat": unix(now), "exp": unix(now) + 60});
        let forged = format!("{head}.{}.{tag}", URL_SAFE_NO_PAD.encode(forged_claims.to_string()));
        assert_eq!(ring.verify(&forged, now), Err(AssertionError::BadSignature));
        assert_eq!(KeyRing::generate().verify(&token, now), Err(AssertionError::BadSignature));
        for junk in ["", "v1", "v1.local.x", "v2.local.e30.AAAA", "garbage.garbage"] {
            assert!(ring.verify(junk, now).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn rotation_signs_with_the_first_key_and_verifies_with_all() {
        let old = KeyRing::from_setting(&format!("old:{}", STANDARD.encode([1u8; 32]))).expect("old");
        let both = format!("new:{},old:{}", STANDARD.encode([2u8; 32]), STANDARD.encode([1u8; 32]));
        let rotated = KeyRing::from_setting(&both).expect("rotated");
        let now = SystemTime::now();
        assert_eq!(rotated.verify(&old.sign(&caller(), now), now), Ok(caller()), "old assertions still verify");
        assert!(rotated.sign(&caller(), now).starts_with("v1.new."));
        assert_eq!(old.verify(&rotated.sign(&caller(), now), now), Err(AssertionError::UnknownKey));
    }

    #[test]
    fn bad_settings_name_the_setting() {
        for bad in ["", "nocolon", "k1:not-base64!", "k1:AAAA", "k 1:AAAA"] {
            let err = KeyRing::from_setting(bad).expect_err(bad);
            assert!(err.to_string().contains(SETTING), "{err}");
        }
    }

    #[test]
    fn plain_metadata_is_dropped_and_only_a_valid_assertion_yields_a_caller() {
        // Forged plain metadata alone: no caller.
        let mut md = tonic::metadata::MetadataMap::new();
        Caller { actor: "attacker".into(), role: Role::Admin, scope: Scope::Portfolio }.to_metadata(&mut md);
        let mut headers = md.into_headers();
        verify_headers(&mut headers);
        let md = tonic::metadata::MetadataMap::from_headers(headers);
        assert!(Caller::from_metadata(&md).is_err());

        // Signed on the way out, verified on the way in.
        let mut md = tonic::metadata::MetadataMap::new();
        caller().to_metadata(&mut md);
        sign_metadata(&mut md);
        assert!(md.get(ROLE_METADATA_KEY).is_none(), "plain keys do not travel");
        let mut headers = md.into_headers();
        verify_headers(&mut headers);
        let md = tonic::metadata::MetadataMap::from_headers(headers);
        assert_eq!(Caller::from_metadata(&md), Ok(caller()));
    }
}
