//! The in-process bus for the embedded mode: a bounded in-memory log with durable cursors,
//! mirroring JetStream's semantics so services cannot tell the difference.

use crate::bus::{Acker, ConsumerSpec, Delivery, EventBus, EventStream, MAX_DELIVER};
use crate::{EventEnvelope, Result};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Oldest events are dropped beyond this, like a JetStream stream's `max_msgs` limit.
const DEFAULT_RETENTION: usize = 100_000;
/// Recently published ids remembered for dedupe, like JetStream's duplicate window.
const DEDUPE_WINDOW: usize = 10_000;

#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    retention: usize,
    /// Sequence number of `log[0]`.
    first_seq: u64,
    log: VecDeque<EventEnvelope>,
    recent_ids: VecDeque<String>,
    recent_set: HashSet<String>,
    consumers: HashMap<String, Cursor>,
}

/// Where one durable consumer stands. One event is in flight at a time, which keeps
/// per-consumer order without any further bookkeeping.
struct Cursor {
    event_type: String,
    next_seq: u64,
    /// The first and last sequence handed out and not yet settled: one delivery, or one
    /// batch, at a time (so order holds and a failed batch comes back whole).
    in_flight: Option<(u64, u64)>,
    attempts: u32,
    not_before: Instant,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::with_retention(DEFAULT_RETENTION)
    }

    pub fn with_retention(retention: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    retention: retention.max(1),
                    first_seq: 0,
                    log: VecDeque::new(),
                    recent_ids: VecDeque::new(),
                    recent_set: HashSet::new(),
                    consumers: HashMap::new(),
                }),
                changed: Notify::new(),
            }),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written (every update is
        // a single push/assignment), so the poisoned state is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, event: &EventEnvelope) -> Result<()> {
        {
            let mut s = self.shared.lock();
            if !s.recent_set.insert(event.id.clone()) {
                return Ok(());
            }
            s.recent_ids.push_back(event.id.clone());
            if s.recent_ids.len() > DEDUPE_WINDOW
                && let Some(old) = s.recent_ids.pop_front()
            {
                s.recent_set.remove(&old);
            }
            s.log.push_back(event.clone());
            if s.log.len() > s.retention {
                s.log.pop_front();
                s.first_seq += 1;
            }
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn EventStream>> {
        {
            let mut s = self.shared.lock();
            let first = s.first_seq;
            let cursor = s.consumers.entry(spec.durable.clone()).or_insert_with(|| Cursor {
                event_type: spec.event_type.clone(),
                next_seq: first,
                in_flight: None,
                attempts: 0,
                not_before: Instant::now(),
            });
            // A consumer that was redelivering when its subscriber went away starts over.
            cursor.in_flight = None;
        }
        Ok(Box::new(MemoryStream { shared: self.shared.clone(), durable: spec.durable.clone() }))
    }
}

struct MemoryStream {
    shared: Arc<Shared>,
    durable: String,
}

enum Poll {
    Ready(Vec<Delivery>),
    WaitUntil(Instant),
    WaitForChange,
}

impl MemoryStream {
    /// Up to `max` events of the consumer's type from its cursor on, handed out together.
    fn poll(&self, max: usize) -> Poll {
        let mut s = self.shared.lock();
        let first = s.first_seq;
        let State { log, consumers, .. } = &mut *s;
        let Some(cursor) = consumers.get_mut(&self.durable) else {
            return Poll::WaitForChange;
        };
        if cursor.in_flight.is_some() {
            return Poll::WaitForChange;
        }
        let now = Instant::now();
        if cursor.not_before > now {
            return Poll::WaitUntil(cursor.not_before);
        }
        cursor.next_seq = cursor.next_seq.max(first);
        let start = (cursor.next_seq - first) as usize;
        let found: Vec<(u64, &EventEnvelope)> = log
            .range(start.min(log.len())..)
            .enumerate()
            .filter(|(_, e)| e.r#type == cursor.event_type)
            .take(max.max(1))
            .map(|(i, e)| (first + (start + i) as u64, e))
            .collect();
        let (Some(&(head, _)), Some(&(tail, _))) = (found.first(), found.last()) else {
            cursor.next_seq = first + log.len() as u64;
            cursor.attempts = 0;
            return Poll::WaitForChange;
        };
        if cursor.next_seq != head {
            cursor.next_seq = head;
            cursor.attempts = 0;
        }
        cursor.attempts += 1;
        cursor.in_flight = Some((head, tail));
        let group = Arc::new(Mutex::new(Group { unsettled: found.len(), nak: None }));
        let deliveries = found
            .into_iter()
            .map(|(_, event)| {
                let acker = MemoryAcker {
                    shared: self.shared.clone(),
                    durable: self.durable.clone(),
                    range: (head, tail),
                    group: group.clone(),
                    settled: false,
                };
                Delivery::new(event.clone(), cursor.attempts, Box::new(acker))
            })
            .collect();
        Poll::Ready(deliveries)
    }

    async fn wait_for(&mut self, max: usize) -> Vec<Delivery> {
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.poll(max) {
                Poll::Ready(deliveries) => return deliveries,
                Poll::WaitUntil(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut changed => {}
                    }
                }
                Poll::WaitForChange => changed.await,
            }
        }
    }
}

#[async_trait]
impl EventStream for MemoryStream {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        self.wait_for(1).await.pop().map(Ok)
    }

    /// Whatever is ready, up to `max`, at once: the in-process log needs no lingering.
    async fn next_batch(&mut self, max: usize, _linger: Duration) -> Option<Result<Vec<Delivery>>> {
        Some(Ok(self.wait_for(max).await))
    }
}

/// The deliveries handed out together; the cursor moves once all are settled.
struct Group {
    unsettled: usize,
    /// The longest redelivery delay any of them asked for.
    nak: Option<Duration>,
}

struct MemoryAcker {
    shared: Arc<Shared>,
    durable: String,
    range: (u64, u64),
    group: Arc<Mutex<Group>>,
    settled: bool,
}

impl MemoryAcker {
    fn settle(&mut self, delay: Option<Duration>) {
        self.settled = true;
        let delay = {
            let mut group = self.group.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(d) = delay {
                group.nak = Some(group.nak.map_or(d, |n| n.max(d)));
            }
            group.unsettled = group.unsettled.saturating_sub(1);
            if group.unsettled > 0 {
                return;
            }
            group.nak
        };
        {
            let mut s = self.shared.lock();
            if let Some(cursor) = s.consumers.get_mut(&self.durable)
                && cursor.in_flight == Some(self.range)
            {
                cursor.in_flight = None;
                match delay {
                    Some(d) if cursor.attempts < MAX_DELIVER => {
                        cursor.not_before = Instant::now() + d;
                    }
                    redelivery => {
                        if redelivery.is_some() {
                            tracing::error!(consumer = %self.durable, first = self.range.0, last = self.range.1, "events given up after {MAX_DELIVER} deliveries");
                        }
                        cursor.next_seq = self.range.1 + 1;
                        cursor.attempts = 0;
                    }
                }
            }
        }
        self.shared.changed.notify_waiters();
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.settle(None);
        Ok(())
    }

    async fn nak(mut self: Box<Self>, delay: Duration) -> Result<()> {
        self.settle(Some(delay));
        Ok(())
    }
}

impl Drop for MemoryAcker {
    /// A delivery dropped unsettled (its handler crashed) comes back, as on JetStream.
    fn drop(&mut self) {
        if !self.settled {
            self.settle(Some(Duration::ZERO));
        }
    }
}
