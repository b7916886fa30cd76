//! Upsell scoring benchmark, written into its section of BENCHMARKS.md: one company's
//! 100,000 customers streamed from their deals, grouped, scored and ranked by a
//! five-criterion rule, and the dry run over them (guardrails included), in customers per
//! second and peak resident memory, next to a plain sort of as many scores measured in the
//! same run. The last row is the service's whole dry run: the deals streamed back from
//! SQLite, opt-outs, last touches and running enrollments read from the Upso simulator,
//! nothing sent.

// Shared with the gateway benchmark, which uses the rest of it.
#[allow(dead_code)]
#[path = "../report.rs"]
mod report;

use anyhow::{Context as _, Result};
use clap::Parser;
use gomark_events::relay::RelayWaker;
use gomark_upso_cadence::cadences::Cadences;
use gomark_upso_cadence::credentials::Vault;
use gomark_upso_cadence::engine::Engine;
use gomark_upso_cadence::guardrails::{self, GuardFacts};
use gomark_upso_cadence::outreach::{OutreachVendor, UpsoVendor};
use gomark_upso_cadence::rules;
use gomark_upso_cadence::store::{CustomerDeal, OutreachConfig, Store};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Upsell scoring and dry-run benchmark")]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    customers: usize,
    /// Timed repetitions of each in-memory measurement; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Write the section into this file (omit to only print it).
    #[arg(long)]
    out: Option<PathBuf>,
}

const DAY_MS: i64 = 24 * 3600 * 1000;
const COMPANY: &str = "bench-co";
const TOKEN: &str = "bench-upso-token";

/// A small deterministic generator, so every run scores the same portfolio.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config() -> Result<OutreachConfig> {
    let json = serde_json::json!({
        "cadences": [{"key": "upsell", "name": "Upsell", "steps": [
            {"type": "auto_email", "delayHours": 0, "subject": "A gift", "body": "Hi {{firstName}}"}]}],
        "upsellRules": [{
            "key": "default", "cadence": "upsell", "minScore": 20, "maxPerRun": 500,
            "closedWonDaysAgo": {"min": 7, "max": 180},
            "scoring": [
                {"property": "amount", "op": "linear", "points": 0.001, "maxPoints": 50, "why": "contract size"},
                {"property": "gomark_product_usage", "op": "gte", "value": 0.8, "points": 30, "why": "heavy usage"},
                {"property": "gomark_renewal_date", "op": "withinDaysAhead", "value": 90, "points": 20, "why": "renewal soon"},
                {"property": "gomark_customer_tier", "op": "in", "value": ["gold", "silver"], "points": 10},
                {"property": "hubspot_owner_id", "op": "eq", "value": "7", "points": 5}
            ],
            "guardrails": {"minDaysSinceLastTouch": 14, "mailboxDailyCap": 200, "companyDailyCap": 400,
                           "quietHours": {"start": "22:00", "end": "06:00"}}
        }],
        "suppressionList": ["@competitor.example"]
    });
    OutreachConfig::parse(&json.to_string()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The company's deals, generated one at a time (the benchmark never holds them all: the
/// service streams them from its database the same way).
fn deals(n: usize, now: i64) -> impl Iterator<Item = CustomerDeal> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let tiers = ["gold", "silver", "bronze"];
    (0..n).map(move |i| {
        let mut properties = BTreeMap::new();
        properties.insert("gomark_contact_email".to_owned(), format!("c{i}@customer.example"));
        properties.insert("gomark_product_usage".to_owned(), format!("{:.2}", rng.below(100) as f64 / 100.0));
        properties.insert("gomark_renewal_date".to_owned(), (now + rng.below(365) as i64 * DAY_MS).to_string());
        properties.insert("gomark_customer_tier".to_owned(), tiers[rng.below(3) as usize].to_owned());
        CustomerDeal {
            deal_id: i.to_string(),
            email: format!("c{i}@customer.example"),
            deal_name: format!("Deal {i}"),
            // One in ten still open, so the open-deal guardrail has work.
            stage: if rng.below(10) == 0 { "appointmentscheduled".into() } else { "closedwon".into() },
            amount: Some(rng.below(100_000) as f64),
            close_date_ms: now - rng.below(200) as i64 * DAY_MS,
            owner_id: rng.below(10).to_string(),
            properties,
            last_modified_ms: now,
        }
    })
}

