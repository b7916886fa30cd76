//! Upso account tokens, sealed at rest with [`gomark_vault`] (AES-256-GCM, bound to their
//! company). Older keys keep opening what they sealed; a token is re-sealed with the
//! current key when it is registered again.

use gomark_platform::settings::SettingsError;
use upso_client::UpsoToken;

pub use gomark_vault::VaultError;

const SETTING: &str = "upso.credential_keys";

/// Seals and opens Upso tokens.
#[derive(Debug)]
pub struct Vault(gomark_vault::Vault);

impl Vault {
    /// Parses `upso.credential_keys`: `kid:base64key[,…]`.
    pub fn from_setting(setting: &str) -> Result<Self, SettingsError> {
        gomark_vault::Vault::from_setting(SETTING, setting).map(Self)
    }

    /// A new random key setting, `kid:base64key`.
    pub fn generate_setting(kid: &str) -> String {
        gomark_vault::Vault::generate_setting(kid)
    }

    pub fn seal(&self, company_id: &str, token: &UpsoToken) -> Result<String, VaultError> {
        self.0.seal(company_id, token.expose().as_bytes())
    }

    pub fn open(&self, company_id: &str, sealed: &str) -> Result<UpsoToken, VaultError> {
        let plain = self.0.open(company_id, sealed)?;
        let token = std::str::from_utf8(&plain).map_err(|_| VaultError::Corrupt)?;
        // Labelled with its company, which is what Upso call metrics are counted under.
        Ok(UpsoToken::new(token).for_account(company_id))
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        self.0.current_key_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> UpsoToken {
        UpsoToken::new("upso-secret-token")
    }

    #[test]
    fn sealed_credentials_open_only_for_their_company_and_hide_the_token() {
        let vault = Vault::from_setting(&Vault::generate_setting("k1")).expect("vault");
        let sealed = vault.seal("c1", &token()).expect("seal");
        assert!(!sealed.contains("upso-secret-token"));
        assert!(sealed.starts_with("v1.k1."));
        assert_eq!(vault.open("c1", &sealed).expect("open"), token());
        assert_eq!(vault.open("c2", &sealed), Err(VaultError::Corrupt), "bound to its company");
        assert_eq!(format!("{:?}", token()), "UpsoToken(***)");
    }

    #[test]
    fn rotation_keeps_old_keys_readable() {
        let old = Vault::generate_setting("k1");
        let sealed = Vault::from_setting(&old).expect("vault").seal("c1", &token()).expect("seal");
        let rotated = Vault::from_setting(&format!("{},{old}", Vault::generate_setting("k2"))).expect("vault");
        assert_eq!(rotated.current_key_id(), "k2");
        assert_eq!(rotated.open("c1", &sealed).expect("old key still opens"), token());
        assert!(rotated.seal("c1", &token()).expect("seal").starts_with("v1.k2."));
        let forgotten = Vault::from_setting(&Vault::generate_setting("k3")).expect("vault");
        assert_eq!(forgotten.open("c1", &sealed), Err(VaultError::UnknownKey("k1".into())));
    }

    #[test]
    fn bad_settings_name_the_key() {
        for bad in ["", "nocolon", "k1:not-base64!", "k1:AAAA", "k 1:AAAA"] {
            let err = Vault::from_setting(bad).expect_err(bad);
            assert!(err.to_string().contains("upso.credential_keys"), "{err}");
        }
    }
}
