//! Upso webhook signatures: `X-Upso-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const SIGNATURE_HEADER: &str = "x-upso-signature";
/// Signatures older than this are refused (replay protection).
pub const MAX_AGE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed signature header")]
    Malformed,
    #[error("signature too old")]
    Stale,
    #[error("signature mismatch")]
    Mismatch,
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// The header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(secret, timestamp, body)))
}

/// Checks `header` for `body`, at `now` (unix seconds), in constant time.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signature = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Malformed);
    };
    if (now - timestamp).abs() > MAX_AGE_SECS {
        return Err(SignatureError::Stale);
    }
    let expected = mac(secret, timestamp, body);
    if expected.ct_eq(&signature).into() { Ok(()) } else { Err(SignatureError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_same_secret_body_and_fresh_time() {
        let header = sign("s3cret", 1_000, b"{}");
        assert_eq!(verify("s3cret", &header, b"{}", 1_010), Ok(()));
        assert_eq!(verify("other", &header, b"{}", 1_010), Err(SignatureError::Mismatch));
        assert_eq!(verify("s3cret", &header, b"{ }", 1_010), Err(SignatureError::Mismatch));
        assert_eq!(verify("s3cret", &header, b"{}", 1_000 + MAX_AGE_SECS + 1), Err(SignatureError::Stale));
        assert_eq!(verify("s3cret", "v1=zz", b"{}", 1_000), Err(SignatureError::Malformed));
    }
}
