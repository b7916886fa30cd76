//! Portal access tokens.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::config::ApiVersion;

/// A portal's bearer token (private-app token, service key or OAuth access token), optionally
/// labelled with the portal it belongs to.
///
/// `Debug` and `Display` print `AccessToken(***)` (plus the non-secret portal label, if any):
/// the secret never appears in logs or errors. Use [`AccessToken::expose`] only where the raw
/// value is really needed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AccessToken {
    secret: String,
    /// Non-secret label used as the [`crate::RequestBudget`] key.
    portal: Option<String>,
    /// The API version the portal is pinned to; `None` uses the client's default.
    api_version: Option<ApiVersion>,
}

impl AccessToken {
    /// Wraps a raw token.
    pub fn new(s: impl Into<String>) -> Self {
        Self { secret: s.into(), portal: None, api_version: None }
    }

    /// Labels the token with its portal (hub) id, e.g. `"12345678"`. The label is not secret: it
    /// is the key a [`crate::RequestBudget`] sees, and it shows up in `Debug`.
    #[must_use]
    pub fn for_portal(self, portal_id: impl Into<String>) -> Self {
        Self { portal: Some(portal_id.into()), ..self }
    }

    /// Pins the calls made with this token to `version`: every path the client builds for
    /// them uses it instead of [`crate::ClientConfig::api_version`].
    #[must_use]
    pub fn with_api_version(self, version: ApiVersion) -> Self {
        Self { api_version: Some(version), ..self }
    }

    /// The version set with [`AccessToken::with_api_version`].
    pub fn api_version(&self) -> Option<ApiVersion> {
        self.api_version
    }

    /// The raw token. Do not log it.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// The portal label set with [`AccessToken::for_portal`].
    pub fn portal(&self) -> Option<&str> {
        self.portal.as_deref()
    }

    /// The key a per-portal budget is tracked under: the portal label, or else
    /// `token-sha256:<first 16 hex digits>` of the token. The hash is stable across processes (so
    /// a limiter shared through e.g. Redis agrees on it) and never reveals the token itself.
    pub fn budget_key(&self) -> String {
        match &self.portal {
            Some(portal) => portal.clone(),
            None => {
                let digest = Sha256::digest(self.secret.as_bytes());
                let mut hex = hex::encode(digest);
                hex.truncate(16);
                format!("token-sha256:{hex}")
            }
        }
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.portal {
            Some(portal) => write!(f, "AccessToken(portal {portal}, ***)"),
            None => f.write_str("AccessToken(***)"),
        }
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<String> for AccessToken {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&str> for AccessToken {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let t = AccessToken::new("pat-na1-secret");
        assert_eq!(format!("{t:?}"), "AccessToken(***)");
        assert_eq!(format!("{t}"), "AccessToken(***)");
        assert_eq!(format!("{:?}", Some(&t)), "Some(AccessToken(***))");
        assert_eq!(t.expose(), "pat-na1-secret");
        let p = t.for_portal("4242");
        assert_eq!(format!("{p:?}"), "AccessToken(portal 4242, ***)");
        assert_eq!(format!("{p}"), "AccessToken(portal 4242, ***)");
        assert_eq!(p.expose(), "pat-na1-secret");
    }

    #[test]
    fn budget_key_is_the_label_or_a_stable_hash() {
        let t = AccessToken::new("pat-na1-secret");
        let key = t.budget_key();
        assert!(key.starts_with("token-sha256:") && key.len() == "token-sha256:".len() + 16, "{key}");
        assert!(!key.contains("secret"));
        assert_eq!(key, AccessToken::new("pat-na1-secret").budget_key());
        assert_ne!(key, AccessToken::new("pat-na1-other").budget_key());
        assert_eq!(t.for_portal("4242").budget_key(), "4242");
    }
}
