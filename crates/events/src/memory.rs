//! The in-process bus for the embedded mode: a bounded in-memory log with durable cursors,
//! mirroring JetStream's semantics so services cannot tell the difference.
//!
//! [`MemoryBus::open`] backs it with a [`Journal`] file, so that events and consumer
//! positions survive a crash of the process (at-least-once, as on JetStream);
//! [`MemoryBus::new`] keeps everything in memory (tests).

use crate::bus::{Acker, Announcements, ConsumerSpec, Delivery, EventBus, EventStream, MAX_DELIVER, checked_topic};
use crate::journal::{Journal, SavedCursor};
use crate::{EventEnvelope, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tracing::Instrument;

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
    /// Where events and cursors are saved, when the bus is durable.
    journal: Option<Journal>,
    /// One publisher at a time between numbering events and appending them, so the
    /// journal and the in-memory log agree on every sequence number.
    publishing: tokio::sync::Mutex<()>,
    /// Wakes the task saving cursors after an acknowledgement moved one.
    cursor_moved: Arc<Notify>,
    /// Each topic's listeners (see [`EventBus::announce`]).
    topics: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
}

/// Announcements a listener may fall behind by before it skips ahead.
const ANNOUNCEMENTS_BUFFERED: usize = 1024;

/// How long acknowledgements are gathered before the cursors are saved: a crash loses at
/// most this much progress, which only means redelivery.
const SAVE_DELAY: Duration = Duration::from_millis(50);

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
        Self::build(State::empty(retention), None)
    }

    /// A bus whose events and consumer positions are kept in the journal file at `path`
    /// (created if missing): after a crash, every event a consumer had not acknowledged is
    /// delivered again.
    pub async fn open(path: &Path) -> Result<Self> {
        let (journal, restored) = Journal::open(path).await?;
        let mut state = State::empty(DEFAULT_RETENTION);
        state.first_seq = restored.events.first().map_or_else(|| restored.next_seq(), |(seq, _)| *seq);
        for (_, event) in restored.events {
            state.remember(&event.id);
            state.log.push_back(event);
        }
        for c in restored.cursors {
            state.consumers.insert(c.durable, Cursor::new(c.event_type, c.next_seq));
        }
        let bus = Self::build(state, Some(journal.clone()));
        let saver = save_cursors(Arc::downgrade(&bus.shared), journal, bus.shared.cursor_moved.clone());
        tokio::spawn(saver);
        Ok(bus)
    }

    fn build(state: State, journal: Option<Journal>) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Notify::new(),
                journal,
                publishing: tokio::sync::Mutex::new(()),
                cursor_moved: Arc::new(Notify::new()),
                topics: Mutex::default(),
            }),
        }
    }

    /// Saves the consumers' positions now (on a clean shutdown; a crash only means the
    /// last moments' events are delivered again).
    pub async fn flush(&self) -> Result<()> {
        if let Some(journal) = &self.shared.journal {
            let (cursors, retention) = self.shared.cursors();
            journal.save(&cursors, retention).await?;
        }
        Ok(())
    }
}

/// Saves cursors shortly after they move, until the bus is dropped. A failing save is
/// retried on the next movement (or within a second), and logged once per outage.
async fn save_cursors(shared: Weak<Shared>, journal: Journal, moved: Arc<Notify>) {
    let mut saved: Vec<SavedCursor> = Vec::new();
    let mut failing = false;
    loop {
        tokio::select! {
            () = moved.notified() => tokio::time::sleep(SAVE_DELAY).await,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(shared) = shared.upgrade() else { break };
        let (cursors, retention) = shared.cursors();
        drop(shared);
        if cursors == saved {
            continue;
        }
        let save = async {
            match journal.save(&cursors, retention).await {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("event journal writable again");
                    }
                    saved = cursors;
                }
                Err(err) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %err, "cannot save consumer positions to the event journal; retrying");
                    }
                }
            }
        };
        save.instrument(gomark_platform::telemetry::poll_span("event journal save")).await;
    }
    journal.close().await;
}

