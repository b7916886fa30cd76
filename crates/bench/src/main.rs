//! `gomark-bench`: throughput and latency of GoMark's gateway reads, measured next to a bare
//! axum handler in the same process, the same run and on the same machine, so the gap between
//! them is the cost of the gateway's stack (auth, rate limit, gRPC to the orchestrator, cache
//! or SQLite) rather than of the machine or the load generator.
//!
//! It starts an embedded GoMark on a temporary data folder, declares a company with 20 deal
//! properties, waits until HubSpot (the simulator) has applied them, then loads one target after
//! another with a closed-loop client and prints a markdown report, optionally written into
//! BENCHMARKS.md (`--out`). The funnel read is of a pipeline with 200 deals, cached by
//! pipeline-tracker until the next deal event.

mod cpu;
mod load;
mod report;

use anyhow::{Context as _, Result, bail, ensure};
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use load::{LoadConfig, Outcome, Target};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const SECTION_HEADING: &str = "## Gateway reads (issue 3)";
const PROPERTY_COUNT: usize = 20;
const PORTAL_ID: u64 = 123;
const PORTAL_TOKEN: &str = "bench-token";
/// Deals in the benchmark company's funnel.
const DEAL_COUNT: usize = 200;
/// High enough that the gateway's per-key limit never answers 429 during a run; the limiter
/// still counts every request, so its cost stays in the figures.
const RATE_LIMIT_PER_MINUTE: u64 = 1_000_000_000;
/// Bounds setup calls and the wait for shutdown.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Other processes using more than this many cores during a measurement disturb it.
const DISTURBED_CORES: f64 = 0.1;
const SYNC_WAIT: Duration = Duration::from_secs(60);
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(version, about = "Gateway read benchmark: GoMark's REST reads next to a bare axum handler")]
struct Args {
    /// Seconds each target is measured, after its warmup.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_secs: u64,
    /// Closed-loop client tasks, each with its own keep-alive connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Seconds of load before measuring each target: connections open, caches and SQLite warm.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup_secs: u64,
    /// Deadline of each request (and connect) of the load generator.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    timeout_ms: u64,
    /// Write the report into this markdown file (replacing only its own section).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A measured row of the report.
struct Row {
    name: &'static str,
    route: String,
    body_bytes: usize,
    outcome: Outcome,
}

#[tokio::main]
async fn main() -> Result<()> {
    gomark_platform::allocator::configure();
    let args = Args::parse();
    let data_dir = tempfile::tempdir().context("cannot create a temporary data folder")?;
    let shutdown = Shutdown::new();
    // Ctrl-C ends the servers; the load workers end on their own by their deadline.
    shutdown.trigger_on_signal();

    let embedded = Embedded::start(
        EmbeddedOptions {
            data_dir: data_dir.path().to_owned(),
            port: 0,
            demo: false,
            rate_limit_per_minute: RATE_LIMIT_PER_MINUTE,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .context("cannot start the embedded GoMark")?;

    let result = benchmark(&args, &embedded, &shutdown).await;

    // Always stop and drain, also after a failed run, so the process exits cleanly.
    shutdown.trigger();
    match tokio::time::timeout(SHUTDOWN_WAIT, embedded.wait()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => eprintln!("gomark-bench: a service failed while stopping: {err:#}"),
        Err(_) => eprintln!("gomark-bench: services did not stop within {SHUTDOWN_WAIT:?}"),
    }
    result
}

async fn benchmark(args: &Args, embedded: &Embedded, shutdown: &Shutdown) -> Result<()> {
    let machine = report::Machine::detect();
    let date = report::utc_now();
    eprintln!(
        "gomark-bench: {} CPUs ({}), {}, {}; gateway at {}",
        machine.cpus, machine.cpu_model, machine.memory, machine.os, embedded.gateway_url
    );

    let api = Api::new(embedded)?;
    let setup = api.setup(embedded).await?;

    // The bare handler answers the very bytes the property list answers, serialised per
    // request as the gateway does, so both rows move the same payload.
    let (bare_url, bare_server) = start_bare_server(setup.property_list.clone(), shutdown.clone()).await?;

    let config = LoadConfig {
        concurrency: usize::try_from(args.concurrency)?,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        request_timeout: Duration::from_millis(args.timeout_ms),
    };
    let gateway = &embedded.gateway_url;
    let company = &setup.company_id;
    let bearer = Some(setup.viewer_key.clone());
    let targets = [
        ("bare axum handler", "GET /items".to_owned(), Target { url: format!("{bare_url}/items"), bearer: None }),
        // Not asked for by the issue, but it splits the gap: the gateway's middleware stack
        // (request id, telemetry, timeout, headers) without auth, rate limit or backend call.
        (
            "gateway /healthz (middleware only)",
            "GET /healthz".to_owned(),
            Target { url: format!("{gateway}/healthz"), bearer: None },
        ),
        (
            "property list",
            "GET /v1/companies/{id}/deal-properties".to_owned(),
            Target { url: format!("{gateway}/v1/companies/{company}/deal-properties"), bearer: bearer.clone() },
        ),
        (
            "funnel read (cached)",
            "GET /v1/companies/{id}/funnels/default".to_owned(),
            Target { url: format!("{gateway}/v1/companies/{company}/funnels/default"), bearer: bearer.clone() },
        ),
        (
            "company read (uncached)",
            "GET /v1/companies/{id}".to_owned(),
            Target { url: format!("{gateway}/v1/companies/{company}"), bearer },
        ),
    ];

    let mut rows = Vec::new();
    for (name, route, target) in targets {
        // One request first: it proves the target answers 200 before any load (and fills the
        // property-list cache), and gives the body size for the report.
        let body_bytes = api.probe(&target).await.with_context(|| format!("{name} does not answer"))?;
        eprintln!(
            "gomark-bench: {name}: {}s warmup + {}s at concurrency {}",
            args.warmup_secs, args.duration_secs, args.concurrency
        );
        let outcome = load::run(&target, config, machine.cpus).await?;
        eprintln!("gomark-bench: {name}: {:.0} req/s, {} errors", outcome.rate(), outcome.errors());
        rows.push(Row { name, route, body_bytes, outcome });
    }

    shutdown.trigger();
    bare_server.await.context("the bare server task panicked")??;

    let command = command_line(args);
    let section = render_section(&rows, args, &date, &machine, &command);
    println!("{section}");
    if let Some(out) = &args.out {
        report::update_file(out, &report::preamble(&machine, &date, &command), SECTION_HEADING, &section)?;
        eprintln!("gomark-bench: wrote {}", out.display());
    }
    Ok(())
}

/// What the load needs from setup.
struct Setup {
    company_id: String,
    viewer_key: String,
    /// The property list exactly as the gateway answers it.
    property_list: Value,
}

/// The gateway's REST API, for setup; every call has a deadline.
struct Api {
    client: reqwest::Client,
    base: String,
    admin_key: String,
}

impl Api {
    fn new(embedded: &Embedded) -> Result<Self> {
        let admin_key = embedded.admin_api_key.clone().context("no admin key: the data folder was not fresh")?;
        let client = reqwest::Client::builder().timeout(SETUP_TIMEOUT).build()?;
        Ok(Self { client, base: embedded.gateway_url.clone(), admin_key })
    }

    async fn call(&self, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> Result<Value> {
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("{method} {path}: reading the body"))?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }

    async fn setup(&self, embedded: &Embedded) -> Result<Setup> {
        use reqwest::Method;
        let admin = self.admin_key.as_str();
        // The company's token must name a portal the simulator knows, or sync would fail.
        embedded.hubspot_sim.register_portal(PORTAL_TOKEN, PORTAL_ID);
        let company = self
            .call(
                Method::POST,
                "/v1/companies",
                admin,
                Some(
                    json!({"name": "Bench Co", "hubspotPortalId": PORTAL_ID.to_string(), "hubspotToken": PORTAL_TOKEN}),
                ),
            )
            .await?;
        let company_id = company.get("id").and_then(Value::as_str).context("company without id")?.to_owned();
        let properties = format!("/v1/companies/{company_id}/deal-properties");
        for i in 1..=PROPERTY_COUNT {
            let property = json!({
                "name": format!("gomark_p{i:02}"),
                "label": format!("P {i:02}"),
                "type": "string",
                "fieldType": "text",
                "groupName": "dealinformation",
            });
            self.call(Method::POST, &properties, admin, Some(property)).await?;
        }

        // Wait until every property is applied: until then hubspot-sync's confirmations
        // invalidate the cached list, and the "cached" read would partly measure SQLite.
        let deadline = tokio::time::Instant::now() + SYNC_WAIT;
        loop {
            let list = self.call(Method::GET, &properties, admin, None).await?;
            let items = list.get("items").and_then(Value::as_array).context("property list without items")?;
            let states: Vec<&str> =
                items.iter().filter_map(|p| p.pointer("/sync/state").and_then(Value::as_str)).collect();
            if let Some(failed) =
                items.iter().find(|p| p.pointer("/sync/state").and_then(Value::as_str) == Some("failed"))
            {
                bail!("a property failed to sync: {failed}");
            }
            if items.len() == PROPERTY_COUNT && states.iter().all(|s| *s == "applied") {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "properties not applied within {SYNC_WAIT:?}: {} of {} applied",
                states.iter().filter(|s| **s == "applied").count(),
                PROPERTY_COUNT
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A funnel with something in it: deals made in HubSpot, followed until pipeline-tracker
        // counts them all.
        embedded.hubspot_sim.create_deals(PORTAL_TOKEN, DEAL_COUNT, "appointmentscheduled", "default");
        let funnel = format!("/v1/companies/{company_id}/funnels/default");
        loop {
            let f = self.call(Method::GET, &funnel, admin, None).await?;
            if f.get("openCount").and_then(Value::as_u64) == Some(DEAL_COUNT as u64) {
                break;
            }
            ensure!(tokio::time::Instant::now() < deadline, "the funnel did not reach {DEAL_COUNT} deals: {f}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A portfolio-wide viewer key of its own: the load reads with the least privilege a
        // reader needs, and its rate-limit counter is not shared with setup.
        let key =
            self.call(Method::POST, "/v1/api-keys", admin, Some(json!({"name": "bench", "role": "viewer"}))).await?;
        let viewer_key = key.get("key").and_then(Value::as_str).context("api key without key")?.to_owned();
        let property_list = self.call(Method::GET, &properties, &viewer_key, None).await?;
        Ok(Setup { company_id, viewer_key, property_list })
    }

    /// One GET of `target`; its body size on success.
    async fn probe(&self, target: &Target) -> Result<usize> {
        let mut request = self.client.get(&target.url);
        if let Some(key) = &target.bearer {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        ensure!(status.is_success(), "GET {}: {status}: {}", target.url, String::from_utf8_lossy(&body));
        Ok(body.len())
    }
}

/// A bare axum server: one route, no middleware. Returns its base URL and its task.
async fn start_bare_server(
    payload: Value,
    shutdown: Shutdown,
) -> Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    async fn items(State(payload): State<Arc<Value>>) -> axum::response::Response {
        match serde_json::to_vec(&*payload) {
            Ok(body) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
            Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
    let app = Router::new().route("/items", get(items)).with_state(Arc::new(payload));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the bare server")?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await
    });
    Ok((url, task))
}

fn command_line(args: &Args) -> String {
    let mut command = format!(
        "cargo run --release -p gomark-bench -- --duration-secs {} --concurrency {} --warmup-secs {}",
        args.duration_secs, args.concurrency, args.warmup_secs
    );
    if args.timeout_ms != 5000 {
        let _ = write!(command, " --timeout-ms {}", args.timeout_ms);
    }
    if let Some(out) = &args.out {
        let _ = write!(command, " --out {}", out.display());
    }
    command
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 && value.is_finite() { format!("{:.2}×", value / base) } else { "–".into() }
}

fn render_section(rows: &[Row], args: &Args, date: &str, machine: &report::Machine, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{SECTION_HEADING}\n");
    let _ = writeln!(
        s,
        "Run {date} on {} CPUs ({}) with `{command}`: concurrency {}, {} s warmup then {} s measured \
         per target, targets one after another in one process.\n",
        machine.cpus, machine.cpu_model, args.concurrency, args.warmup_secs, args.duration_secs
    );
    let _ =
        writeln!(s, "| target | route | body | 2xx | errors | req/s | p50 | p90 | p99 | max | CPU: bench / others |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let o = &row.outcome;
        let _ = writeln!(
            s,
            "| {} | `{}` | {} B | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            row.name,
            row.route,
            row.body_bytes,
            o.ok(),
            o.errors(),
            o.rate(),
            ms(o.percentile(50.0)),
            ms(o.percentile(90.0)),
            ms(o.percentile(99.0)),
            ms(o.max()),
            o.cpu.map_or_else(|| "–".into(), |c| format!("{:.2} / {:.2}", c.own_cores, c.other_cores)),
        );
    }
    let _ = writeln!(
        s,
        "\nThe funnel is HubSpot's default pipeline of one company with {DEAL_COUNT} open deals; \
         pipeline-tracker answers it from its cache (invalidated by deal events, none arrive during the run).\n"
    );

    if let Some(bare) = rows.first() {
        let _ = writeln!(s, "Relative to the bare handler, same run:\n");
        let _ = writeln!(s, "| target | req/s | p50 | p99 |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
        for row in rows.iter().skip(1) {
            let (o, b) = (&row.outcome, &bare.outcome);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                row.name,
                ratio(o.rate(), b.rate()),
                ratio(secs(o.percentile(50.0)), secs(b.percentile(50.0))),
                ratio(secs(o.percentile(99.0)), secs(b.percentile(99.0))),
            );
        }
        let _ = writeln!(s);
    }
    let disturbed: Vec<String> = rows
        .iter()
        .filter_map(|r| r.outcome.cpu.filter(|c| c.other_cores > DISTURBED_CORES).map(|c| (r.name, c)))
        .map(|(name, c)| format!("{name} ({:.2} cores)", c.other_cores))
        .collect();
    let _ = writeln!(
        s,
        "CPU is the average number of cores used during the measured window by this process (servers and \
         load generator) and by every other process on the machine.{}\n",
        if disturbed.is_empty() {
            " Other processes stayed under 0.1 cores throughout: the machine was quiet.".to_owned()
        } else {
            format!(
                " **Other processes took CPU during: {}.** Those rows are disturbed; rerun on a quiet machine \
                 before comparing them.",
                disturbed.join(", ")
            )
        }
    );
    let rate_of = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.outcome.rate());
    if let (Some(list), Some(company)) = (rate_of("property list"), rate_of("company read (uncached)")) {
        let _ = writeln!(
            s,
            "The property list (four reads in the orchestrator) served {} the requests/s of the company \
             read (one).\n",
            ratio(list, company)
        );
    }

    let failures: Vec<String> = rows
        .iter()
        .filter(|r| r.outcome.errors() > 0)
        .map(|r| {
            let mut parts: Vec<String> = r.outcome.statuses.iter().map(|(code, n)| format!("{n} × {code}")).collect();
            if r.outcome.transport_errors > 0 {
                parts.push(format!("{} transport errors or timeouts", r.outcome.transport_errors));
            }
            format!("{}: {}", r.name, parts.join(", "))
        })
        .collect();
    if failures.is_empty() {
        let _ = writeln!(s, "Errors: none; every measured request answered 2xx.\n");
    } else {
        let _ = writeln!(s, "Errors (not counted in req/s or latencies): {}.\n", failures.join("; "));
    }

    let _ = writeln!(
        s,
        "What each request does:\n\
         \n\
         - **bare axum handler**: one route, no middleware; serialises the property list's JSON \
         (the same bytes the gateway sends) on every request. The floor: HTTP/1.1, loopback, \
         JSON.\n\
         - **gateway /healthz (middleware only)**: a public route, so it shows the gateway's \
         middleware stack (request id, telemetry, timeout, response headers) without auth, rate \
         limit or a backend call. Its body is 2 bytes, so it is a diagnostic row, not a peer of \
         the others.\n\
         - **property list**: the gateway authenticates the API key (a SQLite lookup), counts it \
         against the key's rate limit (in-process cache), calls the orchestrator over loopback \
         gRPC, which reads the company, the latest revision's number (its parsed document is \
         kept in memory), the revision the portal holds and the last rollout step (four SQLite \
         reads), and states each property's sync state; then maps it to JSON.\n\
         - **company read (uncached)**: the same gateway path, but the orchestrator reads the \
         company from SQLite on every request.\n\
         \n\
         What keeps the comparison fair:\n\
         \n\
         - Same process, same tokio runtime, same machine, same run; targets measured one \
         after another with the same client, concurrency, warmup and duration.\n\
         - Closed loop: {c} tasks, each with its own keep-alive HTTP/1.1 connection (hyper, \
         `TCP_NODELAY`), sending the next request when the last byte of the previous answer has \
         arrived. Latency is from send to last byte.\n\
         - Warmup before measuring each target: connections open, caches filled, SQLite pages \
         hot. Requests begun during warmup are not counted.\n\
         - Equal payload: the bare handler returns the property list's exact JSON.\n\
         - No 429s by construction: the gateway's per-key limit (default 600 a minute) is raised \
         to {RATE_LIMIT_PER_MINUTE} a minute for this run; the limiter still counts every \
         request. Only 2xx answers count as throughput; anything else is listed under errors.\n\
         - The load uses a viewer key of its own; setup uses the admin key.\n\
         - All {PROPERTY_COUNT} properties are `applied` before measuring, so no sync \
         confirmation invalidates the cache mid-run.\n\
         - No log subscriber is installed, so no target pays for logging; the gateway's \
         Prometheus metrics stay on, as in production.\n\
         - Not equal on purpose: the bare handler has no auth, rate limit, request id, timeout or \
         gRPC hop; that gap is what this benchmark measures.\n\
         - The load generator shares the {cpus} CPUs with the servers (see above): absolute \
         figures are a floor; compare the ratios.",
        c = args.concurrency,
        cpus = machine.cpus,
    );
    s
}
