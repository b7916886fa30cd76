//! Incremental deal sync through CRM search (CONTRACT.md §6 recipe), safe against HubSpot's
//! 10,000-results-per-query cap and against bulk updates that stamp thousands of deals with
//! one `hs_lastmodifieddate`.
//!
//! # Scheme
//!
//! HubSpot applies **one** sort rule per search, so "sort by timestamp, then id" is not
//! available, and an OR of `(ts = t AND id > last) OR (ts > t)` cannot be ordered usefully
//! either (sorted by timestamp the ties come back in an unspecified order; sorted by id the
//! timestamps are shuffled). The sync therefore alternates between two kinds of query:
//!
//! * **Range** — `ts ≥ from AND ts ≤ until`, sorted by `hs_lastmodifieddate` ascending, paged
//!   with `after`. Deals are handed out only once their timestamp is known to be complete,
//!   i.e. once a later timestamp has been seen (or the query ended): the trailing run of deals
//!   sharing the newest timestamp `t` is held back. Before the query would page past 10,000
//!   results, the held-back run is dropped and the sync switches to a Tie query at `t`.
//! * **Tie** — `ts = t [AND hs_object_id > last_id]`, sorted by `hs_object_id` ascending. Ids
//!   are unique, so this drains the deals at exactly `t` in a total order; at 10,000 it
//!   restarts with `hs_object_id > last id seen`. When it ends, the sync continues with a Range
//!   query from `t + 1` (timestamps are integer milliseconds, so `≥ t + 1` is `> t`).
//!
//! Every Tie restart strictly raises the id bound, and every Range restart is followed by a
//! Range starting strictly later than before, so the sync always terminates, even when more
//! than 10,000 deals share one timestamp, and (with no concurrent writes) hands every deal out
//! exactly once. At most one 10,000-result window per restart is re-read, never more.
//!
//! # Caller duties
//!
//! * Pass `until_ms = now − 60_000`: search lags writes, and deals modified after `until` will
//!   be picked up by the next run.
//! * Start the next run from `since = last cursor − overlap` (a few minutes) to catch deals the
//!   index surfaced late; upsert idempotently by id, since the overlap re-delivers deals.
//! * Deletions are invisible to search: use `deal.deletion` webhooks or `?archived=true` lists.

use std::cmp::Ordering;

use crate::client::HubSpotClient;
use crate::deals::model::{Deal, LAST_MODIFIED, OBJECT_ID};
use crate::error::{Error, Result};
use crate::search::{Filter, FilterGroup, MAX_SEARCH_LIMIT, MAX_SEARCH_RESULTS, SearchRequest, Sort};
use crate::token::AccessToken;

/// A position in the stream of deals ordered by (`hs_lastmodifieddate`, `hs_object_id`).
///
/// Every deal modified before `cursor_ms` has been handed out; with `last_id: Some(id)`, so have
/// the deals modified exactly at `cursor_ms` whose id is `≤ id`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncrementalSync {
    /// `hs_lastmodifieddate` lower bound (epoch ms, inclusive).
    pub cursor_ms: i64,
    /// Tie-breaker within `cursor_ms` (exclusive lower bound on `hs_object_id`).
    pub last_id: Option<String>,
}

impl IncrementalSync {
    /// Start at `since_ms` (inclusive), nothing handed out yet.
    pub fn new(since_ms: i64) -> Self {
        Self { cursor_ms: since_ms, last_id: None }
    }
}

/// What a sync run handed out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncOutcome {
    /// Newest `hs_lastmodifieddate` handed out (epoch ms); `None` if no deal was. Feed
    /// `last_modified_ms − overlap` (or the old `since` when `None`) into the next run.
    pub last_modified_ms: Option<i64>,
    /// Highest id among the deals handed out at `last_modified_ms`.
    pub last_id: Option<String>,
    /// Deals handed out (each once).
    pub deals_seen: u64,
}