/// Customers grouped from streamed deals (ordered by email, as the store yields them),
/// each scored as it completes and then kept slim, as the engine does.
fn stream_rank(
    deals: impl Iterator<Item = CustomerDeal>,
    rule: &gtm_config::UpsellRule,
    now: i64,
) -> (Vec<rules::Customer>, Vec<rules::Scored>) {
    let mut grouper = rules::Grouper::default();
    let (mut customers, mut ranked) = (Vec::new(), Vec::new());
    let mut keep = |mut c: rules::Customer| {
        ranked.push(rules::score(rule, &c, customers.len(), now));
        c.slim();
        customers.push(c);
    };
    for d in deals {
        if let Some(c) = grouper.push(d, rule) {
            keep(c);
        }
    }
    if let Some(c) = grouper.finish(rule) {
        keep(c);
    }
    rules::sort_ranked(&mut ranked, &customers);
    (customers, ranked)
}

/// Peak resident memory (kB) since the last [`reset_peak_rss`], from /proc (Linux).
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Starts a new peak (writing 5 to clear_refs resets VmHWM to the current RSS).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(|| "n/a".into(), |kb| format!("{:.0} MiB", kb as f64 / 1024.0))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        // The previous result goes first, so two never coexist (peak memory is one run's).
        drop(last.take());
        let start = Instant::now();
        let out = std::hint::black_box(f());
        times.push(start.elapsed());
        last = Some(out);
    }
    (median(times), last.unwrap_or_else(f))
}

