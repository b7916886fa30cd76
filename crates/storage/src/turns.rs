//! Turns at a SQLite file's single writer for the writers of one process. Urgent writers
//! (those on a change's way to a funnel: a webhook batch's dedupe, the outbox relay's deletes)
//! go before queued ordinary ones (a re-read's results, bookkeeping); within each class,
//! first come first served. Measured in the embedded 200-portal live run: hubspot-sync's
//! writer was busy 70 % of the time, mostly with re-read results, and a webhook batch waited
//! 33 ms on average for its turn behind them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Urgent turns in a row that may pass waiting ordinary writers: those are delayed, never
/// starved.
const URGENT_RUN: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Ordinary,
    Urgent,
}

#[derive(Debug, Default)]
pub(crate) struct Turns {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: bool,
    urgent: VecDeque<oneshot::Sender<()>>,
    ordinary: VecDeque<oneshot::Sender<()>>,
    /// Urgent turns given in a row while ordinary writers waited.
    urgent_run: u32,
}

/// The writer's turn; the next writer gets it when this is dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    turns: Arc<Turns>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.hand_over();
    }
}

/// A writer in the queue. Dropped before its turn came (a timeout), it leaves the queue; dropped
/// just as its turn came, it passes the turn on.
struct Waiting {
    rx: oneshot::Receiver<()>,
    turns: Arc<Turns>,
    served: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.served {
            self.rx.close();
            if self.rx.try_recv().is_ok() {
                self.turns.hand_over();
            }
        }
    }
}

impl Turns {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the writer's turn: at once when nobody holds it.
    pub(crate) async fn take(self: &Arc<Self>, urgency: Urgency) -> Turn {
        let rx = {
            let mut s = self.state();
            if !s.held {
                s.held = true;
                return Turn { turns: self.clone() };
            }
            let (tx, rx) = oneshot::channel();
            match urgency {
                Urgency::Urgent => s.urgent.push_back(tx),
                Urgency::Ordinary => s.ordinary.push_back(tx),
            }
            rx
        };
        let mut waiting = Waiting { rx, turns: self.clone(), served: false };
        // A sender is only dropped after its receiver was: this never fails while we wait.
        let _ = (&mut waiting.rx).await;
        waiting.served = true;
        Turn { turns: self.clone() }
    }

    /// Gives the turn to the next writer still waiting, else frees it.
    fn hand_over(&self) {
        let mut s = self.state();
        loop {
            let urgent_first = !s.urgent.is_empty() && (s.ordinary.is_empty() || s.urgent_run < URGENT_RUN);
            let next = if urgent_first {
                s.urgent_run = if s.ordinary.is_empty() { 0 } else { s.urgent_run + 1 };
                s.urgent.pop_front()
            } else {
                s.urgent_run = 0;
                s.ordinary.pop_front()
            };
            match next {
                // A writer that gave up waiting is skipped.
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    s.held = false;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Queues writers of `classes` behind a held turn, in order, and returns the order they
    /// were served in.
    async fn served(classes: &[Urgency]) -> Vec<usize> {
        let turns = Arc::new(Turns::default());
        let first = turns.take(Urgency::Ordinary).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        for (i, class) in classes.iter().copied().enumerate() {
            let (turns, order) = (turns.clone(), order.clone());
            writers.push(tokio::spawn(async move {
                let _turn = turns.take(class).await;
                order.lock().expect("order").push(i);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(first);
        for w in writers {
            w.await.expect("writer");
        }
        order.lock().expect("order").clone()
    }

    #[tokio::test]
    async fn urgent_writers_go_before_queued_ordinary_ones_each_in_the_order_they_came() {
        use Urgency::{Ordinary as O, Urgent as U};
        assert_eq!(served(&[O, O, U, O, U]).await, [2, 4, 0, 1, 3]);
        assert_eq!(served(&[O, O, O]).await, [0, 1, 2]);
    }

    #[tokio::test]
    async fn ordinary_writers_are_not_starved() {
        use Urgency::{Ordinary as O, Urgent as U};
        // Four urgent turns pass the waiting ordinary writer, then it goes.
        assert_eq!(served(&[O, U, U, U, U, U, U]).await, [1, 2, 3, 4, 0, 5, 6]);
    }

    #[tokio::test]
    async fn a_writer_that_gives_up_waiting_leaves_the_turn_to_the_others() {
        let turns = Arc::new(Turns::default());
        let first = turns.take(Urgency::Ordinary).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), turns.take(Urgency::Urgent)).await;
        assert!(gave_up.is_err());
        let next = tokio::spawn({
            let turns = turns.clone();
            async move { drop(turns.take(Urgency::Ordinary).await) }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), next).await.expect("served").expect("writer");
        // Free again: taken at once.
        let _ = tokio::time::timeout(Duration::from_millis(50), turns.take(Urgency::Urgent)).await.expect("free");
    }
}