impl SyncOutcome {
    fn record(&mut self, deal: &Deal, ts: i64) {
        self.deals_seen += 1;
        let newer = match self.last_modified_ms {
            None => true,
            Some(last) if ts > last => true,
            Some(last) if ts == last => {
                self.last_id.as_deref().is_none_or(|id| id_cmp(&deal.id, id) == Ordering::Greater)
            }
            Some(_) => false,
        };
        if newer {
            self.last_modified_ms = Some(ts);
            self.last_id = Some(deal.id.clone());
        }
    }
}

/// Which query the sync runs next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// `ts ≥ from`, sorted by timestamp.
    Range { from: i64 },
    /// `ts = ts [AND id > after_id]`, sorted by id.
    Tie { ts: i64, after_id: Option<String> },
}

impl From<IncrementalSync> for Phase {
    fn from(position: IncrementalSync) -> Self {
        match position.last_id {
            None => Phase::Range { from: position.cursor_ms },
            Some(id) => Phase::Tie { ts: position.cursor_ms, after_id: Some(id) },
        }
    }
}

impl Phase {
    fn request(&self, until_ms: i64, properties: &[String], limit: u32) -> SearchRequest {
        let (filters, sort) = match self {
            Phase::Range { from } => (
                vec![Filter::gte(LAST_MODIFIED, from.to_string()), Filter::lte(LAST_MODIFIED, until_ms.to_string())],
                Sort::asc(LAST_MODIFIED),
            ),
            Phase::Tie { ts, after_id } => {
                let mut filters = vec![Filter::eq(LAST_MODIFIED, ts.to_string())];
                if let Some(id) = after_id {
                    filters.push(Filter::gt(OBJECT_ID, id.clone()));
                }
                (filters, Sort::asc(OBJECT_ID))
            }
        };
        SearchRequest {
            filter_groups: vec![FilterGroup::new(filters)],
            sorts: vec![sort],
            properties: properties.to_vec(),
            limit,
            after: None,
            query: None,
        }
    }
}

impl HubSpotClient {
    /// Hands every deal with `since_ms ≤ hs_lastmodifieddate ≤ until_ms` to `on_page`, in
    /// timestamp order, each exactly once (see the [module docs](crate::sync) for the scheme and
    /// the caller's duties: `until_ms = now − 60 s`, next `since = last cursor − overlap`).
    ///
    /// `properties` are returned on each deal (`hs_lastmodifieddate` and `hs_object_id` are
    /// always added). `page_size` is 1..=200. Pages given to `on_page` follow HubSpot's pages
    /// but may be split or merged around timestamp boundaries; empty pages are not delivered.
    /// On error, deals already handed out stay handed out; restart from the newest timestamp
    /// handled minus the overlap.
    pub async fn sync_modified_deals(
        &self,
        token: &AccessToken,
        since_ms: i64,
        until_ms: i64,
        properties: &[&str],
        page_size: u32,
        on_page: impl FnMut(Vec<Deal>),
    ) -> Result<SyncOutcome> {
        self.sync_modified_deals_from(token, IncrementalSync::new(since_ms), until_ms, properties, page_size, on_page)
            .await
    }

    /// [`Self::sync_modified_deals`] resuming at an exact [`IncrementalSync`] position.
    pub async fn sync_modified_deals_from(
        &self,
        token: &AccessToken,
        start: IncrementalSync,
        until_ms: i64,
        properties: &[&str],
        page_size: u32,
        on_page: impl FnMut(Vec<Deal>),
    ) -> Result<SyncOutcome> {
        if !(1..=MAX_SEARCH_LIMIT).contains(&page_size) {
            return Err(Error::InvalidRequest(format!("page_size must be 1..={MAX_SEARCH_LIMIT}, got {page_size}")));
        }
        let mut wanted: Vec<String> = properties.iter().map(|p| (*p).to_owned()).collect();
        for required in [LAST_MODIFIED, OBJECT_ID] {
            if !wanted.iter().any(|p| p == required) {
                wanted.push(required.to_owned());
            }
        }
        let mut run = Run {
            client: self,
            token,
            until_ms,
            properties: wanted,
            page_size,
            outcome: SyncOutcome::default(),
            on_page,
        };
        let mut phase = Some(Phase::from(start));
        while let Some(current) = phase.take() {
            if phase_start(&current) > until_ms {
                break;
            }
            phase = match current {
                Phase::Range { from } => run.range(from).await?,
                Phase::Tie { ts, after_id } => run.tie(ts, after_id).await?,
            };
        }
        Ok(run.outcome)
    }
}

