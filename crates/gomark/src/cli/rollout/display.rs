//! Drawing a rollout's progress: on a terminal, a block with a line per wave and per
//! company, redrawn in place; otherwise (a pipe, a CI log) plain lines, one per change.

use crate::cli::output::{count, int, items, text};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;

/// States after which a step or rollout changes no more.
pub const TERMINAL_ROLLOUT: &[&str] = &["completed", "cancelled", "halted"];
const TERMINAL_STEP: &[&str] = &["done", "failed", "cancelled"];

/// More companies than this and the terminal block shows waves only: a block taller than
/// the screen cannot be redrawn in place.
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

/// The terminal block: the rollout, then each wave with its companies.
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
        _ if failed > 0 => Err(format!("{} failed", count(failed, "company", "companies"))),
        _ => Ok(()),
    }
}

/// Shows successive states of one rollout.
pub struct Progress {
    tty: bool,
    quiet: bool,
    /// Lines of the block on screen (terminal mode).
    drawn: usize,
    /// What was printed last per key (plain mode).
    printed: HashMap<String, String>,
}

impl Progress {
    /// `quiet` (for `--json`) shows nothing at all.
    pub fn new(quiet: bool) -> Self {
        use std::io::IsTerminal as _;
        Self { tty: std::io::stdout().is_terminal(), quiet, drawn: 0, printed: HashMap::new() }
    }

    pub fn show(&mut self, rollout: &Value) {
        if self.quiet {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            let lines = block(rollout);
            let mut frame = String::new();
            if self.drawn > 0 {
                // Back to the block's first line, then rewrite each line in place.
                frame.push_str(&format!("\x1b[{}A", self.drawn));
            }
            for line in &lines {
                frame.push_str(&format!("\r\x1b[2K{line}\n"));
            }
            // A shorter block than before: clear what is left of the old one.
            for _ in lines.len()..self.drawn {
                frame.push_str("\r\x1b[2K\n");
            }
            self.drawn = lines.len().max(self.drawn);
            let _ = out.write_all(frame.as_bytes());
        } else {
            for (key, line) in plain(rollout) {
                if self.printed.get(&key) != Some(&line) {
                    let _ = writeln!(out, "{line}");
                    self.printed.insert(key, line);
                }
            }
        }
        let _ = out.flush();
    }
}
