//! Drawing a rollout: plain lines, one per change of a wave or a company, with the
//! progress bar (counts, ETA) on a terminal; and the block `rollout show` prints.

use crate::cli::output::{count, int, items, text};
use crate::cli::progress;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;

/// States after which a step or rollout changes no more.
pub const TERMINAL_ROLLOUT: &[&str] = &["completed", "cancelled", "halted", "superseded"];
const TERMINAL_STEP: &[&str] = &["done", "failed", "cancelled"];

/// More companies than this and the block shows waves only: it should fit on a screen.
const MAX_COMPANY_LINES: usize = 30;

pub fn is_terminal_state(rollout: &Value) -> bool {
    TERMINAL_ROLLOUT.contains(&text(rollout, "state"))
}

/// Steps grouped by wave, waves in order.
fn waves(rollout: &Value) -> BTreeMap<i64, Vec<&Value>> {
    let mut waves: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for step in items(rollout, "steps") {
        waves.entry(int(step, "wave")).or_default().push(step);
    }
    waves
}

fn header(rollout: &Value) -> String {
    let mut line = format!(
        "rollout {} (revision {}): {}, {}/{} done",
        text(rollout, "id"),
        int(rollout, "revision"),
        text(rollout, "state"),
        int(rollout, "done"),
        int(rollout, "total")
    );
    if int(rollout, "failed") > 0 {
        line.push_str(&format!(", {} failed", int(rollout, "failed")));
    }
    if !text(rollout, "reason").is_empty() {
        line.push_str(&format!(" ({})", text(rollout, "reason")));
    }
    line
}

fn wave_line(wave: i64, steps: &[&Value]) -> String {
    let n = |state: &str| steps.iter().filter(|s| text(s, "state") == state).count();
    let label = if wave == 0 { format!("wave {wave} (canary)") } else { format!("wave {wave}") };
    let mut line = format!("{label}: {}/{} done", n("done"), steps.len());
    for state in ["running", "failed", "cancelled"] {
        if n(state) > 0 {
            line.push_str(&format!(", {} {state}", n(state)));
        }
    }
    line
}

fn company_line(step: &Value, width: usize) -> String {
    let name = match text(step, "companyKey") {
        "" => text(step, "companyId"),
        key => key,
    };
    let mut line = format!(
        "  {name:<width$}  {:<9}  {}",
        text(step, "state"),
        count(int(step, "applied"), "change applied", "changes applied")
    );
    if int(step, "attempts") > 1 {
        line.push_str(&format!(", attempt {}", int(step, "attempts")));
    }
    if !text(step, "detail").is_empty() {
        line.push_str(&format!(": {}", text(step, "detail")));
    }
    line
}

fn name_width(rollout: &Value) -> usize {
    items(rollout, "steps")
        .iter()
        .map(|s| match text(s, "companyKey") {
            "" => text(s, "companyId").chars().count(),
            key => key.chars().count(),
        })
        .max()
        .unwrap_or(0)
}

/// The block: the rollout, then each wave with its companies.
pub fn block(rollout: &Value) -> Vec<String> {
    let mut lines = vec![header(rollout)];
    let width = name_width(rollout);
    let with_companies = items(rollout, "steps").len() <= MAX_COMPANY_LINES;
    for (wave, steps) in waves(rollout) {
        lines.push(wave_line(wave, &steps));
        if with_companies {
            lines.extend(steps.iter().map(|s| company_line(s, width)));
        }
    }
    lines
}

/// Plain output as `(key, line)` pairs; a line is printed whenever its key's text changes.
/// A wave is reported when it starts and when it finishes, a company once it has started,
/// and the rollout's own state last, so that its end follows its last company.
pub fn plain(rollout: &Value) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let width = name_width(rollout);
    for (wave, steps) in waves(rollout) {
        let finished = steps.iter().all(|s| TERMINAL_STEP.contains(&text(s, "state")));
        let started = steps.iter().any(|s| text(s, "state") != "pending");
        if finished {
            lines.push((format!("wave {wave}"), wave_line(wave, &steps).replacen(':', " finished:", 1)));
        } else if started {
            let line = format!("wave {wave}: started, {}", count(steps.len() as i64, "company", "companies"));
            lines.push((format!("wave {wave}"), line));
        }
        for step in steps.iter().filter(|s| text(s, "state") != "pending") {
            lines.push((format!("step {}", text(step, "companyId")), company_line(step, width)));
        }
    }
    let mut state = format!("rollout {}: {}", text(rollout, "id"), text(rollout, "state"));
    if !text(rollout, "reason").is_empty() {
        state.push_str(&format!(" ({})", text(rollout, "reason")));
    }
    lines.push(("rollout".to_owned(), state));
    lines
}

