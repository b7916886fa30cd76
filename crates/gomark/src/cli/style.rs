//! Colour for plans and diffs, terraform-style: `+` green, `~` yellow, `-` red. Only on a
//! terminal, and never when `NO_COLOR` is set (<https://no-color.org>), so pipes, files
//! and CI logs get plain text.

use std::ffi::OsStr;
use std::io::IsTerminal as _;

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// Whether this process should colour what it prints on stdout.
pub fn enabled() -> bool {
    should_colour(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

/// The rule itself: a terminal, and `NO_COLOR` unset or empty.
pub fn should_colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Colours each line of a plan or diff by its first visible character; with `colour`
/// false the text is returned unchanged.
pub fn diff(text: &str, colour: bool) -> String {
    if !colour {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let code = match body.trim_start().chars().next() {
            Some('+') => Some(GREEN),
            Some('~') => Some(YELLOW),
            Some('-') => Some(RED),
            _ if body.trim_start().starts_with("error:") => Some(RED),
            _ => None,
        };
        match code {
            Some(code) => {
                out.push_str(code);
                out.push_str(body);
                out.push_str(RESET);
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(should_colour(true, None));
        assert!(should_colour(true, Some(OsStr::new(""))));
        assert!(!should_colour(true, Some(OsStr::new("1"))));
        assert!(!should_colour(false, None));
    }

    #[test]
    fn plan_lines_are_coloured_by_their_sign() {
        let plan = "acme:\n  + a: 1\n  ~ b: 1 → 2\n  - c\nno sign\n";
        let coloured = diff(plan, true);
        assert!(coloured.contains("\x1b[32m  + a: 1\x1b[0m\n"), "{coloured:?}");
        assert!(coloured.contains("\x1b[33m  ~ b: 1 → 2\x1b[0m\n"), "{coloured:?}");
        assert!(coloured.contains("\x1b[31m  - c\x1b[0m\n"), "{coloured:?}");
        assert!(coloured.starts_with("acme:\n") && coloured.ends_with("no sign\n"), "{coloured:?}");
        assert_eq!(diff(plan, false), plan);
    }
}
