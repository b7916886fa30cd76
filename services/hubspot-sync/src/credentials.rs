//! HubSpot credentials, sealed at rest with [`gomark_vault`] (AES-256-GCM, bound to their
//! company; rows sealed with an older key are re-sealed at start).

use gomark_platform::settings::SettingsError;
use hubspot_client::AccessToken;
use serde::{Deserialize, Serialize};

pub use gomark_vault::VaultError;

const SETTING: &str = "hubspot.credential_keys";

/// What GoMark holds to call a portal.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    /// A legacy private-app token: valid until revoked in HubSpot.
    PrivateApp { token: String },
    /// A service key (what replaced new private apps in late 2026): a bearer token like a
    /// private app's, valid until revoked, but it cannot receive push webhooks, so such a
    /// portal's changes come through its journal.
    ServiceKey { token: String },
    /// An OAuth grant: the access token is refreshed before `expires_at_ms`.
    OAuth { access_token: String, refresh_token: String, expires_at_ms: i64 },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::PrivateApp { .. } => f.write_str("Credential::PrivateApp(***)"),
            Credential::ServiceKey { .. } => f.write_str("Credential::ServiceKey(***)"),
            Credential::OAuth { expires_at_ms, .. } => {
                write!(f, "Credential::OAuth(***, expires_at_ms={expires_at_ms})")
            }
        }
    }
}

impl Credential {
    /// The bearer token to call HubSpot with now.
    pub fn bearer(&self) -> AccessToken {
        match self {
            Credential::PrivateApp { token } | Credential::ServiceKey { token } => AccessToken::new(token.clone()),
            Credential::OAuth { access_token, .. } => AccessToken::new(access_token.clone()),
        }
    }

    pub fn expires_at_ms(&self) -> Option<i64> {
        match self {
            Credential::PrivateApp { .. } | Credential::ServiceKey { .. } => None,
            Credential::OAuth { expires_at_ms, .. } => Some(*expires_at_ms),
        }
    }
}

impl Credential {
    /// `private_app`, `service_key` or `oauth`: what the API shows, never the secret.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::PrivateApp { .. } => "private_app",
            Credential::ServiceKey { .. } => "service_key",
            Credential::OAuth { .. } => "oauth",
        }
    }
}

/// An app's client id and secret, exchanged for a client-credentials token to read the
/// portal's webhooks journal.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientCredentials(client_id={}, ***)", self.client_id)
    }
}

/// Seals and opens credentials.
#[derive(Debug)]
pub struct Vault(gomark_vault::Vault);

impl Vault {
    /// Parses `hubspot.credential_keys`: `kid:base64key[,…]`.
    pub fn from_setting(setting: &str) -> Result<Self, SettingsError> {
        gomark_vault::Vault::from_setting(SETTING, setting).map(Self)
    }

    /// A new random key setting, `kid:base64key`.
    pub fn generate_setting(kid: &str) -> String {
        gomark_vault::Vault::generate_setting(kid)
    }

    pub fn seal<T: Serialize>(&self, company_id: &str, credential: &T) -> Result<String, VaultError> {
        let data = serde_json::to_vec(credential).map_err(|_| VaultError::Corrupt)?;
        self.0.seal(company_id, &data)
    }

    pub fn open<T: serde::de::DeserializeOwned>(&self, company_id: &str, sealed: &str) -> Result<T, VaultError> {
        serde_json::from_slice(&self.0.open(company_id, sealed)?).map_err(|_| VaultError::Corrupt)
    }

    /// The id of the key that seals; rows sealed with another are re-sealed.
    pub fn current_key_id(&self) -> &str {
        self.0.current_key_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Credential {
        Credential::PrivateApp { token: "pat-na1-secret".into() }
    }

    #[test]
    fn sealed_credentials_open_only_for_their_company_and_hide_the_token() {
        let vault = Vault::from_setting(&Vault::generate_setting("k1")).expect("vault");
        let sealed = vault.seal("c1", &token()).expect("seal");
        assert!(!sealed.contains("pat-na1-secret"));
        assert!(sealed.starts_with("v1.k1."));
        assert_eq!(vault.open::<Credential>("c1", &sealed).expect("open"), token());
        assert_eq!(vault.open::<Credential>("c2", &sealed), Err(VaultError::Corrupt), "bound to its company");
        assert_eq!(format!("{:?}", token()), "Credential::PrivateApp(***)");
    }

    #[test]
    fn service_keys_and_client_credentials_seal_and_never_print() {
        let vault = Vault::from_setting(&Vault::generate_setting("k1")).expect("vault");
        let key = Credential::ServiceKey { token: "sk-na1-secret".into() };
        let sealed = vault.seal("c1", &key).expect("seal");
        assert!(!sealed.contains("sk-na1-secret"));
        assert_eq!(vault.open::<Credential>("c1", &sealed).expect("open"), key);
        assert_eq!(key.bearer().expose(), "sk-na1-secret");
        assert_eq!((key.kind(), key.expires_at_ms()), ("service_key", None));
        assert_eq!(format!("{key:?}"), "Credential::ServiceKey(***)");
        let cc = ClientCredentials { client_id: "app-1".into(), client_secret: "cs-secret".into() };
        let sealed = vault.seal("c1", &cc).expect("seal");
        assert!(!sealed.contains("cs-secret"));
        assert_eq!(vault.open::<ClientCredentials>("c1", &sealed).expect("open"), cc);
        assert_eq!(format!("{cc:?}"), "ClientCredentials(client_id=app-1, ***)");
    }

    #[test]
    fn rotation_keeps_old_keys_readable() {
        let old = Vault::generate_setting("k1");
        let sealed = Vault::from_setting(&old).expect("vault").seal("c1", &token()).expect("seal");
        let rotated = Vault::from_setting(&format!("{},{old}", Vault::generate_setting("k2"))).expect("vault");
        assert_eq!(rotated.current_key_id(), "k2");
        assert_eq!(rotated.open::<Credential>("c1", &sealed).expect("old key still opens"), token());
        assert!(rotated.seal("c1", &token()).expect("seal").starts_with("v1.k2."));
        let forgotten = Vault::from_setting(&Vault::generate_setting("k3")).expect("vault");
        assert_eq!(forgotten.open::<Credential>("c1", &sealed), Err(VaultError::UnknownKey("k1".into())));
    }

    #[test]
    fn bad_settings_name_the_key() {
        for bad in ["", "nocolon", "k1:not-base64!", "k1:AAAA", "k 1:AAAA"] {
            let err = Vault::from_setting(bad).expect_err(bad);
            assert!(err.to_string().contains("hubspot.credential_keys"), "{err}");
        }
    }
}
