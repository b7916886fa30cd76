//! Group commit: writes that arrive together share one transaction.
//!
//! A transaction has a fixed price whatever it holds (its turn at SQLite's single writer,
//! a commit and WAL write; a round trip and WAL flush on Postgres) and so does each of its
//! statements. Many small concurrent writes (a webhook request per portal) pay it once each
//! and queue behind one another; a group of them pays it once.
//!
//! Callers [`GroupCommit::submit`] their item. While every committer is busy, items queue;
//! whoever then gets a committer's turn takes what is queued (up to a weight) and commits
//! it as one group, in a task of its own, so a caller going away (a client hanging up)
//! cannot cut a group short; an item whose caller went away while it queued stays queued
//! and is committed with the next caller's group. Each caller gets back its own item's
//! outcome, or the group's error: no item is taken unless its whole group is.
//!
//! SQLite has one writer, so one committer is all it can use; Postgres commits several
//! transactions at once, and a single committer there would make every group wait for the
//! round trips of the one before.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Why a submitted item was not taken.
#[derive(Debug, thiserror::Error)]
pub enum GroupError<E: std::error::Error + 'static> {
    /// Its group's commit failed; every item of the group gets the same error.
    #[error(transparent)]
    Failed(Arc<E>),
    /// Its group's commit ended without an answer (the runtime shut down, or it panicked).
    #[error("the group commit ended without an outcome")]
    Interrupted,
}

type Reply<R, E> = oneshot::Sender<Result<R, GroupError<E>>>;

struct Waiting<T, R, E: std::error::Error + 'static> {
    item: T,
    weight: usize,
    reply: Reply<R, E>,
}

/// Concurrent writes of one kind, committed in groups. One per kind of write per process.
pub struct GroupCommit<T, R, E: std::error::Error + 'static> {
    queue: Mutex<VecDeque<Waiting<T, R, E>>>,
    /// A permit is held for as long as a group commits.
    committers: Arc<tokio::sync::Semaphore>,
    max_weight: usize,
}

