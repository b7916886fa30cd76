//! The webhooks journal (HubSpot's poll-based change feed, 2026-03): every change the simulator
//! makes, kept for [`RETENTION`] (3 days) in order, one entry per write.
//!
//! Entries are addressed by an opaque UUID offset. The routes (`routes/journal.rs`) serve the
//! global journal and the local (per-portal, `installPortalId`) view of it. An entry's events
//! are not in the API answer: like HubSpot's, the answer carries a pre-signed `url` to the
//! entry's JSON file, fetched without authorisation.
//!
//! Tests make history expire with [`Journal::age`] (`POST /_sim/journal/age`), which moves every
//! entry back in time, instead of waiting three days.

use std::collections::VecDeque;
use std::time::Duration;

use uuid::Uuid;

use crate::events::WireEvent;

/// How long entries are kept (HubSpot: 3 days).
pub const RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);
/// Bound on stored entries (oldest dropped first), so a long run cannot exhaust memory.
const MAX_ENTRIES: usize = 200_000;

/// One journal entry: the events of one write to one portal.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub offset: Uuid,
    pub portal_id: u64,
    /// When it was written, epoch ms (moved back by `age`).
    pub at_ms: i64,
    pub events: Vec<WireEvent>,
}

/// Where the entry after an offset is.
#[derive(Debug)]
pub(crate) enum Next<'a> {
    Entry(&'a Entry),
    /// The offset is current: nothing newer yet.
    UpToDate,
    /// The offset is unknown or older than the retention window.
    Expired,
}

/// Every portal's journal, in write order.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    entries: VecDeque<Entry>,
}

impl Journal {
    /// Appends the events of one write (nothing for an empty list).
    pub fn append(&mut self, portal_id: u64, at_ms: i64, events: Vec<WireEvent>) {
        if events.is_empty() {
            return;
        }
        while self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry { offset: Uuid::new_v4(), portal_id, at_ms, events });
    }

    /// Drops entries older than the retention window.
    fn prune(&mut self, now_ms: i64) {
        let cutoff = now_ms - i64::try_from(RETENTION.as_millis()).unwrap_or(i64::MAX);
        while self.entries.front().is_some_and(|e| e.at_ms < cutoff) {
            self.entries.pop_front();
        }
    }

    /// Moves every entry `by` into the past (test hook), then prunes.
    pub fn age(&mut self, by: Duration, now_ms: i64) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        for entry in &mut self.entries {
            entry.at_ms = entry.at_ms.saturating_sub(by);
        }
        self.prune(now_ms);
    }

    fn matches(entry: &Entry, portal: Option<u64>) -> bool {
        portal.is_none_or(|p| entry.portal_id == p)
    }

    /// The oldest retained entry (of `portal`, or of any).
    pub fn earliest(&mut self, portal: Option<u64>, now_ms: i64) -> Option<&Entry> {
        self.prune(now_ms);
        self.entries.iter().find(|e| Self::matches(e, portal))
    }

    /// The newest entry (of `portal`, or of any).
    pub fn latest(&mut self, portal: Option<u64>, now_ms: i64) -> Option<&Entry> {
        self.prune(now_ms);
        self.entries.iter().rev().find(|e| Self::matches(e, portal))
    }

    /// The first entry after `offset` (of `portal`, or of any).
    pub fn next(&mut self, offset: Uuid, portal: Option<u64>, now_ms: i64) -> Next<'_> {
        self.prune(now_ms);
        let Some(index) = self.entries.iter().position(|e| e.offset == offset) else {
            return Next::Expired;
        };
        match self.entries.iter().skip(index + 1).find(|e| Self::matches(e, portal)) {
            Some(entry) => Next::Entry(entry),
            None => Next::UpToDate,
        }
    }

    /// Every retained event of `portal`, oldest first.
    pub fn events_of(&mut self, portal: u64, now_ms: i64) -> Vec<serde_json::Value> {
        self.prune(now_ms);
        self.entries
            .iter()
            .filter(|e| e.portal_id == portal)
            .flat_map(|e| e.events.iter())
            .filter_map(|event| serde_json::to_value(event).ok())
            .collect()
    }

    /// An entry by offset, if still retained.
    pub fn get(&mut self, offset: Uuid, now_ms: i64) -> Option<&Entry> {
        self.prune(now_ms);
        self.entries.iter().find(|e| e.offset == offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Change, ChangeKind};
    use crate::source::ChangeSource;

    fn events(portal: u64) -> Vec<WireEvent> {
        let change = Change {
            portal_id: portal,
            event_id: 1,
            occurred_at: 0,
            object_id: 5,
            kind: ChangeKind::Creation,
            source: ChangeSource::default(),
        };
        vec![change.to_wire(1, true)]
    }

    #[test]
    fn order_filters_and_expiry() {
        let mut journal = Journal::default();
        let now = 10 * RETENTION.as_millis() as i64;
        journal.append(1, now, events(1));
        journal.append(2, now, events(2));
        journal.append(1, now, Vec::new());
        journal.append(1, now, events(1));
        let first = journal.earliest(Some(1), now).expect("entry").offset;
        let Next::Entry(second) = journal.next(first, Some(1), now) else { panic!("second") };
        assert_eq!(second.portal_id, 1);
        let second = second.offset;
        assert_eq!(journal.latest(Some(1), now).expect("latest").offset, second);
        assert!(matches!(journal.next(second, Some(1), now), Next::UpToDate));
        let Next::Entry(other) = journal.next(first, None, now) else { panic!("global") };
        assert_eq!(other.portal_id, 2);
        journal.age(RETENTION + Duration::from_secs(1), now);
        assert!(matches!(journal.next(first, Some(1), now), Next::Expired));
        assert!(journal.earliest(None, now).is_none());
    }
}
