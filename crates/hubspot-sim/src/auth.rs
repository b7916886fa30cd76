//! Credentials: what a bearer token is.
//!
//! - **Private-app tokens and service keys** (`Authorization: Bearer <token>`): any token the
//!   simulator has not issued is one; each distinct token is its own portal, created on first
//!   use. A service key is registered with `HubSpotSim::register_service_key` (or
//!   `POST /_sim/service-keys`): its portal's events go to the journal but are never pushed as
//!   webhooks, as HubSpot's service keys cannot receive push webhooks. Writes with either carry
//!   `changeSource: INTEGRATION` and `sourceId` = the portal's private app id
//!   ([`private_app_id`]).
//! - **OAuth access tokens**, issued by `POST /oauth/{v1,v3,2026-03}/token` with
//!   `grant_type=refresh_token` for a refresh token registered with
//!   `HubSpotSim::register_refresh_token` (or `POST /_sim/oauth/refresh-tokens`). They act for
//!   the refresh token's portal, carry `sourceId` = the app id, and expire after
//!   [`ACCESS_TOKEN_TTL`] (then 401; `POST /_sim/oauth/expire-access-tokens` expires them all).
//! - **Client-credentials tokens** (`grant_type=client_credentials` with the app's
//!   `client_id`/`client_secret` and `scope`): app-level tokens for the webhooks journal, its
//!   subscriptions and snapshots (`developer.webhooks_journal.*` scopes). CRM routes answer
//!   them 403.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lifetime of issued access tokens (HubSpot: 30 minutes).
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(1800);

/// Scopes a client-credentials token may carry.
pub const JOURNAL_SCOPES: &[&str] = &[
    "developer.webhooks_journal.read",
    "developer.webhooks_journal.subscriptions.read",
    "developer.webhooks_journal.subscriptions.write",
    "developer.webhooks_journal.snapshots.read",
    "developer.webhooks_journal.snapshots.write",
];

/// The app id a portal's private app (or service key) writes under.
pub fn private_app_id(portal_id: u64) -> u64 {
    portal_id + 1_000_000_000
}

/// What an issued access token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// OAuth access to the portal of `portal_token` (the registry key).
    Portal { portal_token: String },
    /// Client credentials: app-level, with these scopes.
    App { scopes: Vec<String> },
}

#[derive(Debug, Clone)]
struct Issued {
    grant: Grant,
    expires: Instant,
}

/// A token as the gate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A private-app token or service key: its own portal.
    PortalToken(String),
    /// An OAuth access token for the portal of `portal_token`.
    OAuth { portal_token: String },
    /// A client-credentials token.
    App { scopes: Vec<String> },
    /// An issued token past its expiry.
    Expired,
}

/// Issued tokens and registered refresh tokens.
#[derive(Debug, Default)]
pub(crate) struct Auth {
    issued: HashMap<String, Issued>,
    /// refresh token → portal token.
    refresh: HashMap<String, String>,
}

impl Auth {
    pub fn register_refresh_token(&mut self, refresh_token: &str, portal_token: &str) {
        self.refresh.insert(refresh_token.to_owned(), portal_token.to_owned());
    }

    /// The portal token a refresh token is for.
    pub fn refresh_target(&self, refresh_token: &str) -> Option<String> {
        self.refresh.get(refresh_token).cloned()
    }

    /// Issues a new access token for `grant`.
    pub fn issue(&mut self, grant: Grant, now: Instant) -> String {
        // Expired tokens are kept only until the next issue, so the map stays small.
        self.issued.retain(|_, i| i.expires + ACCESS_TOKEN_TTL > now);
        let token = format!("sim-at-{}", uuid::Uuid::new_v4().simple());
        self.issued.insert(token.clone(), Issued { grant, expires: now + ACCESS_TOKEN_TTL });
        token
    }

    /// Expires every issued access token (test hook).
    pub fn expire_all(&mut self, now: Instant) {
        for issued in self.issued.values_mut() {
            issued.expires = now;
        }
    }

    pub fn resolve(&self, token: &str, now: Instant) -> Credential {
        match self.issued.get(token) {
            None => Credential::PortalToken(token.to_owned()),
            Some(issued) if issued.expires <= now => Credential::Expired,
            Some(Issued { grant: Grant::Portal { portal_token }, .. }) => {
                Credential::OAuth { portal_token: portal_token.clone() }
            }
            Some(Issued { grant: Grant::App { scopes }, .. }) => Credential::App { scopes: scopes.clone() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_resolve_expire() {
        let mut auth = Auth::default();
        let now = Instant::now();
        assert_eq!(auth.resolve("pat", now), Credential::PortalToken("pat".into()));
        auth.register_refresh_token("r1", "portal-a");
        assert_eq!(auth.refresh_target("r1").as_deref(), Some("portal-a"));
        let at = auth.issue(Grant::Portal { portal_token: "portal-a".into() }, now);
        assert_eq!(auth.resolve(&at, now), Credential::OAuth { portal_token: "portal-a".into() });
        assert_eq!(auth.resolve(&at, now + ACCESS_TOKEN_TTL), Credential::Expired);
        let app = auth.issue(Grant::App { scopes: vec!["x".into()] }, now);
        auth.expire_all(now);
        assert_eq!(auth.resolve(&app, now), Credential::Expired);
    }
}
