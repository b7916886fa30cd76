//! Portal access tokens.

use std::fmt;

/// A portal's bearer token (private-app token, service key or OAuth access token).
///
/// `Debug` and `Display` print `AccessToken(***)`: the secret never appears in logs or errors.
/// Use [`AccessToken::expose`] only where the raw value is really needed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a raw token.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The raw token. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

impl From<String> for AccessToken {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for AccessToken {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
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
    }
}
