//! The instants in deal events, between the services' epoch milliseconds (0 = none) and
//! the events' Timestamps: the one place both writer and readers convert them.
//!
//! The deprecated epoch-ms fields these Timestamps replaced are gone (see the reserved
//! numbers in `envelope.proto`): nothing writes them and nothing falls back to them.

use crate::events::v1::{DealDeleted, DealStageChanged, DealUpserted};
use crate::time::{millis_opt, timestamp, timestamp_opt};

impl DealUpserted {
    /// Sets the deal's instants (epoch ms; 0 = the deal has none).
    pub fn with_times(mut self, close_date_ms: i64, last_modified_ms: i64, created_ms: i64) -> Self {
        self.close_date = timestamp_opt(close_date_ms);
        self.last_modified_at = Some(timestamp(last_modified_ms));
        self.created_at = timestamp_opt(created_ms);
        self
    }

    /// The close date (epoch ms), 0 when the deal has none.
    pub fn close_date_millis(&self) -> i64 {
        millis_opt(self.close_date.as_ref())
    }

    /// HubSpot's hs_lastmodifieddate (epoch ms).
    pub fn last_modified_millis(&self) -> i64 {
        millis_opt(self.last_modified_at.as_ref())
    }

    /// HubSpot's createdate (epoch ms), 0 when unknown.
    pub fn created_millis(&self) -> i64 {
        millis_opt(self.created_at.as_ref())
    }
}

impl DealDeleted {
    /// Sets when the deal was deleted (epoch ms).
    pub fn with_deleted_at(mut self, deleted_at_ms: i64) -> Self {
        self.deleted_at = Some(timestamp(deleted_at_ms));
        self
    }

    /// When the deal was deleted (epoch ms).
    pub fn deleted_at_millis(&self) -> i64 {
        millis_opt(self.deleted_at.as_ref())
    }
}

impl DealStageChanged {
    /// Sets when HubSpot made the change (epoch ms).
    pub fn with_changed_at(mut self, changed_at_ms: i64) -> Self {
        self.changed_at = Some(timestamp(changed_at_ms));
        self
    }

    /// When HubSpot made the change (epoch ms).
    pub fn changed_at_millis(&self) -> i64 {
        millis_opt(self.changed_at.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn instants_survive_the_wire() {
        let deal = DealUpserted::default().with_times(3_000, 2_000, 0);
        assert_eq!(deal.created_at, None, "no createdate is no Timestamp");
        let read = DealUpserted::decode(deal.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!((read.close_date_millis(), read.last_modified_millis(), read.created_millis()), (3_000, 2_000, 0));
        let deleted = DealDeleted::default().with_deleted_at(9_000);
        let read = DealDeleted::decode(deleted.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(read.deleted_at_millis(), 9_000);
    }

    /// The numbers the epoch-ms fields had: a writer setting them again would be caught.
    #[derive(Clone, PartialEq, prost::Message)]
    struct EpochMsFields {
        #[prost(int64, tag = "4")]
        deleted_at_ms: i64,
        #[prost(int64, tag = "8")]
        close_date_ms: i64,
        #[prost(int64, tag = "10")]
        last_modified_ms: i64,
        #[prost(int64, tag = "11")]
        created_ms: i64,
    }

    #[test]
    fn writers_no_longer_set_the_epoch_ms_fields() {
        let deal = DealUpserted::default().with_times(3_000, 2_000, 1_000);
        assert_eq!(EpochMsFields::decode(deal.encode_to_vec().as_slice()).expect("decodes"), EpochMsFields::default());
        let deleted = DealDeleted::default().with_deleted_at(9_000);
        assert_eq!(
            EpochMsFields::decode(deleted.encode_to_vec().as_slice()).expect("decodes"),
            EpochMsFields::default()
        );
    }
}