fn row(what: &str, n: usize, t: Duration, baseline: Duration, peak_kb: Option<u64>) -> String {
    let rate = n as f64 / t.as_secs_f64();
    format!(
        "| {what} | {n} | {:.1} ms | **{:.0} customers/s** | {:.1}× | {} |\n",
        t.as_secs_f64() * 1000.0,
        rate,
        t.as_secs_f64() / baseline.as_secs_f64(),
        mib(peak_kb)
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    gomark_platform::allocator::configure();
    let args = Args::parse();
    let machine = report::Machine::detect();
    let date = report::utc_now();
    // Noon UTC today: outside the rule's quiet hours (22:00–06:00 UTC) whenever it runs.
    let now = chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS + DAY_MS / 2;
    let config = config()?;
    let rule = config.upsell_rules.first().context("a rule")?.clone();

    // Baseline: sorting as many scores as there are customers, nothing else.
    reset_peak_rss();
    let mut rng = XorShift(42);
    let raw: Vec<f64> = (0..args.customers).map(|_| rng.below(1_000_000) as f64 / 7.0).collect();
    let (sort, _) = timed(args.runs, || {
        let mut v = raw.clone();
        v.sort_by(|a, b| b.total_cmp(a));
        v
    });
    drop(raw);
    let sort_peak = peak_rss_kb();
    reset_peak_rss();
    let (rank, (customers, ranked)) = timed(args.runs, || stream_rank(deals(args.customers, now), &rule, now));
    assert_eq!(ranked.len(), args.customers);
    drop((customers, ranked));
    let rank_peak = peak_rss_kb();
    let facts = GuardFacts {
        running: (0..args.customers).step_by(100).map(|i| format!("c{i}@customer.example")).collect(),
        opted_out: (0..args.customers).step_by(97).map(|i| format!("c{i}@customer.example")).collect::<HashSet<_>>(),
        suppression_list: config.suppression_list.clone(),
        last_touch: (0..args.customers)
            .step_by(20)
            .map(|i| (format!("c{i}@customer.example"), now - DAY_MS))
            .collect::<HashMap<_, _>>(),
        mailboxes: vec![("mbx_1".into(), 0), ("mbx_2".into(), 0)],
        ..GuardFacts::default()
    };
    reset_peak_rss();
    let (dry, would_enroll) = timed(args.runs, || {
        let (customers, ranked) = stream_rank(deals(args.customers, now), &rule, now);
        let mut f = facts.clone();
        let decisions = guardrails::decide(&rule, &customers, ranked, &mut f, now);
        decisions.iter().filter(|d| matches!(d.outcome, guardrails::Outcome::Enroll { .. })).count()
    });
    let dry_peak = peak_rss_kb();
    assert!(would_enroll > 0, "the dry run should enroll somebody");
    drop(facts);

    // The service's whole dry run: SQLite read, Upso reads, scoring, guardrails.
    let (sim, addr) =
        upso_sim::spawn(upso_sim::SimConfig { rate_limit: 100_000, ..Default::default() }, "127.0.0.1:0".parse()?)
            .await?;
    sim.register_account(TOKEN, "Bench Co");
    let dir = tempfile::tempdir()?;
    let db = gomark_storage::Database::connect(&gomark_storage::DatabaseSettings {
        url: gomark_platform::settings::Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("upso.db").display()
        )),
        schema: "main".into(),
        max_connections: 4,
        acquire_timeout_secs: 30,
    })
    .await?;
    db.migrate(&gomark_upso_cadence::MIGRATIONS).await?;
    let store = Store::new(db.clone(), Arc::new(Vault::from_setting(&Vault::generate_setting("b"))?));
    let client = upso_client::UpsoClient::new(upso_client::ClientConfig {
        base_url: format!("http://{addr}"),
        ..Default::default()
    })?;
    let vendor: Arc<dyn OutreachVendor> = Arc::new(UpsoVendor::new(client));
    let token = upso_client::UpsoToken::new(TOKEN);
    store.save_account(COMPANY, &vendor.account_id(&token).await?, &token).await?;
    let cadences = Cadences::new(store.clone(), vendor.clone());
    cadences.apply(COMPANY, &config, 1, None).await?;
    let mut tx = db.begin().await?;
    for d in deals(args.customers, now) {
        store.upsert_customer_deal(&mut tx, COMPANY, &d).await?;
    }
    tx.commit().await?;
    let engine = Engine::new(store, vendor, cadences, RelayWaker::default());
    let mut times = Vec::new();
    let mut report = None;
    reset_peak_rss();
    for _ in 0..args.runs.clamp(1, 3) {
        drop(report.take());
        let start = Instant::now();
        report = Some(engine.run(COMPANY, true, now).await?);
        times.push(start.elapsed());
    }
    let service = median(times);
    let report = report.context("a dry run")?;
    let service_peak = peak_rss_kb();
    assert_eq!(report.scored as usize, args.customers);
    assert!(sim.enrollments(TOKEN).is_empty(), "a dry run enrolls nobody");

    let n = args.customers;
    let heading = "## Upsell scoring and dry run (issues 7 and 20)";
    let section = format!(
        "{heading}\n\nRun {date} on {cpus} CPUs ({cpu}), {mem}, {os} with `cargo run --release -p gomark-bench --bin upsell -- \
         --customers {n} --runs {runs} --out BENCHMARKS.md`.\n\n\
         One company, {n} customers (one deal each, one in ten still open), scored by a five-criterion rule (linear amount, \
         usage threshold, renewal within 90 days, tier, owner). Deals are streamed (generated one at a time in memory, read \
         one at a time from SQLite by the service), grouped into customers, scored as each completes, and kept slim. \
         In-memory rows are the median of {runs} runs; the baseline \
         is a plain descending sort of {n} `f64` scores in the same run, and `× baseline` is each row's time over it. \
         `peak RSS` is the process's peak resident memory during the row (VmHWM, reset before each row). The \
         dry run adds the guardrails (1% running, 1% opted out, 5% touched in the last 14 days, quiet hours, caps): \
         {would_enroll} would be enrolled (500 per run at most, 200 a day per mailbox, two mailboxes, 400 a day for the \
         company). The service row is \
         `Engine::run(dry_run)` on SQLite and the Upso simulator, median of {service_runs}.\n\n\
         | what | customers | time | rate | × baseline | peak RSS |\n|---|---:|---:|---:|---:|---:|\n{r0}{r1}{r2}{r3}\n",
        cpus = machine.cpus,
        cpu = machine.cpu_model,
        mem = machine.memory,
        os = machine.os,
        runs = args.runs,
        service_runs = args.runs.clamp(1, 3),
        r0 = row("baseline: sort of the scores", n, sort, sort, sort_peak),
        r1 = row("stream deals: group, score and rank", n, rank, sort, rank_peak),
        r2 = row("dry run, in memory (stream, rank, guardrails)", n, dry, sort, dry_peak),
        r3 = row("dry run, the service (SQLite stream + Upso reads)", n, service, sort, service_peak),
    );
    println!("{section}");
    if let Some(path) = args.out {
        write_section(&path, heading, &section)?;
    }
    Ok(())
}

/// Replaces (or appends) the section under `heading`, leaving the rest of the file alone.
fn write_section(path: &std::path::Path, heading: &str, section: &str) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match existing.find(heading) {
        Some(at) => {
            let rest = &existing[at + heading.len()..];
            let end = rest.find("\n## ").map_or(existing.len(), |e| at + heading.len() + e + 1);
            format!("{}{section}{}", &existing[..at], &existing[end..])
        }
        None => format!("{}\n\n{section}", existing.trim_end()),
    };
    std::fs::write(path, updated).with_context(|| format!("cannot write {}", path.display()))
}
