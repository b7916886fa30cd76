//! Each portal's HubSpot budget, shared by every hubspot-sync replica.
//!
//! The burst limit is a rolling window (HubSpot counts the last 10 s); it is enforced
//! exactly through the cache's rolling-window slots (Redis in distributed mode), sized from
//! the `X-HubSpot-RateLimit-*` headers as soon as a response reports them, conservatively
//! before. Search has its own 5-per-second window. A spent daily budget stops the portal
//! until midnight UTC. When the cache is down, each replica paces itself locally at half
//! the budget, which stays under the limit for two replicas and never stops work.

use async_trait::async_trait;
use gomark_cache::{Cache, MemoryCache};
use hubspot_client::{BudgetError, Permit, RateLimitInfo, RequestBudget, RequestKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an unknown portal is assumed to allow: the smallest tier (CONTRACT.md §3).
const DEFAULT_BURST: u32 = 100;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// HubSpot allows 5 searches a second per portal.
const SEARCHES_PER_SECOND: u32 = 5;
/// Headroom under the limit for requests HubSpot counts that we did not (other apps, clock skew).
const MARGIN: f64 = 0.9;
/// A request never waits longer than this for a slot; past it, HubSpot's own 429 handling applies.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Limits {
    burst: u32,
    interval: Duration,
    /// When the daily budget was found spent: until when.
    stopped_until_ms: Option<i64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { burst: DEFAULT_BURST, interval: DEFAULT_INTERVAL, stopped_until_ms: None }
    }
}

pub struct PortalBudget {
    shared: Arc<dyn Cache>,
    local: MemoryCache,
    limits: Mutex<HashMap<String, Limits>>,
    /// Names this process's slots uniquely among all replicas.
    instance: String,
    next_slot: AtomicU64,
}

fn slot_key(key: &str, kind: RequestKind) -> String {
    match kind {
        RequestKind::Standard => format!("hubspot:burst:{key}"),
        RequestKind::Search => format!("hubspot:search:{key}"),
    }
}

fn next_utc_midnight_ms(now_ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    (now_ms.div_euclid(DAY) + 1) * DAY
}

impl PortalBudget {
    pub fn new(shared: Arc<dyn Cache>) -> Self {
        Self {
            shared,
            local: MemoryCache::new("hubspot-budget-local"),
            limits: Mutex::new(HashMap::new()),
            instance: format!("{:x}", rand::random::<u64>()),
            next_slot: AtomicU64::new(0),
        }
    }

    fn limits(&self, key: &str) -> Limits {
        self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).copied().unwrap_or_default()
    }

    fn update(&self, key: &str, change: impl FnOnce(&mut Limits)) {
        let mut all = self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        change(all.entry(key.to_owned()).or_default());
    }

    /// Until when (epoch ms) the portal is paused because its daily budget is spent.
    pub fn paused_until_ms(&self, key: &str) -> Option<i64> {
        let now = gomark_storage::now_ms();
        self.limits(key).stopped_until_ms.filter(|until| *until > now)
    }

    /// Portals whose daily budget is spent, and until when (epoch ms), for reporting.
    pub fn stopped_portals(&self) -> Vec<(String, i64)> {
        let now = gomark_storage::now_ms();
        self.limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|(k, l)| l.stopped_until_ms.filter(|until| *until > now).map(|until| (k.clone(), until)))
            .collect()
    }
}

