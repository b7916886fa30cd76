//! Progress, in one look for every long command: a bar with counts and an ETA, the work
//! counted in companies (following a rollout, a drift check, the event stream of a plan or
//! an import).
//!
//! Progress goes to stderr, and only when stderr is a terminal and the output is for
//! people (no `--json`): stdout stays the command's output, and pipes, files and CI logs
//! get no escape codes. Each constructor takes its draw target so tests can draw in memory.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use std::io::IsTerminal as _;
use std::time::Duration;

/// `⠋ [=====>    ] 12/40 companies, ETA 30s  wave 2: 3/10 done`; the message is cut to the
/// terminal's width, so that the bar stays one line (a wrapped bar redraws badly).
const BAR_TEMPLATE: &str = "{spinner} [{bar:25}] {pos}/{len} companies, ETA {eta}  {wide_msg}";
/// How often the spinner turns and the ETA is redrawn while nothing else changes.
const TICK: Duration = Duration::from_millis(200);

/// Where this process draws progress: stderr if it is a terminal and `json` is false.
pub fn target(json: bool) -> ProgressDrawTarget {
    if shown(json, std::io::stderr().is_terminal()) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// The rule itself: only on a terminal, and never under `--json`.
pub fn shown(json: bool, terminal: bool) -> bool {
    terminal && !json
}

/// A bar counting `total` companies (set the length later when it is not known yet).
pub fn companies(total: u64, target: ProgressDrawTarget) -> ProgressBar {
    let style = ProgressStyle::with_template(BAR_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ticking(ProgressBar::with_draw_target(Some(total), target).with_style(style))
}

/// A bar left behind by an error or Ctrl-C is cleared, not left half-drawn.
fn ticking(bar: ProgressBar) -> ProgressBar {
    let bar = bar.with_finish(ProgressFinish::AndClear);
    if !bar.is_hidden() {
        bar.enable_steady_tick(TICK);
    }
    bar
}

/// A terminal in memory, for tests: what was drawn, line by line.
#[cfg(test)]
pub mod testing {
    use indicatif::TermLike;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Default)]
    pub struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        /// Everything written so far, escape codes left out.
        pub fn text(&self) -> String {
            self.0.lock().map(|lines| lines.join("\n")).unwrap_or_default()
        }

        fn push(&self, s: &str) {
            if let Ok(mut lines) = self.0.lock() {
                lines.push(s.to_owned());
            }
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(s);
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        pub fn target(&self) -> indicatif::ProgressDrawTarget {
            indicatif::ProgressDrawTarget::term_like(Box::new(self.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_drawn_only_on_a_terminal_without_json() {
        assert!(shown(false, true));
        assert!(!shown(false, false));
        assert!(!shown(true, true));
        assert!(!shown(true, false));
        // Under `cargo test` stderr is a pipe: what the process itself would draw on.
        assert!(target(false).is_hidden());
    }

    #[test]
    fn the_bar_shows_counts_and_an_eta() {
        let screen = testing::Screen::default();
        let bar = companies(5, screen.target());
        bar.inc(2);
        bar.force_draw();
        let drawn = screen.text();
        assert!(drawn.contains("2/5 companies, ETA "), "{drawn}");
    }
}
