//! The machine a run happened on, and BENCHMARKS.md: a preamble (how to reproduce, where,
//! when) followed by one `## ` section per benchmark. A run rewrites the preamble and its own
//! section and keeps every other section as it is, so other benchmarks can add theirs.

use anyhow::{Context as _, Result};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub os: String,
    pub kernel: String,
}

impl Machine {
    /// Read at run time, so the report names the machine the figures came from. Anything
    /// unreadable is reported as unknown rather than failing the run.
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = field(&cpuinfo, "model name", ':').unwrap_or_else(|| "unknown".into());
        let meminfo = read("/proc/meminfo");
        let memory = field(&meminfo, "MemTotal", ':')
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(|| "unknown".into(), |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0));
        let os = field(&read("/etc/os-release"), "PRETTY_NAME", '=')
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory,
            os,
            kernel: if kernel.is_empty() { "unknown".into() } else { kernel },
        }
    }
}

fn field(text: &str, key: &str, separator: char) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(separator)?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// `YYYY-MM-DD HH:MM UTC`, without a date crate (days-from-civil, inverted; Howard Hinnant).
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

pub fn preamble(machine: &Machine, date: &str, command: &str) -> String {
    format!(
        "# Benchmarks\n\
         \n\
         Each section below is one benchmark, written by the program named in it. Build in\n\
         release mode; debug builds are several times slower and say nothing.\n\
         \n\
         ## How to reproduce\n\
         \n\
         ```sh\n\
         # Gateway reads (issue 3)\n\
         {command}\n\
         ```\n\
         \n\
         Options: `--duration-secs N` (per target, default 10), `--concurrency N` (default 32),\n\
         `--warmup-secs N` (default 2), `--timeout-ms N` (per request, default 5000),\n\
         `--out FILE` (omit to only print the report).\n\
         \n\
         ## Machine of the latest run\n\
         \n\
         | | |\n\
         |---|---|\n\
         | date | {date} |\n\
         | CPUs (`nproc`) | {cpus} |\n\
         | CPU | {cpu} |\n\
         | memory | {memory} |\n\
         | OS | {os}, Linux {kernel} |\n\
         \n\
         The load generator runs in the same process as the servers it measures and shares\n\
         these {cpus} CPUs with them: every request costs client CPU that the server cannot\n\
         use. Absolute figures are therefore a floor for what the server alone would do;\n\
         compare the ratios between rows of one run, not figures across machines. Each section\n\
         is one run: run it two or three times before reading anything into a difference of a\n\
         few per cent.\n",
        cpus = machine.cpus,
        cpu = machine.cpu_model,
        memory = machine.memory,
        os = machine.os,
        kernel = machine.kernel,
    )
}

/// Replaces the preamble and the section headed `heading` in `path` (appending the section
/// when it is new), keeping every other `## ` section.
pub fn update_file(path: &Path, preamble: &str, heading: &str, section: &str) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    std::fs::write(path, merge(&existing, preamble, heading, section))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The preamble's own `## ` subsections are recognised by their headings, so they are not
/// mistaken for other benchmarks' sections.
const PREAMBLE_HEADINGS: [&str; 2] = ["## How to reproduce", "## Machine of the latest run"];

fn merge(existing: &str, preamble: &str, heading: &str, section: &str) -> String {
    // Split into `## ` sections; whatever precedes the first one is the old preamble.
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut in_fence = false;
    for line in existing.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && line.starts_with("## ") {
            sections.push((line.trim_end().to_owned(), String::new()));
        }
        if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    sections.retain(|(h, _)| !PREAMBLE_HEADINGS.contains(&h.as_str()));

    let ours = format!("{}\n", section.trim_end());
    match sections.iter_mut().find(|(h, _)| h == heading) {
        Some((_, body)) => *body = ours,
        None => sections.push((heading.to_owned(), ours)),
    }
    let mut out = format!("{}\n", preamble.trim_end());
    for (_, body) in sections {
        out.push('\n');
        out.push_str(body.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_only_its_own_section() {
        let old = "# Benchmarks\nold preamble\n## How to reproduce\nx\n## Other\nkeep me\n```\n## not a heading\n```\n## Mine\nold figures\n";
        let merged = merge(old, "# Benchmarks\nnew preamble\n", "## Mine", "## Mine\nnew figures\n");
        assert_eq!(
            merged,
            "# Benchmarks\nnew preamble\n\n## Other\nkeep me\n```\n## not a heading\n```\n\n## Mine\nnew figures\n"
        );
        let fresh = merge("", "# B\n", "## Mine", "## Mine\nfigures");
        assert_eq!(fresh, "# B\n\n## Mine\nfigures\n");
    }

    #[test]
    fn date_is_formatted() {
        let date = utc_now();
        assert!(date.ends_with(" UTC") && date.len() == 20, "{date}");
    }
}
