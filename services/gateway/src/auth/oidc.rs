//! OIDC bearer tokens: JWTs signed by the configured issuer, verified against its JWKS
//! (fetched with a timeout, cached, refreshed when a new signing key appears).

use crate::problem::Problem;
use gomark_platform::{Caller, ErrorKind, Role, Scope};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OidcSettings {
    /// `iss` every token must carry, e.g. `https://login.example.com/realms/gomark`.
    pub issuer: String,
    /// `aud` every token must carry.
    pub audience: String,
    /// Where the signing keys are; discovered from the issuer when empty.
    pub jwks_url: String,
    /// Claim holding the role (`viewer`, `operator`, `admin`).
    pub role_claim: String,
    /// Claim holding the company id; absent means portfolio-wide.
    pub company_claim: String,
    /// Keys are refetched at least this often.
    pub jwks_refresh_secs: u64,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            role_claim: "gomark_role".into(),
            company_claim: "gomark_company".into(),
            jwks_refresh_secs: 300,
        }
    }
}

/// Algorithms a signing key may use; symmetric ones and `none` never pass.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Unknown key ids trigger a refetch, but not more often than this.
const MIN_REFETCH: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<Option<(Instant, JwkSet)>>,
}

fn invalid() -> Problem {
    Problem::new(ErrorKind::Unauthenticated, "the bearer token is invalid or expired")
}

fn unavailable() -> Problem {
    Problem::new(ErrorKind::Unavailable, "the identity provider is unreachable, retry later")
}

/// The scope a token's company claim grants. Only an absent claim means the whole
/// portfolio and only one non-empty string names a company: anything else (an array, a
/// number, null, "") is a token we cannot read safely, refused rather than widened.
fn scope_of(claim: Option<&serde_json::Value>) -> Result<Scope, Problem> {
    match claim {
        None => Ok(Scope::Portfolio),
        Some(serde_json::Value::String(company)) if !company.trim().is_empty() && !company.contains('\0') => {
            Ok(Scope::Company(company.clone()))
        }
        Some(_) => Err(Problem::new(ErrorKind::PermissionDenied, "the token's company claim must be one company id")),
    }
}

impl OidcVerifier {
    pub fn new(settings: OidcSettings) -> anyhow::Result<Self> {
        let http = gomark_vendor_http::tls::client_builder().timeout(FETCH_TIMEOUT).build()?;
        Ok(Self { settings, http, keys: RwLock::new(None) })
    }

    async fn jwks_url(&self) -> Result<String, Problem> {
        if !self.settings.jwks_url.is_empty() {
            return Ok(self.settings.jwks_url.clone());
        }
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer.trim_end_matches('/'));
        let discovery: Discovery = self.fetch(&url).await?;
        Ok(discovery.jwks_uri)
    }

    async fn fetch<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Problem> {
        let response = self.http.get(url).send().await.map_err(|e| {
            tracing::warn!(error = %e, "identity provider unreachable");
            unavailable()
        })?;
        response.error_for_status().map_err(|_| unavailable())?.json().await.map_err(|e| {
            tracing::warn!(error = %e, "identity provider answered something unreadable");
            unavailable()
        })
    }

    /// The key for `kid`, refetching the set when it is stale or lacks that key.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, Problem> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let refresh = Duration::from_secs(self.settings.jwks_refresh_secs);
        if let Some((fetched, set)) = &*self.keys.read().await {
            let age = fetched.elapsed();
            match find(set) {
                Some(jwk) if age < refresh => return Ok(jwk),
                None if age < MIN_REFETCH => return Err(invalid()),
                _ => {}
            }
        }
        let set: JwkSet = self.fetch(&self.jwks_url().await?).await?;
        let found = find(&set);
        *self.keys.write().await = Some((Instant::now(), set));
        found.ok_or_else(invalid)
    }

    pub async fn verify(&self, token: &str) -> Result<Caller, Problem> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(invalid());
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid())?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(&[self.settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // A token is not valid before its `nbf` either.
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map_err(|_| invalid())?
            .claims;
        let role: Role = claims
            .get(&self.settings.role_claim)
            .and_then(|v| v.as_str())
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| Problem::new(ErrorKind::PermissionDenied, "the token grants no GoMark role"))?;
        let scope = scope_of(claims.get(&self.settings.company_claim))?;
        let subject = claims.get("sub").and_then(|v| v.as_str()).unwrap_or_default();
        Ok(Caller { actor: format!("oidc:{subject}"), role, scope })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_one_company_string_scopes_and_anything_else_is_refused() {
        assert_eq!(scope_of(None).ok(), Some(Scope::Portfolio));
        assert_eq!(scope_of(Some(&json!("c1"))).ok(), Some(Scope::Company("c1".into())));
        for bad in
            [json!(["c1"]), json!(["c1", "c2"]), json!([]), json!(7), json!(null), json!(""), json!({"id": "c1"})]
        {
            let refused = scope_of(Some(&bad)).expect_err("refused");
            assert_eq!(refused.status, 403, "{bad}");
        }
    }
}