/// The final summary, after the rollout ended.
pub fn summary(rollout: &Value) -> String {
    let mut out = format!(
        "rollout {} {}: revision {}, {}/{} done, {} failed",
        text(rollout, "id"),
        text(rollout, "state"),
        int(rollout, "revision"),
        int(rollout, "done"),
        count(int(rollout, "total"), "company", "companies"),
        int(rollout, "failed"),
    );
    if !text(rollout, "reason").is_empty() {
        out.push_str(&format!(" ({})", text(rollout, "reason")));
    }
    out.push('\n');
    for step in items(rollout, "steps").iter().filter(|s| text(s, "state") == "failed") {
        let name = match text(step, "companyKey") {
            "" => text(step, "companyId"),
            key => key,
        };
        out.push_str(&format!("  failed: {name}: {}\n", text(step, "detail")));
    }
    out
}

/// Whether the rollout ended well; the error message otherwise.
pub fn outcome(rollout: &Value) -> Result<(), String> {
    let failed = int(rollout, "failed");
    match text(rollout, "state") {
        "halted" => Err(format!("the rollout halted: {}", text(rollout, "reason")).trim_end_matches(": ").to_owned()),
        "cancelled" => Err("the rollout was cancelled before every company was converged".to_owned()),
        // The later rollout named in the reason converges these companies instead.
        "superseded" => Err(format!("the rollout was {}", text(rollout, "reason"))),
        _ if failed > 0 => Err(format!("{} failed", count(failed, "company", "companies"))),
        _ => Ok(()),
    }
}

/// Shows successive states of one rollout: the plain lines on stdout as they change and,
/// on a terminal, the companies bar (see [`progress`]) with the current wave.
pub struct Progress {
    quiet: bool,
    /// Hidden on a pipe, a CI log or under `--json`.
    bar: indicatif::ProgressBar,
    /// What was printed last per key.
    printed: HashMap<String, String>,
}

impl Progress {
    /// `quiet` (for `--json`) shows nothing at all.
    pub fn new(quiet: bool) -> Self {
        Self::with_target(quiet, progress::target(quiet))
    }

    /// Like [`Progress::new`], drawing the bar on `target`.
    pub fn with_target(quiet: bool, target: indicatif::ProgressDrawTarget) -> Self {
        Self { quiet, bar: progress::companies(0, target), printed: HashMap::new() }
    }

    pub fn show(&mut self, rollout: &Value) {
        if self.quiet {
            return;
        }
        let mut fresh = Vec::new();
        for (key, line) in plain(rollout) {
            if self.printed.get(&key) != Some(&line) {
                fresh.push(line.clone());
                self.printed.insert(key, line);
            }
        }
        self.bar.set_length(int(rollout, "total").max(0) as u64);
        self.bar.set_position((int(rollout, "done") + int(rollout, "failed")).max(0) as u64);
        let current = waves(rollout)
            .into_iter()
            .find(|(_, steps)| !steps.iter().all(|s| TERMINAL_STEP.contains(&text(s, "state"))))
            .map(|(wave, steps)| wave_line(wave, &steps))
            .unwrap_or_default();
        self.bar.set_message(current);
        // Counted first, so the bar redrawn below the new lines is already up to date;
        // it steps aside while they are printed, so they never interleave.
        self.bar.suspend(|| {
            let mut out = std::io::stdout().lock();
            for line in fresh {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        });
        if is_terminal_state(rollout) {
            self.bar.finish_and_clear();
        }
    }

    /// The bar, to read its state in tests.
    pub fn bar(&self) -> &indicatif::ProgressBar {
        &self.bar
    }
}

impl Drop for Progress {
    /// An interrupted follow (an error, Ctrl-C) leaves no half-drawn bar behind.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
