//! Typed, reusable HubSpot CRM API client for GoMark: one shared connection pool for all portals,
//! per-call bearer tokens, bounded jittered retries, and HubSpot rate-limit header parsing.
//!
//! Only deal-property endpoints exist today (see [`HubSpotClient::list_deal_properties`] and
//! friends); pipelines and deals will be added as further modules on top of the same request/retry
//! core. [`webhook`] verifies HubSpot webhook signatures and parses event batches.
//!
//! ```no_run
//! # async fn demo() -> hubspot_client::Result<()> {
//! use hubspot_client::{AccessToken, ClientConfig, HubSpotClient};
//!
//! let client = HubSpotClient::new(ClientConfig::default())?;
//! let token = AccessToken::new("pat-na1-...");
//! let properties = client.list_deal_properties(&token).await?;
//! if let Some(info) = client.last_rate_limit(&token) {
//!     println!("{:?} calls left in this window", info.remaining);
//! }
//! # let _ = properties;
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod error;
mod properties;
mod rate_limit;
mod retry;
mod serde_util;
mod token;
pub mod webhook;

pub use client::HubSpotClient;
pub use config::{ApiVersion, ClientConfig, DEFAULT_BASE_URL};
pub use error::{Error, Result};
pub use properties::DEALS_OBJECT_TYPE;
pub use properties::model::{ModificationMetadata, Property, PropertyCreate, PropertyOption, PropertyUpdate};
pub use rate_limit::{RateLimitInfo, RateLimitPolicy};
pub use token::AccessToken;
pub use webhook::{SignatureError, SignatureVersion, SignedRequest, VerifyOptions, WebhookEvent, WebhookSecret};
