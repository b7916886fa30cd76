//! The README's walkthrough, run as written: every command between the
//! `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->` markers, in order, in one bash
//! shell, against a fresh `gomark serve` (the real binary, on a free port), with `gomark` on
//! the PATH. The placeholders a reader replaces (the gateway URL, the admin key, the Upso
//! simulator's URL) are replaced by what `serve` printed; each command must exit 0 and, where
//! the README says `#=> text`, print that text.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BEGIN: &str = "<!-- walkthrough:begin -->";
const END: &str = "<!-- walkthrough:end -->";

/// One walkthrough command and the text its output must contain, if any.
#[derive(Debug, PartialEq)]
struct Step {
    command: String,
    expect: Option<String>,
}

/// The commands of the marked block(s) of `readme`: `\` continuations joined, blank lines
/// and comment lines skipped, a trailing `#=> text` taken as the expected output.
fn walkthrough(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = readme;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after.find(END).expect("every walkthrough:begin has its walkthrough:end");
        let block = &after[..end];
        let mut pending = String::new();
        for line in block.lines().filter(|l| !l.trim_start().starts_with("```")) {
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                continue;
            }
            pending.push_str(line);
            let full = std::mem::take(&mut pending);
            let (command, expect) = match full.split_once("#=>") {
                Some((command, expect)) => (command.trim().to_owned(), Some(expect.trim().to_owned())),
                None => (full.trim().to_owned(), None),
            };
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            steps.push(Step { command, expect });
        }
        rest = &after[end + END.len()..];
    }
    steps
}

#[test]
fn the_walkthrough_parser_finds_commands_and_expectations() {
    let readme = "intro\n<!-- walkthrough:begin -->\n```sh\n# a comment\nexport A=1\ngomark status   #=> companies: 20\necho a \\\n  b\n```\n<!-- walkthrough:end -->\nafter\n";
    assert_eq!(
        walkthrough(readme),
        [
            Step { command: "export A=1".into(), expect: None },
            Step { command: "gomark status".into(), expect: Some("companies: 20".into()) },
            Step { command: "echo a   b".into(), expect: None },
        ]
    );
}

/// `gomark serve` in a temporary data folder, killed on drop.
struct Serve {
    child: Child,
    /// The lines `serve` printed on stdout.
    lines: Vec<String>,
    /// stderr lines as they come (the log).
    log: mpsc::Receiver<String>,
}

impl Serve {
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gomark"))
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gomark serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (log_tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if log_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (out_tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if out_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut lines = Vec::new();
        while !lines.iter().any(|l: &String| l.starts_with("example:")) {
            let line = out.recv_timeout(Duration::from_secs(120)).expect("serve prints its addresses");
            lines.push(line);
        }
        Self { child, lines, log }
    }

    /// The value of the printed line `label: value`.
    fn printed(&self, label: &str) -> String {
        let prefix = format!("{label}: ");
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("serve printed no {label:?} line: {:?}", self.lines))
            .to_owned()
    }

    /// Waits for the log line saying the demo is staged.
    fn wait_for_demo(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.log.recv_timeout(left).expect("the log says `demo ready` within a minute");
            assert!(!line.contains("could not be staged"), "{line}");
            if line.contains("demo ready") {
                return;
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_readme_walkthrough_command_works_against_a_fresh_serve() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let steps = walkthrough(&readme);
    assert!(steps.len() >= 10, "the README's walkthrough block is missing or short: {steps:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"));
    serve.wait_for_demo(Duration::from_secs(60));
    let gateway = serve.printed("gateway");
    let key = serve.printed("admin api key");
    let upso_sim = serve.printed("upso-sim");

    // One shell for the whole block (exports carry over), a marker with the exit status
    // after each command so each one's output and status can be told apart.
    let mut script = String::from("exec 2>&1\n");
    for (i, step) in steps.iter().enumerate() {
        let command = step
            .command
            .replace("http://127.0.0.1:8080", &gateway)
            .replace("gmk_…", &key)
            .replace("http://127.0.0.1:…", &upso_sim);
        assert!(!command.contains('…'), "step {i} keeps a placeholder the test cannot fill: {command}");
        script.push_str(&format!("{command}\necho \"@@step {i} exit $?\"\n"));
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_gomark")).parent().expect("bin dir").to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env_remove("GOMARK_GATEWAY")
        .env_remove("GOMARK_API_KEY")
        .env_remove("GOMARK_CONTEXT")
        .env("GOMARK_CLI_CONFIG", dir.path().join("no-cli-config.yaml"))
        .env("NO_COLOR", "1")
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();

    let mut outputs = text.split("@@step ");
    let mut before = outputs.next().unwrap_or_default().to_owned();
    let mut ran = 0;
    for (i, chunk) in outputs.enumerate() {
        let step = &steps[i];
        let (status_line, after) = chunk.split_once('\n').unwrap_or((chunk, ""));
        assert_eq!(status_line, format!("{i} exit 0"), "`{}` failed:\n{before}", step.command);
        if let Some(expect) = &step.expect {
            assert!(
                before.contains(expect.as_str()),
                "`{}` should print {expect:?}; it printed:\n{before}",
                step.command
            );
        }
        before = after.to_owned();
        ran += 1;
    }
    assert_eq!(ran, steps.len(), "every step ran; the script's output:\n{text}");
}
