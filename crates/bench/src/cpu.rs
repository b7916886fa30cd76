//! Who used the CPUs during a measurement: this process or others. On a shared machine a
//! concurrent compile can take half the cores, and a figure measured then is not comparable;
//! the report says so instead of hiding it.

/// Cumulative CPU counters, in clock ticks (Linux `/proc`); `None` elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    busy: u64,
    total: u64,
    own: u64,
}

impl Snapshot {
    pub fn take() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let f: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let [user, nice, system, idle, iowait, irq, softirq, steal] = *f.get(..8)? else { return None };
        let busy = user + nice + system + irq + softirq + steal;
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces): state is field 3, so utime
        // (field 14) and stime (field 15) are at indexes 11 and 12.
        let rest: Vec<&str> = own_stat.rsplit_once(')')?.1.split_whitespace().collect();
        let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        Some(Self { busy, total: busy + idle + iowait, own })
    }
}

/// Average cores used between two snapshots, by this process and by everything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub own_cores: f64,
    pub other_cores: f64,
}

pub fn usage(before: Snapshot, after: Snapshot, cpus: usize) -> Option<Usage> {
    let total = after.total.checked_sub(before.total).filter(|t| *t > 0)? as f64;
    let busy = after.busy.saturating_sub(before.busy) as f64;
    let own = after.own.saturating_sub(before.own) as f64;
    // Ticks over all CPUs map to cores by the share of the total; no clock-tick rate needed.
    let cores = |ticks: f64| ticks / total * cpus as f64;
    Some(Usage { own_cores: cores(own), other_cores: cores((busy - own).max(0.0)) })
}