impl PortalBudget {
    /// Waits for a slot of the portal's window; past `give_up` (when set) it answers
    /// [`BudgetError::Busy`] instead of sleeping, past [`MAX_WAIT`] it lets the request go.
    async fn take_slot(
        &self,
        key: &str,
        kind: RequestKind,
        give_up: Option<tokio::time::Instant>,
    ) -> Result<Permit, BudgetError> {
        let limits = self.limits(key);
        let now = gomark_storage::now_ms();
        if let Some(until) = limits.stopped_until_ms.filter(|until| *until > now) {
            return Err(BudgetError::DailyExhausted { retry_after: Duration::from_millis((until - now) as u64) });
        }
        let (window, max) = match kind {
            RequestKind::Standard => (limits.interval, ((f64::from(limits.burst) * MARGIN) as u32).max(1)),
            RequestKind::Search => (Duration::from_secs(1), SEARCHES_PER_SECOND - 1),
        };
        let window_key = slot_key(key, kind);
        let slot = format!("{}:{}", self.instance, self.next_slot.fetch_add(1, Ordering::Relaxed));
        let started = tokio::time::Instant::now();
        loop {
            let wait = match self.shared.acquire_slot(&window_key, window, max, &slot).await {
                Ok(wait) => wait,
                Err(err) => {
                    tracing::debug!(error = %err, "shared HubSpot budget unavailable, pacing locally");
                    self.local.acquire_slot(&window_key, window, (max / 2).max(1), &slot).await.unwrap_or(None)
                }
            };
            let Some(wait) = wait else { return Ok(Permit(slot)) };
            if give_up.is_some_and(|give_up| tokio::time::Instant::now() + wait > give_up) {
                metrics::counter!("hubspot_budget_deferred_total").increment(1);
                return Err(BudgetError::Busy { retry_after: wait });
            }
            if started.elapsed() + wait > MAX_WAIT {
                tracing::warn!(portal = key, "waited {MAX_WAIT:?} for a HubSpot slot; sending anyway");
                return Ok(Permit(slot));
            }
            metrics::counter!("hubspot_budget_waits_total", "kind" => if kind == RequestKind::Search { "search" } else { "standard" })
                .increment(1);
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl RequestBudget for PortalBudget {
    async fn acquire(&self, key: &str, kind: RequestKind) -> Result<Permit, BudgetError> {
        self.take_slot(key, kind, None).await
    }

    async fn acquire_until(
        &self,
        key: &str,
        kind: RequestKind,
        until: tokio::time::Instant,
    ) -> Result<Permit, BudgetError> {
        self.take_slot(key, kind, Some(until)).await
    }

    /// The request reached HubSpot some time between acquire and now; counting it from now
    /// keeps the window honest when requests queue before they are sent.
    async fn finish(&self, key: &str, kind: RequestKind, permit: Permit) {
        let window_key = slot_key(key, kind);
        if self.shared.restamp_slot(&window_key, &permit.0).await.is_err() {
            let _ = self.local.restamp_slot(&window_key, &permit.0).await;
        }
    }

    fn observe(&self, key: &str, kind: RequestKind, info: Option<&RateLimitInfo>, status: u16) {
        if kind == RequestKind::Search {
            return;
        }
        let Some(info) = info else { return };
        self.update(key, |limits| {
            if let (Some(max), Some(interval)) = (info.max, info.interval)
                && max > 0
                && !interval.is_zero()
            {
                limits.burst = max;
                limits.interval = interval;
            }
            if info.daily_remaining == Some(0) || (status == 429 && info.daily_remaining.is_some_and(|r| r < 10)) {
                let until = next_utc_midnight_ms(gomark_storage::now_ms());
                if limits.stopped_until_ms != Some(until) {
                    tracing::warn!(
                        portal = key,
                        until_ms = until,
                        "HubSpot daily budget spent; portal paused until it resets"
                    );
                }
                limits.stopped_until_ms = Some(until);
            }
        });
        if let Some(remaining) = info.daily_remaining {
            metrics::gauge!("hubspot_daily_budget_remaining", "portal" => key.to_owned()).set(remaining as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn headers_resize_the_window_and_a_spent_day_stops_the_portal() {
        let budget = PortalBudget::new(Arc::new(MemoryCache::new("t")));
        let info = RateLimitInfo {
            max: Some(10),
            remaining: Some(9),
            interval: Some(Duration::from_millis(1000)),
            daily: Some(1000),
            daily_remaining: Some(5),
        };
        budget.observe("p1", RequestKind::Standard, Some(&info), 200);
        let started = tokio::time::Instant::now();
        for _ in 0..9 {
            budget.acquire("p1", RequestKind::Standard).await.expect("slot");
        }
        assert!(started.elapsed() < Duration::from_millis(600), "9 of 10 go at once (90% margin)");
        budget.acquire("p1", RequestKind::Standard).await.expect("slot after waiting");
        assert!(started.elapsed() >= Duration::from_millis(900), "the 10th waited for the window");
        budget.acquire("p2", RequestKind::Standard).await.expect("another portal is not slowed");

        budget.observe("p1", RequestKind::Standard, Some(&RateLimitInfo { daily_remaining: Some(0), ..info }), 200);
        assert!(matches!(budget.acquire("p1", RequestKind::Standard).await, Err(BudgetError::DailyExhausted { .. })));
        assert_eq!(budget.stopped_portals().len(), 1);
        budget.acquire("p2", RequestKind::Standard).await.expect("p2 unaffected");
    }

    #[tokio::test]
    async fn a_caller_with_a_deadline_is_told_when_to_come_back_instead_of_waiting() {
        let budget = PortalBudget::new(Arc::new(MemoryCache::new("t")));
        let info = RateLimitInfo { max: Some(5), interval: Some(Duration::from_secs(10)), ..RateLimitInfo::default() };
        budget.observe("p1", RequestKind::Standard, Some(&info), 200);
        let soon = tokio::time::Instant::now() + Duration::from_secs(2);
        for _ in 0..4 {
            budget.acquire_until("p1", RequestKind::Standard, soon).await.expect("4 of 5 go at once");
        }
        let started = tokio::time::Instant::now();
        let refused = budget.acquire_until("p1", RequestKind::Standard, soon).await;
        assert!(started.elapsed() < Duration::from_millis(500), "answered at once, not after waiting");
        match refused {
            Err(BudgetError::Busy { retry_after }) => {
                assert!(
                    retry_after > Duration::from_secs(8) && retry_after <= Duration::from_secs(10),
                    "{retry_after:?}"
                )
            }
            other => panic!("expected Busy, got {other:?}"),
        }
    }
}
