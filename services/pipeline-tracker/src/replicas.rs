//! Replicas tell each other what they stored. Every replica shares the deal consumers, so
//! each ingests only some of a company's batches; each announces what it stored (company,
//! change counter, deals) on the bus and applies what the others announce, so that a
//! watcher hears of a change at once whichever replica ingested it, and the kept sums take
//! every batch instead of finding gaps.
//!
//! Announcements are hints (see [`gomark_events::EventBus::announce`]): one lost costs the
//! watchers of its companies their poll interval, and the kept sums a recomputation.

use crate::tracker::{Counted, Tracker};
use futures::{FutureExt, StreamExt};
use gomark_events::EventBus;
use gomark_platform::Shutdown;
use gomark_proto::pipeline_tracker::v1 as pb;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The bus topic of the announcements.
pub const TOPIC: &str = "pipeline-tracker.stored";
/// How long a replica that cannot listen waits before it tries again.
const RELISTEN: Duration = Duration::from_secs(1);
/// Companies per announcement at most.
const COMPANIES_PER_ANNOUNCEMENT: usize = 1_000;
/// Announcements applied together at most.
const MAX_APPLIED_AT_ONCE: usize = 64;

/// This replica's link to the others.
pub struct Replicas {
    bus: Arc<dyn EventBus>,
    /// This replica's name in its announcements, so it skips its own.
    id: String,
    /// The newest configuration revision another replica announced it loaded.
    revision: watch::Sender<i64>,
}

/// What another replica announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub counted: Vec<Counted>,
    /// A configuration revision it loaded; 0 when none.
    pub revision: i64,
}

impl Replicas {
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self { bus, id: uuid::Uuid::new_v4().to_string(), revision: watch::channel(0).0 }
    }

    /// Moves whenever another replica announces a configuration revision newer than any
    /// before (its number).
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Tells the other replicas that this one loaded configuration revision `number` (from
    /// the `revision.created` event, which the replicas share: only one gets it).
    pub async fn announce_revision(&self, number: i64) {
        let message = pb::ReplicaChanges { replica_id: self.id.clone(), config_revision: number, ..Default::default() };
        self.send(message).await;
    }

    async fn send(&self, message: pb::ReplicaChanges) {
        let outcome = match self.bus.announce(TOPIC, message.encode_to_vec().into()).await {
            Ok(()) => "sent",
            Err(err) => {
                tracing::debug!(error = %err, "could not announce to the other replicas; they find out at their poll");
                "failed"
            }
        };
        metrics::counter!("pipeline_tracker_announcements_total", "outcome" => outcome).increment(1);
    }

    /// Tells the other replicas of `counted` (best effort: logged and counted when the bus
    /// cannot take it).
    pub async fn announce(&self, counted: &[Counted]) {
        // A message per so many companies keeps each well under NATS's 1 MB payload limit
        // when every company changes at once (exchange rates, the configuration).
        for chunk in counted.chunks(COMPANIES_PER_ANNOUNCEMENT) {
            let message = pb::ReplicaChanges {
                replica_id: self.id.clone(),
                companies: chunk
                    .iter()
                    .map(|c| pb::CompanyChanges {
                        company_id: c.company_id.clone(),
                        version: c.version,
                        deal_ids: c.deals.clone(),
                    })
                    .collect(),
                config_revision: 0,
            };
            self.send(message).await;
        }
    }

    /// What another replica announced in `payload`; `None` for this replica's own or an
    /// unreadable one. A configuration revision is also passed on to [`Replicas::revisions`].
    pub fn heard(&self, payload: &[u8]) -> Option<Heard> {
        let message = match pb::ReplicaChanges::decode(payload) {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(error = %err, "unreadable announcement skipped");
                return None;
            }
        };
        if message.replica_id == self.id {
            return None;
        }
        let revision = message.config_revision.max(0);
        self.revision.send_if_modified(|newest| {
            let newer = revision > *newest;
            *newest = (*newest).max(revision);
            newer
        });
        let counted = message
            .companies
            .into_iter()
            .filter(|c| !c.company_id.is_empty() && c.version >= 0)
            .map(|c| Counted { company_id: c.company_id, version: c.version, deals: c.deal_ids })
            .collect();
        Some(Heard { counted, revision })
    }
}

