//! Per-portal request budget hook (CONTRACT.md §3, §8.1).
//!
//! HubSpot's limits are per portal (daily) and per app (burst), and CRM search has its own
//! ≤ 5 requests/s budget. The client itself keeps no limiter: a [`RequestBudget`] installed with
//! [`crate::HubSpotClient::with_budget`] is asked before **every** HTTP attempt (retries
//! included) and told about every response, so one implementation can pace all portals, be
//! shared across replicas, and be driven by the `X-HubSpot-RateLimit-*` headers rather than
//! hard-coded tiers.

use std::time::Duration;

use async_trait::async_trait;

use crate::rate_limit::RateLimitInfo;

/// Which of a portal's budgets a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Every endpoint except CRM search: burst (per 10 s) and daily limits.
    Standard,
    /// `POST …/search`: its own ≤ 5 requests/s budget; responses carry no rate-limit headers.
    Search,
}

/// Why a [`RequestBudget`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The portal's daily budget is spent. The client fails the call with
    /// [`crate::Error::RateLimited`] (policy `DAILY`, `retry_after` as given) without any
    /// HTTP call.
    #[error("daily HubSpot budget exhausted (retry after {} s)", .retry_after.as_secs())]
    DailyExhausted {
        /// Time until the budget resets (the portal's midnight).
        retry_after: Duration,
    },
    /// No slot frees up before the caller's wait limit (see
    /// [`crate::HubSpotClient::with_budget_wait_until`]). The client fails the call with
    /// [`crate::Error::RateLimited`] (policy `TEN_SECONDLY_ROLLING`, `retry_after` as given)
    /// without any HTTP call, so the caller can come back then instead of waiting past its
    /// own deadline.
    #[error("HubSpot burst budget busy (a slot frees in {} ms)", .retry_after.as_millis())]
    Busy {
        /// Time until a slot frees up.
        retry_after: Duration,
    },
}

/// A per-portal request limiter.
///
/// `key` is [`crate::AccessToken::budget_key`]: the portal label set with
/// [`crate::AccessToken::for_portal`], or a hash of the token. It is never the token.
/// What [`RequestBudget::acquire`] granted, handed back to [`RequestBudget::finish`] when
/// the attempt is over; opaque to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permit(pub String);

#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Called before every HTTP attempt, retries included. May sleep to pace requests; returns
    /// an error to refuse the attempt outright.
    async fn acquire(&self, key: &str, kind: RequestKind) -> Result<Permit, BudgetError>;

    /// Like [`RequestBudget::acquire`], but never sleeps past `until`: when no slot frees up
    /// before then it returns [`BudgetError::Busy`] at once. The default ignores `until`.
    async fn acquire_until(
        &self,
        key: &str,
        kind: RequestKind,
        until: tokio::time::Instant,
    ) -> Result<Permit, BudgetError> {
        let _ = until;
        self.acquire(key, kind).await
    }

    /// Called when the attempt is over, whatever its outcome (response, timeout, connection
    /// error). A limiter can count the request from here: it reached HubSpot before now.
    async fn finish(&self, _key: &str, _kind: RequestKind, _permit: Permit) {}

    /// Called after every HTTP response (any status; not after timeouts or connection errors,
    /// where there is no response) with its rate-limit headers, if it had any.
    fn observe(&self, key: &str, kind: RequestKind, info: Option<&RateLimitInfo>, status: u16);
}
