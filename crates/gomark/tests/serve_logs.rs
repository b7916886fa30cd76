//! Every log line `gomark serve` writes carries a `trace_id`, not only those of requests:
//! start-up, the demo being staged, the background loops and shutdown each run in a trace
//! of their own, so a log search by trace never misses a line.
//!
//! A test binary of its own: it runs `serve` as a process, with the demo, for several
//! seconds, and reads its whole log.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the `gomark serve` it holds when the test ends, passed or not.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_line_serve_logs_has_a_trace_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gomark"))
        .args(["serve", "--port", "0", "--log-format", "json", "--demo-activity-ms", "200", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start gomark serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut serve = Serve(child);
    // `serve` announces its addresses on stdout once it is up.
    let announced =
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).any(|line| line.starts_with("gateway: "));
    assert!(announced, "serve did not start: {}", std::fs::read_to_string(&log_path).unwrap_or_default());

    // Until the demo is staged (rollouts, drift, the deal backfill have run) and a few
    // seconds more of background work, at most a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready_at = None;
    while Instant::now() < deadline {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if ready_at.is_none() && log.contains("demo ready") {
            ready_at = Some(Instant::now());
        }
        if ready_at.is_some_and(|at| at.elapsed() > Duration::from_secs(5)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM, so the shutdown's lines are checked too.
    let stopped = Command::new("kill").args(["-TERM", &serve.0.id().to_string()]).status().expect("kill");
    assert!(stopped.success());
    let waited = Instant::now();
    while serve.0.try_wait().expect("wait").is_none() && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }

    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(log.contains("demo ready"), "the demo was staged in time:\n{log}");
    assert!(log.contains("shutdown signal received"), "serve stopped on SIGTERM:\n{log}");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let without: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("trace_id").is_none()).collect();
    assert!(
        without.is_empty(),
        "{} of {} lines have no trace_id, e.g.:\n{}",
        without.len(),
        lines.len(),
        without.iter().take(10).map(|l| l.to_string()).collect::<Vec<_>>().join("\n")
    );
    assert!(lines.len() > 20, "serve logged what it did: {} lines", lines.len());
}
