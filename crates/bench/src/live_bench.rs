//! The live-latency benchmark (issue 17), a part of the `scale` binary: deal changes arrive
//! open-loop at a fixed rate, round-robin over many portals, and each is timed from its
//! scheduled moment (not from when the driver got to it, so a stall counts against us)
//! until the `WatchFunnel` stream of its company shows it. Reported per second of the run
//! and overall, so a backlog that builds up shows as rising percentiles.

use super::Running;
use anyhow::{Context as _, Result};
use gomark_platform::Caller;
use gomark_proto::pipeline_tracker::v1::GetFunnelRequest;
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_client::PipelineTrackerServiceClient;
use serde_json::json;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The driver's tick: each creates the deals scheduled within it.
const TICK: Duration = Duration::from_millis(10);
/// How long stragglers are waited for after the last deal.
const DRAIN: Duration = Duration::from_secs(60);

/// What one company's stream has to match: the scheduled moment of each deal created in it,
/// in order, and the latency of each seen so far.
#[derive(Default)]
struct Company {
    scheduled: Vec<Instant>,
    seen: Vec<(Instant, Duration)>,
}

pub struct Figures {
    pub row: String,
    pub per_second: String,
    pub p99: Duration,
}

/// The nearest-rank percentile of sorted durations (zero when there are none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `rate` deal changes a second over `portals` portals for `secs` seconds.
pub async fn run(label: &str, running: Running, portals: usize, rate: u32, secs: u64) -> Result<Figures> {
    let Running { api, tracker, sim, stop, .. } = running;
    let channel = gomark_platform::grpc_client::channel(&format!("http://{tracker}"), Duration::from_secs(30))?;
    let client = PipelineTrackerServiceClient::new(channel);
    let mut tokens = Vec::with_capacity(portals);
    let mut companies: Vec<Arc<Mutex<Company>>> = Vec::with_capacity(portals);
    let mut watchers = Vec::with_capacity(portals);
    for i in 0..portals {
        let token = format!("live-token-{i}");
        let portal = 80_000 + i as u64;
        sim.register_portal(&token, portal);
        let body = json!({"name": format!("Live {i}"), "hubspotPortalId": portal.to_string(), "hubspotToken": token});
        let created = api.call(reqwest::Method::POST, "/v1/companies", Some(body)).await?;
        let company_id = created["id"].as_str().context("company id")?.to_owned();
        let request = GetFunnelRequest { company_id, ..Default::default() };
        let mut stream = client.clone().watch_funnel(Caller::system("bench").request(request)).await?.into_inner();
        let first = stream.message().await?.context("stream ended")?;
        let base = first.open_count;
        let company = Arc::new(Mutex::new(Company::default()));
        companies.push(company.clone());
        tokens.push(token);
        watchers.push(tokio::spawn(async move {
            while let Ok(Some(funnel)) = stream.message().await {
                let now = Instant::now();
                let shown = usize::try_from(funnel.open_count.saturating_sub(base)).unwrap_or(0);
                let mut c = company.lock().unwrap_or_else(|e| e.into_inner());
                let upto = shown.min(c.scheduled.len());
                for j in c.seen.len()..upto {
                    let at = c.scheduled[j];
                    c.seen.push((at, now.saturating_duration_since(at)));
                }
            }
        }));
    }

    // Open loop: deals are due at fixed moments whatever the system does.
    let total = u64::from(rate) * secs;
    let started = Instant::now();
    let mut created: u64 = 0;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while created < total {
        ticker.tick().await;
        let elapsed = started.elapsed();
        // Deal k is due at k / rate: those due by now, including the one due at 0.
        let due = ((elapsed.as_secs_f64() * f64::from(rate)) as u64 + 1).min(total);
        while created < due {
            let scheduled = started + Duration::from_secs_f64(created as f64 / f64::from(rate));
            let i = (created % portals as u64) as usize;
            companies[i].lock().unwrap_or_else(|e| e.into_inner()).scheduled.push(scheduled);
            sim.create_deals(&tokens[i], 1, "appointmentscheduled", "default");
            created += 1;
        }
    }
    let drive_wall = started.elapsed();

    let drain_until = Instant::now() + DRAIN;
    loop {
        let seen: usize = companies.iter().map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).seen.len()).sum();
        if seen as u64 >= total || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in &watchers {
        w.abort();
    }
    stop().await?;

    let mut all: Vec<(Instant, Duration)> = Vec::new();
    for c in &companies {
        all.extend(c.lock().unwrap_or_else(|e| e.into_inner()).seen.iter().copied());
    }
    let missed = total - all.len() as u64;
    let mut per_second = String::new();
    for second in 0..secs {
        let mut in_second: Vec<Duration> = all
            .iter()
            .filter(|(at, _)| at.saturating_duration_since(started).as_secs() == second)
            .map(|(_, d)| *d)
            .collect();
        in_second.sort();
        let _ = writeln!(
            per_second,
            "| {label} | {second} | {} | {} | {} | {} |",
            in_second.len(),
            ms(percentile(&in_second, 50.0)),
            ms(percentile(&in_second, 99.0)),
            ms(in_second.last().copied().unwrap_or_default())
        );
    }
    let mut latencies: Vec<Duration> = all.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let p99 = percentile(&latencies, 99.0);
    let achieved = total as f64 / drive_wall.as_secs_f64();
    let row = format!(
        "| {label} | {portals} | {rate}/s ({achieved:.0}/s driven) | {total} | {missed} | **{}** | {} | **{}** | {} |\n",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(p99),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    Ok(Figures { row, per_second, p99 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }
}