/// Applies what the other replicas announce until `shutdown`, listening again (after a
/// pause) whenever the bus cannot be listened to or the listening ends.
pub async fn listen(tracker: Arc<Tracker>, shutdown: Shutdown) {
    let Some(replicas) = tracker.replicas() else { return };
    let mut failing = false;
    loop {
        match replicas.bus.listen(TOPIC).await {
            Ok(mut heard) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("hearing other replicas' batches again");
                }
                loop {
                    let first = tokio::select! {
                        () = shutdown.wait() => return,
                        next = heard.next() => match next {
                            Some(payload) => payload,
                            None => break,
                        },
                    };
                    // Those that came meanwhile too: one read of the deals for all of them.
                    let mut payloads = vec![first];
                    while payloads.len() < MAX_APPLIED_AT_ONCE {
                        match heard.next().now_or_never() {
                            Some(Some(payload)) => payloads.push(payload),
                            Some(None) | None => break,
                        }
                    }
                    let counted: Vec<Counted> =
                        payloads.iter().filter_map(|p| replicas.heard(p)).flat_map(|h| h.counted).collect();
                    metrics::counter!("pipeline_tracker_announcements_heard_total").increment(payloads.len() as u64);
                    let applied = tracker.apply(&counted).await;
                    tracker.wake(applied);
                }
            }
            // Logged once per outage, not per attempt.
            Err(err) if !std::mem::replace(&mut failing, true) => {
                tracing::warn!(error = %err, "cannot hear other replicas' batches; their changes reach watchers here at the poll; retrying");
            }
            Err(err) => tracing::debug!(error = %err, "still cannot hear other replicas' batches"),
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(RELISTEN) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gomark_events::memory::MemoryBus;

    fn counted(n: usize) -> Vec<Counted> {
        (0..n)
            .map(|i| Counted { company_id: format!("c{i}"), version: i as i64 + 1, deals: vec![format!("d{i}")] })
            .collect()
    }

    #[tokio::test]
    async fn a_replica_hears_the_others_not_itself_and_every_company_of_a_large_change() {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let (a, b) = (Replicas::new(bus.clone()), Replicas::new(bus.clone()));
        let mut heard = bus.listen(TOPIC).await.expect("listen");
        let all = counted(COMPANIES_PER_ANNOUNCEMENT + 1);
        a.announce(&all).await;
        let mut got = Vec::new();
        for _ in 0..2 {
            let payload = heard.next().await.expect("an announcement");
            assert_eq!(a.heard(&payload), None, "a replica skips its own");
            got.extend(b.heard(&payload).expect("another's").counted);
        }
        assert_eq!(got, all, "split in two, nothing lost");
        assert_eq!(b.heard(b"not protobuf \xff"), None, "an unreadable one is skipped");
    }

    #[tokio::test]
    async fn a_revision_another_replica_loaded_is_passed_on_once_and_never_an_older_one() {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let (a, b) = (Replicas::new(bus.clone()), Replicas::new(bus.clone()));
        let mut heard = bus.listen(TOPIC).await.expect("listen");
        let mut revisions = b.revisions();
        for number in [7, 7, 5] {
            a.announce_revision(number).await;
            let payload = heard.next().await.expect("an announcement");
            assert_eq!(b.heard(&payload), Some(Heard { counted: Vec::new(), revision: number }));
        }
        assert!(revisions.has_changed().expect("open"));
        assert_eq!(*revisions.borrow_and_update(), 7);
        assert!(!revisions.has_changed().expect("open"), "the same and an older revision do not wake");
    }
}
