//! Answers the gateway gave a moment ago, reused for a short while: a dashboard or a
//! script polling a funnel would otherwise cost a gRPC call to pipeline-tracker and a JSON
//! encoding on every request (most of a funnel read's cost).
//!
//! An entry is one caller's answer: the key holds the whole caller (actor, role, scope),
//! so a hit only repeats what the service itself gave that same caller, never another's.
//! An answer is at most [`FUNNEL_FRESH_FOR`] old (README, API docs); each replica keeps
//! its own, and a write through this replica that changes the answers forgets them.

use bytes::Bytes;
use gomark_platform::Caller;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a funnel read ("now") is reused: short enough that a poll sees a deal change
/// about as soon as the next poll, long enough that a busy dashboard costs one call per
/// company and pipeline per interval.
pub const FUNNEL_FRESH_FOR: Duration = Duration::from_millis(500);
/// Bounds the memory: past this many answers, the stale ones go, then all if need be.
const MAX_ENTRIES: usize = 10_000;

pub struct RecentAnswers {
    fresh_for: Duration,
    entries: Mutex<HashMap<String, (Instant, Bytes)>>,
}

impl RecentAnswers {
    pub fn new(fresh_for: Duration) -> Self {
        Self { fresh_for, entries: Mutex::new(HashMap::new()) }
    }

    /// The key of `caller`'s request for `parts`; every part is length-prefixed, so no two
    /// different requests (or callers) share a key whatever their ids contain.
    pub fn key(caller: &Caller, parts: &[&str]) -> String {
        let scope = caller.scope.encode();
        let mut key = String::with_capacity(64);
        for part in [caller.actor.as_str(), caller.role.as_str(), scope.as_str()].iter().chain(parts) {
            // Writing to a String cannot fail.
            let _ = write!(key, "{}:{part}", part.len());
        }
        key
    }

    /// The answer stored under `key`, if it is still fresh.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(at, _)| at.elapsed() < self.fresh_for).map(|(_, body)| body.clone())
    }

    pub fn put(&self, key: String, body: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let fresh_for = self.fresh_for;
            entries.retain(|_, (at, _)| at.elapsed() < fresh_for);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), body));
    }

    /// Forgets every answer (after a write that changes them).
    pub fn forget(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gomark_platform::{Role, Scope};

    fn caller(actor: &str, role: Role, scope: Scope) -> Caller {
        Caller { actor: actor.into(), role, scope }
    }

    #[test]
    fn an_answer_is_reused_only_for_the_same_caller_and_request() {
        let recent = RecentAnswers::new(Duration::from_secs(60));
        let alice = caller("apikey:a", Role::Viewer, Scope::Company("c1".into()));
        recent.put(RecentAnswers::key(&alice, &["c1", "default"]), Bytes::from_static(b"alice's"));
        assert_eq!(recent.get(&RecentAnswers::key(&alice, &["c1", "default"])).as_deref(), Some(&b"alice's"[..]));
        // Another actor, the same actor with another role or scope, another request: misses.
        let others = [
            caller("apikey:b", Role::Viewer, Scope::Company("c1".into())),
            caller("apikey:a", Role::Admin, Scope::Company("c1".into())),
            caller("apikey:a", Role::Viewer, Scope::Portfolio),
        ];
        for other in &others {
            assert_eq!(recent.get(&RecentAnswers::key(other, &["c1", "default"])), None, "{other:?}");
        }
        assert_eq!(recent.get(&RecentAnswers::key(&alice, &["c1", "renewals"])), None);
        // Ids cannot be shifted from one part into the next.
        assert_ne!(RecentAnswers::key(&alice, &["c1:x", "y"]), RecentAnswers::key(&alice, &["c1", "x:y"]));
        assert_ne!(RecentAnswers::key(&alice, &["c1", ""]), RecentAnswers::key(&alice, &["c1"]));
    }

    #[test]
    fn an_answer_expires_and_can_be_forgotten() {
        let recent = RecentAnswers::new(Duration::from_millis(50));
        let viewer = caller("apikey:a", Role::Viewer, Scope::Portfolio);
        let key = RecentAnswers::key(&viewer, &["c1", "default"]);
        recent.put(key.clone(), Bytes::from_static(b"1"));
        assert!(recent.get(&key).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(recent.get(&key), None, "older than its freshness");
        recent.put(key.clone(), Bytes::from_static(b"2"));
        recent.forget();
        assert_eq!(recent.get(&key), None, "forgotten");
    }

    #[test]
    fn memory_stays_bounded() {
        let recent = RecentAnswers::new(Duration::from_secs(60));
        let viewer = caller("apikey:a", Role::Viewer, Scope::Portfolio);
        for i in 0..MAX_ENTRIES + 10 {
            recent.put(RecentAnswers::key(&viewer, &[&i.to_string()]), Bytes::from_static(b"x"));
        }
        assert!(recent.entries.lock().map(|e| e.len()).unwrap_or(0) <= MAX_ENTRIES);
    }
}
