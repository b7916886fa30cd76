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
#[derive(Clone, PartialEq, Eq)]
pub struct UpsoToken(String);

impl UpsoToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The raw token. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for UpsoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpsoToken(***)")
    }
}