/// State of one sync run.
struct Run<'a, F> {
    client: &'a HubSpotClient,
    token: &'a AccessToken,
    until_ms: i64,
    properties: Vec<String>,
    page_size: u32,
    outcome: SyncOutcome,
    on_page: F,
}

impl<F: FnMut(Vec<Deal>)> Run<'_, F> {
    /// One Range query; returns the next phase (`None` when the window is exhausted).
    async fn range(&mut self, from: i64) -> Result<Option<Phase>> {
        let mut request = Phase::Range { from }.request(self.until_ms, &self.properties, self.page_size);
        // The trailing run of deals sharing the newest timestamp: not handed out until a later
        // timestamp proves the run complete, because a restart re-reads that timestamp whole.
        let mut held: Vec<(Deal, i64)> = Vec::new();
        let mut fetched = 0u32;
        loop {
            let page = self.client.search_deals(self.token, &request).await?;
            let got = page.results.len();
            fetched = fetched.saturating_add(u32::try_from(got).unwrap_or(u32::MAX));
            let mut ready = Vec::new();
            for deal in page.results {
                let ts = modified_ms(&deal)?;
                match held.last().map(|(_, held_ts)| ts.cmp(held_ts)) {
                    Some(Ordering::Greater) => {
                        ready.append(&mut held);
                        held.push((deal, ts));
                    }
                    Some(Ordering::Equal) | None => held.push((deal, ts)),
                    // Out of order (not expected with the sort): its timestamp run is behind us.
                    Some(Ordering::Less) => ready.push((deal, ts)),
                }
            }
            self.deliver(ready);
            // An empty page ends the query even if it claims a next page: otherwise a
            // misbehaving server could keep us paging forever without progress.
            let Some(after) = page.next_after.filter(|_| got > 0) else {
                self.deliver(held);
                return Ok(None);
            };
            if fetched.saturating_add(self.page_size) > MAX_SEARCH_RESULTS {
                // Dropping `held` is what keeps this exactly-once: the Tie query re-reads that
                // timestamp completely, in id order. (`held` is non-empty here: the page had
                // results, and the newest of them is always held.)
                let ts = held.last().map(|(_, ts)| *ts);
                return ts
                    .map(|ts| Some(Phase::Tie { ts, after_id: None }))
                    .ok_or_else(|| Error::Decode("search page with results left nothing to restart from".to_owned()));
            }
            request.after = Some(after);
        }
    }

    /// One Tie query; returns the next phase.
    async fn tie(&mut self, ts: i64, after_id: Option<String>) -> Result<Option<Phase>> {
        let mut request =
            Phase::Tie { ts, after_id: after_id.clone() }.request(self.until_ms, &self.properties, self.page_size);
        let mut last_id = after_id;
        let mut fetched = 0u32;
        loop {
            let page = self.client.search_deals(self.token, &request).await?;
            let got = page.results.len();
            fetched = fetched.saturating_add(u32::try_from(got).unwrap_or(u32::MAX));
            let mut ready = Vec::with_capacity(got);
            for deal in page.results {
                // Ids must strictly increase, or a restart from `last_id` could loop forever.
                if last_id.as_deref().is_some_and(|last| id_cmp(&deal.id, last) != Ordering::Greater) {
                    return Err(Error::Decode(format!(
                        "search results at hs_lastmodifieddate {ts} are not in increasing hs_object_id order"
                    )));
                }
                last_id = Some(deal.id.clone());
                ready.push((deal, ts));
            }
            self.deliver(ready);
            let Some(after) = page.next_after.filter(|_| got > 0) else {
                return Ok(ts.checked_add(1).map(|from| Phase::Range { from }));
            };
            if fetched.saturating_add(self.page_size) > MAX_SEARCH_RESULTS {
                return Ok(Some(Phase::Tie { ts, after_id: last_id }));
            }
            request.after = Some(after);
        }
    }

    fn deliver(&mut self, deals: Vec<(Deal, i64)>) {
        if deals.is_empty() {
            return;
        }
        for (deal, ts) in &deals {
            self.outcome.record(deal, *ts);
        }
        (self.on_page)(deals.into_iter().map(|(deal, _)| deal).collect());
    }
}