impl State {
    fn empty(retention: usize) -> Self {
        Self {
            retention: retention.max(1),
            first_seq: 0,
            log: VecDeque::new(),
            recent_ids: VecDeque::new(),
            recent_set: HashSet::new(),
            consumers: HashMap::new(),
        }
    }

    /// Records `id` as published; false if it already was (within the dedupe window).
    fn remember(&mut self, id: &str) -> bool {
        if !self.recent_set.insert(id.to_owned()) {
            return false;
        }
        self.recent_ids.push_back(id.to_owned());
        if self.recent_ids.len() > DEDUPE_WINDOW
            && let Some(old) = self.recent_ids.pop_front()
        {
            self.recent_set.remove(&old);
        }
        true
    }

    /// Appends `event` unless it is a duplicate.
    fn append(&mut self, event: &EventEnvelope) {
        if !self.remember(&event.id) {
            return;
        }
        self.log.push_back(event.clone());
        if self.log.len() > self.retention {
            self.log.pop_front();
            self.first_seq += 1;
        }
    }
}

impl Cursor {
    fn new(event_type: String, next_seq: u64) -> Self {
        Self { event_type, next_seq, in_flight: None, attempts: 0, not_before: Instant::now() }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written (every update is
        // a single push/assignment), so the poisoned state is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every consumer's position, and the retention, as the journal saves them.
    fn cursors(&self) -> (Vec<SavedCursor>, usize) {
        let s = self.lock();
        let mut cursors: Vec<SavedCursor> = s
            .consumers
            .iter()
            .map(|(durable, c)| SavedCursor {
                durable: durable.clone(),
                event_type: c.event_type.clone(),
                next_seq: c.next_seq,
            })
            .collect();
        cursors.sort_by(|a, b| a.durable.cmp(&b.durable));
        (cursors, s.retention)
    }
}

impl Shared {
    fn topics(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Bytes>>> {
        self.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn announce(&self, topic: &str, payload: Bytes) -> Result<()> {
        let topic = checked_topic(topic)?;
        let mut topics = self.shared.topics();
        if let Some(listeners) = topics.get(topic)
            && listeners.send(payload).is_err()
        {
            // Nobody listens any more.
            topics.remove(topic);
        }
        Ok(())
    }

    async fn listen(&self, topic: &str) -> Result<Announcements> {
        let topic = checked_topic(topic)?;
        let rx = self
            .shared
            .topics()
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(ANNOUNCEMENTS_BUFFERED).0)
            .subscribe();
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(payload) => return Some((payload, rx)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "announcement listener fell behind; skipped ahead");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })))
    }

    async fn publish(&self, event: &EventEnvelope) -> Result<()> {
        self.publish_all(std::slice::from_ref(event)).await
    }

    async fn publish_all(&self, events: &[EventEnvelope]) -> Result<()> {
        if let Some(journal) = &self.shared.journal {
            let _turn = self.shared.publishing.lock().await;
            // Numbered as they will be appended; nothing leaves the outbox before the
            // journal holds it, so a failed write leaves the events to be published again.
            let numbered: Vec<(u64, EventEnvelope)> = {
                let s = self.shared.lock();
                let mut seen = HashSet::new();
                let fresh = events.iter().filter(|e| !s.recent_set.contains(&e.id) && seen.insert(e.id.as_str()));
                (s.first_seq + s.log.len() as u64..).zip(fresh.cloned()).collect()
            };
            journal.append(&numbered).await?;
            let mut s = self.shared.lock();
            for (_, event) in &numbered {
                s.append(event);
            }
        } else {
            let mut s = self.shared.lock();
            for event in events {
                s.append(event);
            }
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn EventStream>> {
        {
            let mut s = self.shared.lock();
            let first = s.first_seq;
            let cursor =
                s.consumers.entry(spec.durable.clone()).or_insert_with(|| Cursor::new(spec.event_type.clone(), first));
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

    /// The next group comes once this one is settled: waiting for more gains nothing.
    fn fills_while_unsettled(&self) -> bool {
        false
    }

    /// Whatever is ready, up to `max`, at once, as one group.
    async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<Delivery>>> {
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
                        self.shared.cursor_moved.notify_one();
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
