//! The instants in deal events, written and read across a rolling upgrade.
//!
//! Events outlive the binaries that wrote them (the outbox, the journal, NATS), so their
//! epoch-ms fields were deprecated rather than removed: a writer sets the new Timestamp
//! and the old field, and a reader prefers the Timestamp, falling back to the old field for
//! an event an older writer published ([`crate::time::event_millis`]). Once no such event
//! can be left anywhere, the writers stop setting the old fields.
#![allow(deprecated)]

use crate::events::v1::{DealDeleted, DealUpserted};
use crate::time::{event_millis, timestamp, timestamp_opt};

impl DealUpserted {
    /// Sets the deal's instants (epoch ms; 0 = the deal has none) in both encodings.
    pub fn with_times(mut self, close_date_ms: i64, last_modified_ms: i64, created_ms: i64) -> Self {
        self.close_date = timestamp_opt(close_date_ms);
        self.last_modified_at = Some(timestamp(last_modified_ms));
        self.created_at = timestamp_opt(created_ms);
        self.close_date_ms = close_date_ms;
        self.last_modified_ms = last_modified_ms;
        self.created_ms = created_ms;
        self
    }

    /// The close date (epoch ms), 0 when the deal has none.
    pub fn close_date_millis(&self) -> i64 {
        event_millis(self.close_date.as_ref(), self.close_date_ms)
    }

    /// HubSpot's hs_lastmodifieddate (epoch ms).
    pub fn last_modified_millis(&self) -> i64 {
        event_millis(self.last_modified_at.as_ref(), self.last_modified_ms)
    }

    /// HubSpot's createdate (epoch ms), 0 when unknown.
    pub fn created_millis(&self) -> i64 {
        event_millis(self.created_at.as_ref(), self.created_ms)
    }
}

impl DealDeleted {
    /// Sets when the deal was deleted (epoch ms) in both encodings.
    pub fn with_deleted_at(mut self, deleted_at_ms: i64) -> Self {
        self.deleted_at = Some(timestamp(deleted_at_ms));
        self.deleted_at_ms = deleted_at_ms;
        self
    }

    /// When the deal was deleted (epoch ms).
    pub fn deleted_at_millis(&self) -> i64 {
        event_millis(self.deleted_at.as_ref(), self.deleted_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_new_event_carries_both_encodings() {
        let deal = DealUpserted::default().with_times(3_000, 2_000, 0);
        assert_eq!((deal.close_date_ms, deal.last_modified_ms, deal.created_ms), (3_000, 2_000, 0));
        assert_eq!(deal.close_date, Some(timestamp(3_000)));
        assert_eq!(deal.created_at, None, "no createdate is no Timestamp");
        let deleted = DealDeleted::default().with_deleted_at(9_000);
        assert_eq!((deleted.deleted_at_ms, deleted.deleted_at), (9_000, Some(timestamp(9_000))));
    }

    #[test]
    fn an_event_from_an_older_writer_is_read_from_its_epoch_ms_fields() {
        // What a writer without the Timestamp fields put on the bus.
        let old =
            DealUpserted { close_date_ms: 3_000, last_modified_ms: 2_000, created_ms: 1_000, ..Default::default() };
        let read = DealUpserted::decode(old.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(
            (read.close_date_millis(), read.last_modified_millis(), read.created_millis()),
            (3_000, 2_000, 1_000)
        );
        let old = DealDeleted { deleted_at_ms: 9_000, ..Default::default() };
        assert_eq!(DealDeleted::decode(old.encode_to_vec().as_slice()).expect("decodes").deleted_at_millis(), 9_000);
    }

    #[test]
    fn the_timestamp_wins_over_the_legacy_field() {
        let deal = DealUpserted { last_modified_ms: 1, ..Default::default() }.with_times(0, 2_000, 0);
        let deal = DealUpserted { last_modified_ms: 5, ..deal };
        assert_eq!(deal.last_modified_millis(), 2_000);
        assert_eq!(deal.close_date_millis(), 0);
    }
}
