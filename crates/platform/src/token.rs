//! The shape every third-party API token must have before GoMark stores or sends it.

use crate::PublicError;

/// Longest token accepted; real HubSpot and Upso tokens are far shorter.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Checks that `token` can travel in an `Authorization: Bearer` header: 1 to
/// [`MAX_TOKEN_LEN`] visible ASCII characters. A token that cannot would otherwise be
/// stored and then fail every call as if the vendor were down.
pub fn check_bearer_token(field: &str, token: &str) -> Result<(), PublicError> {
    if token.is_empty() {
        return Err(PublicError::invalid(field, "is required"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(PublicError::invalid(field, format!("must be at most {MAX_TOKEN_LEN} characters")));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PublicError::invalid(field, "must be visible ASCII characters, without spaces"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_token_shapes() {
        assert!(check_bearer_token("token", "pat-na1-11111111-2222-3333-4444-555555555555").is_ok());
        assert!(check_bearer_token("token", "upso_live_AbC+/9=").is_ok());
    }

    #[test]
    fn refuses_what_a_header_cannot_carry_and_names_the_field() {
        for bad in ["", " ", "a b", "tok\n", "tök", "\u{0}", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            let err = check_bearer_token("upso_token", bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("upso_token"), "{bad:?}");
        }
    }
}
