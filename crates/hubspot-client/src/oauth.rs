//! OAuth token refresh (CONTRACT.md §1) for public-app installs.
//!
//! Refresh before `expires_in` runs out rather than after a 401. The client secret and both
//! tokens are redacted from every error, and [`OAuthTokens`]' `Debug` shows no secret.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;

use crate::budget::RequestKind;
use crate::client::{Call, HubSpotClient, Payload};
use crate::error::{Error, Result};
use crate::token::AccessToken;

/// Tokens returned by the OAuth token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthTokens {
    /// New access token (up to ~300 characters).
    pub access_token: AccessToken,
    /// Refresh token to use next time (HubSpot may return the same one).
    pub refresh_token: AccessToken,
    /// Lifetime of `access_token`.
    pub expires_in: Duration,
    /// The portal (hub) the tokens belong to, when HubSpot says.
    pub hub_id: Option<u64>,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    #[serde(default)]
    hub_id: Option<u64>,
}

impl HubSpotClient {
    /// `POST /oauth/v1/token` (or `/oauth/2026-03/token`) with a form-urlencoded
    /// `grant_type=refresh_token` body.
    ///
    /// The new tokens inherit `refresh_token`'s portal label ([`AccessToken::for_portal`]), which
    /// is also the budget key of this call. A rejected refresh token comes back as
    /// [`Error::Api`] with status 400.
    pub async fn refresh_access_token(
        &self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &AccessToken,
    ) -> Result<OAuthTokens> {
        let url = self.root_url(&self.api_version_for(refresh_token).oauth_token_segments())?;
        let form = form_body(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("refresh_token", refresh_token.expose()),
        ])?;
        let response = self
            .execute(Call {
                method: Method::POST,
                url,
                payload: Payload::Form(form),
                bearer: None,
                budget_key: refresh_token.budget_key(),
                kind: RequestKind::Standard,
                secrets: vec![client_secret, refresh_token.expose()],
            })
            .await?;
        // serde's messages can quote the offending value, i.e. a token: keep only the shape.
        let body: TokenBody = response.json().map_err(|_| {
            Error::Decode("OAuth token response is missing access_token/refresh_token/expires_in".into())
        })?;
        let label = |token: String| match refresh_token.portal() {
            Some(portal) => AccessToken::new(token).for_portal(portal),
            None => AccessToken::new(token),
        };
        Ok(OAuthTokens {
            access_token: label(body.access_token),
            refresh_token: label(body.refresh_token),
            expires_in: Duration::from_secs(body.expires_in),
            hub_id: body.hub_id,
        })
    }
}

/// A client-credentials access token (the webhooks journal's auth): no refresh token, fetch a
/// new one before `expires_in` runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentialsToken {
    /// Labelled like the `portal` token passed in (portal and version), so budgets apply.
    pub access_token: AccessToken,
    pub expires_in: Duration,
}

#[derive(Deserialize)]
struct ClientCredentialsBody {
    access_token: String,
    expires_in: u64,
}

/// The scope the journal reader asks for.
pub const JOURNAL_READ_SCOPE: &str = "developer.webhooks_journal.read";

impl HubSpotClient {
    /// `POST /oauth/v1/token` (or `/oauth/{date}/token`, after `portal`'s pinned version) with
    /// `grant_type=client_credentials`: an app token for the webhooks journal. `portal` is the
    /// portal's usual token, used only for its labels (budget key and version), never sent.
    pub async fn client_credentials_token(
        &self,
        portal: &AccessToken,
        client_id: &str,
        client_secret: &str,
        scope: &str,
    ) -> Result<ClientCredentialsToken> {
        let url = self.root_url(&self.api_version_for(portal).oauth_token_segments())?;
        let form = form_body(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("scope", scope),
        ])?;
        let response = self
            .execute(Call {
                method: Method::POST,
                url,
                payload: Payload::Form(form),
                bearer: None,
                budget_key: portal.budget_key(),
                kind: RequestKind::Standard,
                secrets: vec![client_secret],
            })
            .await?;
        let body: ClientCredentialsBody = response.json().map_err(|_| {
            Error::Decode("client-credentials token response is missing access_token/expires_in".into())
        })?;
        let mut token = AccessToken::new(body.access_token);
        if let Some(label) = portal.portal() {
            token = token.for_portal(label);
        }
        if let Some(version) = portal.api_version() {
            token = token.with_api_version(version);
        }
        Ok(ClientCredentialsToken { access_token: token, expires_in: Duration::from_secs(body.expires_in) })
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs` (the `url` crate's serializer,
/// reached through a scratch URL so no extra dependency or reqwest feature is needed).
fn form_body(pairs: &[(&str, &str)]) -> Result<String> {
    let mut scratch = Url::parse("http://form.invalid/").map_err(|e| Error::Encode(e.to_string()))?;
    scratch.query_pairs_mut().extend_pairs(pairs);
    Ok(scratch.query().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding() -> Result<()> {
        assert_eq!(form_body(&[("a", "x y"), ("b", "&=+/é")])?, "a=x+y&b=%26%3D%2B%2F%C3%A9");
        Ok(())
    }

    #[test]
    fn tokens_debug_is_redacted() {
        let t = OAuthTokens {
            access_token: AccessToken::new("CJT-access"),
            refresh_token: AccessToken::new("rt-secret"),
            expires_in: Duration::from_secs(1800),
            hub_id: Some(62515),
        };
        let text = format!("{t:?}");
        assert!(!text.contains("CJT-access") && !text.contains("rt-secret"), "{text}");
        assert!(text.contains("62515"));
    }
}
