//! The live-latency benchmark (issue 17), a part of the `scale` binary: deal changes arrive
//! open-loop at a fixed rate, round-robin over many portals, and each is timed from its
//! scheduled moment (not from when the driver got to it, so a stall counts against us)
//! until the `WatchFunnel` stream of its company shows it. Reported per second of the run
//! and overall, so a backlog that builds up shows as rising percentiles.
//!
//! Two kinds of change: stage moves of existing deals (the common change; the funnel moves
//! on the webhook's value) and creations (the webhook carries no values: each new deal is
//! re-read within the portal's request budget first).

use super::Running;
use anyhow::{Context as _, Result};
use gomark_platform::Caller;
use gomark_proto::pipeline_tracker::v1::GetFunnelRequest;
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_client::PipelineTrackerServiceClient;
use serde_json::json;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The driver's tick: changes arrive in bursts, one per tick, each made and timed at the
/// tick's planned moment (so a late driver counts against us).
const TICK: Duration = Duration::from_millis(10);
/// How long stragglers are waited for after the last deal.
const DRAIN: Duration = Duration::from_secs(60);
/// Where deals are created, and where a move takes them.
const FROM_STAGE: &str = "appointmentscheduled";
const TO_STAGE: &str = "qualifiedtobuy";

/// What the driver does to a portal at each scheduled moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Moves one of the portal's deals from the first stage to the second.
    Moves,
    /// Creates a deal.
    Creations,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Moves => "stage moves",
            Self::Creations => "creations",
        }
    }

    /// The funnel figure one change of this kind raises by one.
    fn shown(self, funnel: &gomark_proto::pipeline_tracker::v1::Funnel) -> u64 {
        match self {
            Self::Creations => funnel.open_count,
            Self::Moves => funnel.stages.iter().find(|s| s.stage_id == TO_STAGE).map_or(0, |s| s.deal_count),
        }
    }
}

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
pub async fn run(label: &str, running: Running, portals: usize, rate: u32, secs: u64, kind: Kind) -> Result<Figures> {
    let Running { api, tracker, sim, stop, .. } = running;
    let channel = gomark_platform::grpc_client::channel(&format!("http://{tracker}"), Duration::from_secs(30))?;
    let client = PipelineTrackerServiceClient::new(channel);
    let mut tokens = Vec::with_capacity(portals);
    let mut companies: Vec<Arc<Mutex<Company>>> = Vec::with_capacity(portals);
    let mut watchers = Vec::with_capacity(portals);
    // For moves: each portal's deals, created and shown in the funnel before the clock starts.
    let total = u64::from(rate) * secs;
    let per_portal = if kind == Kind::Moves { usize::try_from(total)?.div_ceil(portals) } else { 0 };
    let mut deals: Vec<Vec<String>> = Vec::with_capacity(portals);
    let mut company_ids = Vec::with_capacity(portals);
    for i in 0..portals {
        let token = format!("live-token-{i}");
        let portal = 80_000 + i as u64;
        sim.register_portal(&token, portal);
        let body = json!({"name": format!("Live {i}"), "hubspotPortalId": portal.to_string(), "hubspotToken": token});
        let created = api.call(reqwest::Method::POST, "/v1/companies", Some(body)).await?;
        let company_id = created["id"].as_str().context("company id")?.to_owned();
        company_ids.push(company_id.clone());
        let request = GetFunnelRequest { company_id, ..Default::default() };
        let mut stream = client.clone().watch_funnel(Caller::system("bench").request(request)).await?.into_inner();
        let first = stream.message().await?.context("stream ended")?;
        let base = kind.shown(&first);
        deals.push(sim.create_deals(&token, per_portal, FROM_STAGE, "default"));
        let company = Arc::new(Mutex::new(Company::default()));
        companies.push(company.clone());
        tokens.push(token);
        watchers.push(tokio::spawn(async move {
            while let Ok(Some(funnel)) = stream.message().await {
                let now = Instant::now();
                let shown = usize::try_from(kind.shown(&funnel).saturating_sub(base)).unwrap_or(0);
                let mut c = company.lock().unwrap_or_else(|e| e.into_inner());
                let upto = shown.min(c.scheduled.len());
                for j in c.seen.len()..upto {
                    let at = c.scheduled[j];
                    c.seen.push((at, now.saturating_duration_since(at)));
                }
            }
        }));
    }

    if kind == Kind::Moves {
        wait_until_listed(&client, &company_ids, per_portal).await?;
    }

    // Open loop: changes are due at fixed moments whatever the system does.
    let started = Instant::now();
    let mut created: u64 = 0;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut ticks: u32 = 0;
    while created < total {
        ticker.tick().await;
        // Change k is due at k / rate; a tick makes those due by its planned moment (the one
        // due at 0 included), timed from that moment. Timed from k / rate instead, each change
        // waited for its tick (up to 10 ms, 5 on average at 2,000 a second), counted as latency.
        let moment = TICK * ticks;
        ticks += 1;
        let due = ((moment.as_secs_f64() * f64::from(rate)) as u64 + 1).min(total);
        while created < due {
            let scheduled = started + moment;
            let i = (created % portals as u64) as usize;
            let mut company = companies[i].lock().unwrap_or_else(|e| e.into_inner());
            let nth = company.scheduled.len();
            company.scheduled.push(scheduled);
            drop(company);
            match kind {
                Kind::Creations => {
                    sim.create_deals(&tokens[i], 1, FROM_STAGE, "default");
                }
                Kind::Moves => {
                    let deal = deals[i].get(nth).context("a deal to move")?;
                    sim.update_deal(&tokens[i], deal, [("dealstage", TO_STAGE)]).map_err(anyhow::Error::msg)?;
                }
            }
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

/// Waits until every portal's funnel shows its `per_portal` deals in the first stage.
async fn wait_until_listed(
    client: &PipelineTrackerServiceClient<gomark_platform::grpc_client::TracedChannel>,
    ids: &[String],
    per_portal: usize,
) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(300);
    for id in ids {
        loop {
            let request = GetFunnelRequest { company_id: id.clone(), ..Default::default() };
            let funnel = client.clone().get_funnel(Caller::system("bench").request(request)).await?.into_inner();
            let listed = funnel.stages.iter().find(|s| s.stage_id == FROM_STAGE).map_or(0, |s| s.deal_count);
            if listed >= per_portal as u64 {
                break;
            }
            anyhow::ensure!(Instant::now() < until, "company {id}: {listed} of {per_portal} deals listed after 300 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
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