impl<T, R, E> GroupCommit<T, R, E>
where
    T: Send + 'static,
    R: Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    /// Up to `committers` groups commit at once; a group holds items until their weights
    /// reach `max_weight` (a single heavier item still goes, alone).
    pub fn new(committers: usize, max_weight: usize) -> Self {
        Self {
            queue: Mutex::default(),
            committers: Arc::new(tokio::sync::Semaphore::new(committers.max(1))),
            max_weight: max_weight.max(1),
        }
    }

    /// Commits `item` (weighing `weight`, e.g. its rows) in a group with whatever else is
    /// waiting. `commit` takes a group's items in arrival order and returns one outcome per
    /// item, in the same order; callers of one kind pass the same `commit`.
    pub async fn submit<F, Fut>(&self, item: T, weight: usize, commit: F) -> Result<R, GroupError<E>>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Result<Vec<R>, E>> + Send + 'static,
    {
        let (reply, mut outcome) = oneshot::channel();
        self.lock_queue().push_back(Waiting { item, weight, reply });
        loop {
            tokio::select! {
                biased;
                answered = &mut outcome => return answered.unwrap_or(Err(GroupError::Interrupted)),
                turn = self.committers.clone().acquire_owned() => {
                    let group = self.take_group();
                    if group.is_empty() {
                        // A group in flight holds this item; it answers.
                        drop(turn);
                        return outcome.await.unwrap_or(Err(GroupError::Interrupted));
                    }
                    let (items, replies): (Vec<T>, Vec<Reply<R, E>>) =
                        group.into_iter().map(|w| (w.item, w.reply)).unzip();
                    let run = commit(items);
                    tokio::spawn(async move {
                        let outcomes = run.await;
                        answer(replies, outcomes);
                        drop(turn);
                    });
                    // This item may have been left for the next group: keep waiting for
                    // its outcome or the next turn.
                }
            }
        }
    }

    /// The queue's head, up to the weight limit (at least one item).
    fn take_group(&self) -> Vec<Waiting<T, R, E>> {
        let mut queue = self.lock_queue();
        let mut weight = 0;
        let mut group = Vec::new();
        while let Some(next) = queue.front() {
            if !group.is_empty() && weight + next.weight > self.max_weight {
                break;
            }
            weight += next.weight;
            group.extend(queue.pop_front());
        }
        group
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<T, R, E>>> {
        // The queue is left consistent at every step; a panic elsewhere cannot tear it.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn answer<R, E: std::error::Error + 'static>(replies: Vec<Reply<R, E>>, outcomes: Result<Vec<R>, E>) {
    match outcomes {
        Ok(outcomes) if outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that went away no longer needs its answer.
                let _ = reply.send(Ok(outcome));
            }
        }
        // A commit that answers for the wrong number of items has a bug; its callers are
        // told it ended without an outcome rather than handed another's.
        Ok(_) => drop(replies),
        Err(err) => {
            let err = Arc::new(err);
            for reply in replies {
                let _ = reply.send(Err(GroupError::Failed(err.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    /// Records each group's items; holds the first group until the test opens the gate.
    #[derive(Clone)]
    struct Log {
        groups: Arc<Mutex<Vec<Vec<u32>>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    type Commit = Box<
        dyn Fn(Vec<u32>) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u32>, Refused>> + Send>> + Send + Sync,
    >;

    impl Log {
        fn new() -> Self {
            Self { groups: Arc::default(), gate: Arc::new(tokio::sync::Semaphore::new(0)) }
        }

        fn commit(&self) -> Commit {
            let log = self.clone();
            Box::new(move |items: Vec<u32>| {
                let log = log.clone();
                Box::pin(async move {
                    let first = {
                        let mut groups = log.groups.lock().expect("log");
                        groups.push(items.clone());
                        groups.len() == 1
                    };
                    if first {
                        let _open = log.gate.acquire().await;
                    }
                    if items.contains(&13) {
                        return Err(Refused);
                    }
                    Ok(items.iter().map(|i| i * 10).collect())
                })
            })
        }

        fn groups(&self) -> Vec<Vec<u32>> {
            self.groups.lock().expect("log").clone()
        }
    }

    /// Submits 1 (held at the gate), then `rest` with `weight` each, opens the gate once they
    /// all queue, and returns every outcome in submission order.
    async fn run(max_weight: usize, rest: &[u32], weight: usize, log: &Log) -> Vec<Result<u32, GroupError<Refused>>> {
        let group = Arc::new(GroupCommit::<u32, u32, Refused>::new(1, max_weight));
        let submit = |i: u32, w: usize| {
            let (group, log) = (group.clone(), log.clone());
            tokio::spawn(async move { group.submit(i, w, log.commit()).await })
        };
        let mut calls = vec![submit(1, 1)];
        while log.groups().is_empty() {
            tokio::task::yield_now().await;
        }
        calls.extend(rest.iter().map(|&i| submit(i, weight)));
        while group.lock_queue().len() < rest.len() {
            tokio::task::yield_now().await;
        }
        log.gate.add_permits(1);
        let mut outcomes = Vec::new();
        for call in calls {
            outcomes.push(call.await.expect("join"));
        }
        outcomes
    }

    #[tokio::test]
    async fn writes_arriving_during_a_commit_share_the_next_one_and_each_gets_its_own_outcome() {
        let log = Log::new();
        let outcomes = run(100, &[2, 3, 4, 5, 6], 1, &log).await;
        let values: Vec<u32> = outcomes.into_iter().map(|o| o.expect("taken")).collect();
        assert_eq!(values, vec![10, 20, 30, 40, 50, 60]);
        assert_eq!(log.groups(), vec![vec![1], vec![2, 3, 4, 5, 6]]);
    }

    #[tokio::test]
    async fn a_group_stops_at_its_weight_and_the_rest_follow() {
        let log = Log::new();
        let outcomes = run(5, &[2, 3, 4, 5], 2, &log).await;
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(log.groups(), vec![vec![1], vec![2, 3], vec![4, 5]]);
    }

    #[tokio::test]
    async fn a_failed_group_fails_every_item_in_it_and_no_other() {
        let log = Log::new();
        let outcomes = run(100, &[12, 13], 1, &log).await;
        assert_eq!(outcomes[0].as_ref().expect("taken"), &10);
        assert!(outcomes[1..].iter().all(|o| matches!(o, Err(GroupError::Failed(_)))));
        let group = GroupCommit::<u32, u32, Refused>::new(1, 100);
        assert_eq!(group.submit(14, 1, log.commit()).await.expect("taken"), 140);
    }

    #[tokio::test]
    async fn with_two_committers_a_group_does_not_wait_for_one_in_flight() {
        let group = Arc::new(GroupCommit::<u32, u32, Refused>::new(2, 100));
        let log = Log::new();
        let held = tokio::spawn({
            let (group, log) = (group.clone(), log.clone());
            async move { group.submit(1, 1, log.commit()).await }
        });
        while log.groups().is_empty() {
            tokio::task::yield_now().await;
        }
        // The first group is held at the gate; the second commits beside it.
        assert_eq!(group.submit(2, 1, log.commit()).await.expect("taken"), 20);
        assert!(!held.is_finished());
        log.gate.add_permits(1);
        assert_eq!(held.await.expect("join").expect("taken"), 10);
        assert_eq!(log.groups(), vec![vec![1], vec![2]]);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_cut_its_group_short() {
        let group = Arc::new(GroupCommit::<u32, u32, Refused>::new(1, 100));
        let committed = Arc::new(AtomicUsize::new(0));
        let commit = {
            let committed = committed.clone();
            move |items: Vec<u32>| {
                let committed = committed.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    committed.fetch_add(items.len(), Ordering::SeqCst);
                    Ok::<_, Refused>(items)
                }
            }
        };
        // The caller gives up while its group commits.
        let gave_up = tokio::time::timeout(Duration::from_millis(5), group.submit(1, 1, commit.clone())).await;
        assert!(gave_up.is_err());
        // The next caller waits for that group's turn, then commits its own.
        assert_eq!(group.submit(2, 1, commit).await.expect("taken"), 2);
        assert_eq!(committed.load(Ordering::SeqCst), 2);
    }
}