fn phase_start(phase: &Phase) -> i64 {
    match phase {
        Phase::Range { from } => *from,
        Phase::Tie { ts, .. } => *ts,
    }
}

fn modified_ms(deal: &Deal) -> Result<i64> {
    deal.last_modified()
        .ok_or_else(|| Error::Decode(format!("deal {} has no parsable {LAST_MODIFIED} in search results", deal.id)))
}

/// Orders record ids numerically (they are decimal strings); non-numeric ids fall back to
/// length-then-text, which agrees with numeric order for canonical decimals.
fn id_cmp(a: &str, b: &str) -> Ordering {
    match (a.parse::<u128>(), b.parse::<u128>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(r: &SearchRequest) -> Vec<(String, String)> {
        r.filter_groups[0]
            .filters
            .iter()
            .map(|f| (f.property_name.clone(), format!("{:?} {}", f.operator, f.value.as_deref().unwrap_or(""))))
            .collect()
    }

    #[test]
    fn range_and_tie_queries() {
        let props = vec!["dealname".to_owned()];
        let range = Phase::Range { from: 5 }.request(9, &props, 200);
        assert_eq!(
            filters(&range),
            vec![("hs_lastmodifieddate".into(), "Gte 5".into()), ("hs_lastmodifieddate".into(), "Lte 9".into())]
        );
        assert_eq!(range.sorts, vec![Sort::asc("hs_lastmodifieddate")]);
        assert!(range.validate().is_ok());
        let tie = Phase::Tie { ts: 7, after_id: Some("42".into()) }.request(9, &props, 200);
        assert_eq!(
            filters(&tie),
            vec![("hs_lastmodifieddate".into(), "Eq 7".into()), ("hs_object_id".into(), "Gt 42".into())]
        );
        assert_eq!(tie.sorts, vec![Sort::asc("hs_object_id")]);
        assert_eq!(Phase::from(IncrementalSync::new(3)), Phase::Range { from: 3 });
        assert_eq!(
            Phase::from(IncrementalSync { cursor_ms: 3, last_id: Some("9".into()) }),
            Phase::Tie { ts: 3, after_id: Some("9".into()) }
        );
    }

    #[test]
    fn ids_compare_numerically() {
        assert_eq!(id_cmp("9", "10"), Ordering::Less);
        assert_eq!(id_cmp("10", "10"), Ordering::Equal);
        assert_eq!(id_cmp("b", "a"), Ordering::Greater);
        assert_eq!(id_cmp("z", "aa"), Ordering::Less);
    }

    #[test]
    fn outcome_tracks_newest() {
        let deal = |id: &str| Deal { id: id.into(), ..Deal::default() };
        let mut o = SyncOutcome::default();
        o.record(&deal("5"), 10);
        o.record(&deal("3"), 10);
        o.record(&deal("9"), 8);
        assert_eq!((o.last_modified_ms, o.last_id.as_deref(), o.deals_seen), (Some(10), Some("5"), 3));
        o.record(&deal("1"), 11);
        assert_eq!((o.last_modified_ms, o.last_id.as_deref()), (Some(11), Some("1")));
    }
}
