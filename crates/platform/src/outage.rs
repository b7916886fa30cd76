//! How a background loop reports a dependency being down: once when the failures start,
//! once when they stop — not once per attempt, which would bury the log during a long
//! outage and say nothing about when it ended.

use std::fmt::Display;
use std::time::Instant;

/// One loop's view of one kind of failure (`"outbox relay"`, `"deal sync"`).
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    since: Option<Instant>,
    attempts: u64,
}

impl Outage {
    pub fn new(what: &'static str) -> Self {
        Self { what, since: None, attempts: 0 }
    }

    /// Records a failed attempt; logs a warning only for the first of an outage.
    pub fn failed(&mut self, error: &dyn Display) {
        self.attempts += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
            self.span().in_scope(|| {
                tracing::warn!(loop_name = self.what, error = %error, "failing; retrying quietly until it recovers");
            });
        }
    }

    /// Records a successful attempt; logs the recovery if an outage was running.
    pub fn ok(&mut self) {
        if let Some(since) = self.since.take() {
            self.span().in_scope(|| {
                tracing::info!(
                    loop_name = self.what,
                    outage_secs = since.elapsed().as_secs(),
                    failed_attempts = self.attempts,
                    "recovered"
                );
            });
        }
        self.attempts = 0;
    }

    pub fn is_failing(&self) -> bool {
        self.since.is_some()
    }

    /// Where the news is logged: the loop's current pass, or when the loop noticed it
    /// outside one (between passes, while connecting), a trace of its own, so the line
    /// still carries a `trace_id`.
    fn span(&self) -> tracing::Span {
        let current = tracing::Span::current();
        if current.is_none() { crate::telemetry::root_span(self.what) } else { current }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_failure_then_one_recovery() {
        let mut outage = Outage::new("test loop");
        outage.ok();
        assert!(!outage.is_failing(), "no outage without a failure");
        for _ in 0..100 {
            outage.failed(&"database unreachable");
        }
        assert!(outage.is_failing());
        assert_eq!(outage.attempts, 100);
        outage.ok();
        assert!(!outage.is_failing());
        assert_eq!(outage.attempts, 0);
    }

    #[test]
    fn news_noticed_outside_a_pass_still_carries_a_trace_id() {
        let c = crate::telemetry::capture::Captured::new(crate::settings::LogFormat::Json);
        tracing::dispatcher::with_default(&c.dispatch, || {
            let mut outage = Outage::new("test loop");
            outage.failed(&"database unreachable");
            outage.ok();
        });
        let logs = c.logs();
        let lines: Vec<serde_json::Value> =
            logs.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        assert_eq!(lines.len(), 2, "the failure and the recovery: {logs}");
        for line in &lines {
            assert!(line["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{line}");
        }
    }
}
