//! Secrets sealed at rest with AES-256-GCM, for every service that keeps a company's
//! credentials (HubSpot tokens, Upso tokens).
//!
//! Keys come from configuration as `kid:base64key[,kid:base64key…]`; the first seals, all
//! open, so a key is rotated by putting a new one first. Each sealed value is bound to its
//! company id (AEAD associated data), so a ciphertext copied onto another company's row
//! does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gomark_platform::settings::SettingsError;
use std::collections::HashMap;

const FORMAT: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("credential cannot be opened: unknown key {0:?}")]
    UnknownKey(String),
    #[error("credential cannot be opened: wrong key, wrong company, or tampered")]
    Corrupt,
}

/// Seals and opens bytes for a company.
pub struct Vault {
    current: String,
    keys: HashMap<String, LessSafeKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault(current={}, keys={})", self.current, self.keys.len())
    }
}

impl Vault {
    /// Parses `kid:base64key[,…]` read from the setting `key` (named in errors); each key
    /// must be 32 random bytes.
    pub fn from_setting(key: &str, setting: &str) -> Result<Self, SettingsError> {
        let bad = |why: &str| SettingsError::invalid(key, why);
        let mut keys = HashMap::new();
        let mut current = None;
        for entry in setting.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, key) = entry.split_once(':').ok_or_else(|| bad("each entry must be kid:base64key"))?;
            if kid.is_empty() || !kid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(bad("key ids are letters, digits, '-' or '_'"));
            }
            let bytes = STANDARD.decode(key).map_err(|_| bad("keys must be base64"))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad("keys must be 32 bytes (256 bits)"))?;
            if keys.insert(kid.to_owned(), LessSafeKey::new(unbound)).is_some() {
                return Err(bad("key ids must be unique"));
            }
            current.get_or_insert_with(|| kid.to_owned());
        }
        let current = current.ok_or_else(|| bad("is required (generate a key with `gomark keygen`)"))?;
        Ok(Self { current, keys })
    }

    /// A new random key setting, `kid:base64key`.
    pub fn generate_setting(kid: &str) -> String {
        let mut key = [0u8; 32];
        // aws-lc's generator draws from the OS; it cannot fail short of a broken system.
        if aws_lc_rs::rand::fill(&mut key).is_err() {
            key = rand::random();
        }
        format!("{kid}:{}", STANDARD.encode(key))
    }

    /// `plain` sealed with the current key, bound to `company_id`.
    pub fn seal(&self, company_id: &str, plain: &[u8]) -> Result<String, VaultError> {
        let key = self.keys.get(&self.current).ok_or_else(|| VaultError::UnknownKey(self.current.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| VaultError::Corrupt)?;
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(company_id.as_bytes()), &mut data)
            .map_err(|_| VaultError::Corrupt)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(format!("{FORMAT}.{}.{}", self.current, STANDARD.encode(sealed)))
    }

    /// The bytes `sealed` holds, if it was sealed for `company_id` with a known key.
    pub fn open(&self, company_id: &str, sealed: &str) -> Result<Vec<u8>, VaultError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(FORMAT), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(VaultError::Corrupt);
        };
        let key = self.keys.get(kid).ok_or_else(|| VaultError::UnknownKey(kid.to_owned()))?;
        let mut bytes = STANDARD.decode(body).map_err(|_| VaultError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(VaultError::Corrupt);
        }
        let mut data = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| VaultError::Corrupt)?;
        let plain =
            key.open_in_place(nonce, Aad::from(company_id.as_bytes()), &mut data).map_err(|_| VaultError::Corrupt)?;
        Ok(plain.to_vec())
    }

    /// The id of the key that seals; values sealed with another can be re-sealed.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "test.credential_keys";

    #[test]
    fn sealed_values_open_only_for_their_company_and_hide_the_plaintext() {
        let vault = Vault::from_setting(KEY, &Vault::generate_setting("k1")).expect("vault");
        let sealed = vault.seal("c1", b"pat-na1-secret").expect("seal");
        assert!(!sealed.contains("pat-na1-secret"));
        assert!(sealed.starts_with("v1.k1."));
        assert_eq!(vault.open("c1", &sealed).expect("open"), b"pat-na1-secret");
        assert_eq!(vault.open("c2", &sealed), Err(VaultError::Corrupt), "bound to its company");
        // One ciphertext character changed (a middle one: all six of its bits are data).
        let mut tampered = sealed.clone().into_bytes();
        let at = tampered.len() - 8;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_ne!(tampered, sealed);
        assert_eq!(vault.open("c1", &tampered), Err(VaultError::Corrupt));
    }

    #[test]
    fn rotation_keeps_old_keys_readable() {
        let old = Vault::generate_setting("k1");
        let sealed = Vault::from_setting(KEY, &old).expect("vault").seal("c1", b"t").expect("seal");
        let rotated = Vault::from_setting(KEY, &format!("{},{old}", Vault::generate_setting("k2"))).expect("vault");
        assert_eq!(rotated.current_key_id(), "k2");
        assert_eq!(rotated.open("c1", &sealed).expect("old key still opens"), b"t");
        assert!(rotated.seal("c1", b"t").expect("seal").starts_with("v1.k2."));
        let forgotten = Vault::from_setting(KEY, &Vault::generate_setting("k3")).expect("vault");
        assert_eq!(forgotten.open("c1", &sealed), Err(VaultError::UnknownKey("k1".into())));
    }

    #[test]
    fn bad_settings_name_the_key() {
        for bad in ["", "nocolon", "k1:not-base64!", "k1:AAAA", "k 1:AAAA"] {
            let err = Vault::from_setting(KEY, bad).expect_err(bad);
            assert!(err.to_string().contains(KEY), "{err}");
        }
    }
}
