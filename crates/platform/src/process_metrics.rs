//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! …), as Prometheus's own client libraries export them, read from `/proc/self` when
//! `/metrics` is scraped. Elsewhere than Linux they are simply absent.

use metrics::{Unit, describe_counter, describe_gauge};
use std::sync::OnceLock;

/// Clock ticks per second for `/proc/self/stat`'s times: 100 on every Linux we ship to.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: f64 = 4096.0;

pub fn describe() {
    describe_counter!("process_cpu_seconds_total", Unit::Seconds, "CPU time this process used, user and system.");
    describe_gauge!("process_resident_memory_bytes", Unit::Bytes, "Resident memory of this process.");
    describe_gauge!("process_virtual_memory_bytes", Unit::Bytes, "Virtual memory of this process.");
    describe_gauge!("process_open_fds", Unit::Count, "File descriptors this process has open.");
    describe_gauge!("process_threads", Unit::Count, "Threads of this process.");
    describe_gauge!("process_start_time_seconds", Unit::Seconds, "When this process started, in Unix seconds.");
}

/// Updates the process metrics from `/proc/self`; called before each scrape.
pub fn record() {
    let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| Stat::parse(&s)) else {
        return;
    };
    metrics::counter!("process_cpu_seconds_total")
        .absolute(((stat.utime + stat.stime) as f64 / TICKS_PER_SECOND) as u64);
    metrics::gauge!("process_resident_memory_bytes").set(stat.rss_pages as f64 * PAGE_SIZE);
    metrics::gauge!("process_virtual_memory_bytes").set(stat.vsize as f64);
    metrics::gauge!("process_threads").set(stat.threads as f64);
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
    if let Some(start) = start_time(stat.starttime) {
        metrics::gauge!("process_start_time_seconds").set(start);
    }
}

/// The process's start in Unix seconds: boot time plus its start in ticks after boot.
fn start_time(starttime_ticks: u64) -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    let boot = (*BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok())
    }))?;
    Some(boot + starttime_ticks as f64 / TICKS_PER_SECOND)
}

#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

impl Stat {
    /// Fields after the command name, which may itself hold spaces and parentheses.
    fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field n is f[n - 3].
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            starttime: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_an_awkward_command_name() {
        let line = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2560 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stat = Stat::parse(line).expect("parsed");
        assert_eq!(
            stat,
            Stat { utime: 250, stime: 50, threads: 7, starttime: 12345, vsize: 104_857_600, rss_pages: 2560 }
        );
    }

    #[test]
    fn reads_this_process() {
        let line = std::fs::read_to_string("/proc/self/stat").expect("linux");
        let stat = Stat::parse(&line).expect("parsed");
        assert!(stat.threads >= 1 && stat.rss_pages > 0);
        assert!(start_time(stat.starttime).is_some_and(|t| t > 1.7e9));
    }
}
