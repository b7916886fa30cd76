//! Typed, reusable HubSpot CRM API client for GoMark: one shared connection pool for all portals,
//! per-call bearer tokens, bounded jittered retries, and HubSpot rate-limit header parsing.
//!
//! Every path follows an [`ApiVersion`] (v3, 2026-03, 2026-09), the client's default or the one
//! a token is pinned to ([`AccessToken::with_api_version`]), so each portal keeps its own.
//! [`journal`] reads a portal's webhooks journal with a client-credentials token.
//!
//! Covered (deals, every `ApiVersion`): properties and property groups (with batch
//! create/read/archive), pipelines and stages, deal records (list, CRUD, batch read/create),
//! search with local validation, an incremental sync over search that survives the 10,000-result
//! cap ([`sync`]), and OAuth token refresh. An optional per-portal [`RequestBudget`] is consulted
//! before every attempt. [`webhook`] verifies HubSpot webhook signatures and parses event batches.
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

mod batch;
mod budget;
mod client;
mod config;
pub mod deals;
mod error;
pub mod journal;
mod oauth;
mod pipeline_rules;
pub mod pipelines;
mod properties;
mod rate_limit;
mod retry;
pub mod search;
mod serde_util;
pub mod sync;
mod token;
mod validations;
pub mod webhook;

pub use batch::{BATCH_CHUNK_SIZE, BatchError, BatchResult};
pub use budget::{BudgetError, Permit, RequestBudget, RequestKind};
pub use client::HubSpotClient;
pub use config::{ApiVersion, ClientConfig, DEFAULT_BASE_URL, UnknownApiVersion};
pub use deals::model::{Deal, Page, parse_timestamp_ms};
pub use error::{Error, Refusal, Result};
pub use journal::{JournalEntry, JournalEvent};
pub use oauth::{ClientCredentialsToken, JOURNAL_READ_SCOPE, OAuthTokens};
pub use pipeline_rules::{CreationRuleSpec, GovernanceRules, StageRuleSpec};
pub use pipelines::model::{
    Pipeline, PipelineCreate, PipelineReplace, PipelineStage, PipelineStageInput, PipelineStageUpdate, PipelineUpdate,
    normalize_probability, probability, stage_metadata,
};
pub use properties::DEALS_OBJECT_TYPE;
pub use properties::model::{
    ModificationMetadata, Property, PropertyCreate, PropertyGroup, PropertyGroupCreate, PropertyGroupUpdate,
    PropertyOption, PropertyUpdate,
};
pub use rate_limit::{RateLimitInfo, RateLimitPolicy};
pub use search::{Filter, FilterGroup, Operator, SearchPage, SearchRequest, Sort, SortDirection};
pub use sync::{IncrementalSync, SyncOutcome};
pub use token::AccessToken;
pub use validations::{PropertyValidationRule, PropertyValidations};
pub use webhook::{SignatureError, SignatureVersion, SignedRequest, VerifyOptions, WebhookEvent, WebhookSecret};
