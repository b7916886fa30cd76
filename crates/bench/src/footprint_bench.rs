//! Idle footprint (issue 17): the resident memory of GoMark at rest, as an operator runs
//! it. Embedded is one `gomark serve` process; distributed is `gomark cluster`, whose five
//! services are separate `gomark run <service>` processes (the cluster process itself only
//! holds the simulators, so it is not counted). Each is started from the release binary,
//! left alone until start-up has settled, then sampled from `/proc` once a second.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take before the bench gives up.
const START_WAIT: Duration = Duration::from_secs(60);
const SERVICES: [&str; 5] = ["gateway", "hubspot-sync", "upso-cadence", "pipeline-tracker", "orchestrator"];

/// The `gomark` binary to measure: `given`, else the one beside this benchmark's own (both
/// in `target/release`).
pub fn gomark_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    let gomark = match given {
        Some(path) => path,
        None => std::env::current_exe().context("cannot find this benchmark's binary")?.with_file_name("gomark"),
    };
    if !gomark.is_file() {
        bail!("no gomark binary at {}: run `cargo build --release -p gomark` first", gomark.display());
    }
    Ok(gomark)
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The children of `parent` that run `gomark run <service>`, by service.
fn service_pids(parent: u32) -> Vec<(&'static str, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name in parentheses may hold spaces; the fields after it do not.
        let Some(ppid) =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        else {
            continue;
        };
        if ppid != parent {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if let Some(service) = SERVICES.iter().find(|s| args.windows(2).any(|w| w[0] == b"run" && w[1] == s.as_bytes()))
        {
            found.push((*service, pid));
        }
    }
    found
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_healthy(child: &mut Child, url: &str) -> Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + START_WAIT;
    loop {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("gomark exited before it answered {url}: {status}");
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {START_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops a process the way Ctrl-C would, so `cluster` stops its services too.
async fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Samples each process's resident memory once a second: (median RSS, largest peak) in KiB.
async fn sample(pids: &[(&'static str, u32)], samples: usize) -> Vec<(&'static str, u64, u64)> {
    let mut pids = pids.to_vec();
    pids.sort_by_key(|(name, _)| SERVICES.iter().position(|s| s == name));
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    let mut peak = vec![0u64; pids.len()];
    for _ in 0..samples {
        for (i, (_, pid)) in pids.iter().enumerate() {
            if let Some((now, hwm)) = memory_kib(*pid) {
                rss[i].push(now);
                peak[i] = peak[i].max(hwm);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    pids.iter()
        .zip(rss)
        .zip(peak)
        .map(|(((name, _), mut rss), peak)| {
            rss.sort_unstable();
            let median = rss.get(rss.len() / 2).copied().unwrap_or_default();
            (*name, median, peak)
        })
        .collect()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn row(mode: &str, process: &str, rss: u64, peak: u64, goal_mib: u64) -> String {
    let verdict = if rss <= goal_mib * 1024 { "met" } else { "**not met**" };
    format!("| {mode} | {process} | {} | {} | ≤ {goal_mib} MiB | {verdict} |\n", mib(rss), mib(peak))
}

/// The embedded process at rest, with and without the demo portfolio (its simulated sales
/// activity off, so the process is idle).
pub async fn embedded(gomark: &Path, settle: Duration, samples: usize) -> Result<String> {
    let mut rows = String::new();
    for (label, demo) in [("embedded, no demo", false), ("embedded, demo portfolio loaded", true)] {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut command = Command::new(gomark);
        command
            .args(["serve", "--port", &port.to_string(), "--demo-activity-ms", "0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !demo {
            command.arg("--no-demo");
        }
        let mut child = command.spawn().context("cannot start gomark serve")?;
        let started = wait_healthy(&mut child, &format!("http://127.0.0.1:{port}/healthz")).await;
        if let Err(err) = started {
            stop(child).await;
            return Err(err);
        }
        tokio::time::sleep(settle).await;
        let pid = child.id();
        let figures = sample(&[("gomark serve", pid)], samples).await;
        stop(child).await;
        for (process, rss, peak) in figures {
            rows.push_str(&row(label, process, rss, peak, 60));
        }
    }
    Ok(rows)
}

/// The five services of `gomark cluster` at rest, on the Postgres, NATS and Redis the
/// `GOMARK_TEST_*` variables name; `None` when they are not set.
pub async fn distributed(gomark: &Path, settle: Duration, samples: usize) -> Result<Option<String>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(postgres), Some(nats), Some(redis)) =
        (env("GOMARK_TEST_POSTGRES_URL"), env("GOMARK_TEST_NATS_URL"), env("GOMARK_TEST_REDIS_URL"))
    else {
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut child = Command::new(gomark)
        .args(["cluster", "--no-demo", "--port", &port.to_string(), "--port-offset", "700"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--postgres-url", &postgres, "--nats-url", &nats, "--redis-url", &redis])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start gomark cluster")?;
    if let Err(err) = wait_healthy(&mut child, &format!("http://127.0.0.1:{port}/healthz")).await {
        stop(child).await;
        return Err(err);
    }
    tokio::time::sleep(settle).await;
    let pids = service_pids(child.id());
    let figures = sample(&pids, samples).await;
    stop(child).await;
    if figures.len() != SERVICES.len() {
        bail!("found {} of the cluster's five service processes", figures.len());
    }
    let mut rows = String::new();
    for (process, rss, peak) in figures {
        rows.push_str(&row("distributed", process, rss, peak, 25));
    }
    Ok(Some(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_memory() {
        let (rss, peak) = memory_kib(std::process::id()).expect("own /proc status");
        assert!(rss > 0 && peak >= rss);
    }

    #[test]
    fn a_row_says_whether_the_goal_is_met() {
        assert!(row("embedded", "gomark serve", 50 * 1024, 70 * 1024, 60).ends_with("| met |\n"));
        assert!(row("distributed", "gateway", 26 * 1024, 30 * 1024, 25).contains("**not met**"));
    }
}
