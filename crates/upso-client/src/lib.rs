//! `upso-client`: a typed client of the Upso outreach API (`docs/upso/openapi.yaml`).
//!
//! One [`UpsoClient`] serves every account; the account is chosen per call by the
//! [`UpsoToken`] passed in. Every request has a timeout, and transient failures (5xx,
//! timeouts, 429 with `Retry-After`) are retried a bounded number of times.

mod client;
mod error;
pub mod model;
pub mod template;
pub mod webhook;

pub use client::{ClientConfig, UpsoClient};
pub use error::{Error, Result};
pub use model::*;

/// Where the real Upso API lives.
pub const DEFAULT_BASE_URL: &str = "https://api.upso.io";

/// An account's API token. `Debug` never shows it; use [`UpsoToken::expose`] only to send it.
/// Two tokens are equal when their secrets are, whatever their labels.
#[derive(Clone)]
pub struct UpsoToken {
    secret: String,
    /// Names the account in metrics and spans (`portal` label); see [`UpsoToken::metrics_key`].
    account: Option<String>,
}

impl UpsoToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self { secret: token.into(), account: None }
    }

    /// The same token, labelled with the account (company) it belongs to.
    #[must_use]
    pub fn for_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// The raw token. Do not log it.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// What metrics count this token's calls under: its account label, or else a stable
    /// hash of the token (never the token).
    pub fn metrics_key(&self) -> String {
        match &self.account {
            Some(account) => account.clone(),
            None => {
                use sha2::Digest as _;
                let digest = sha2::Sha256::digest(self.secret.as_bytes());
                let mut hex = hex::encode(digest);
                hex.truncate(16);
                format!("token-sha256:{hex}")
            }
        }
    }
}

impl PartialEq for UpsoToken {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

impl Eq for UpsoToken {}

impl std::fmt::Debug for UpsoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpsoToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_key_is_the_account_or_a_stable_hash_never_the_token() {
        let t = UpsoToken::new("upso-secret");
        let key = t.metrics_key();
        assert!(key.starts_with("token-sha256:") && key.len() == "token-sha256:".len() + 16, "{key}");
        assert!(!key.contains("secret"));
        assert_eq!(key, UpsoToken::new("upso-secret").metrics_key());
        assert_ne!(key, UpsoToken::new("upso-other").metrics_key());
        let labelled = t.clone().for_account("company-1");
        assert_eq!(labelled.metrics_key(), "company-1");
        assert_eq!(labelled, t, "equal by secret, whatever the label");
    }
}
