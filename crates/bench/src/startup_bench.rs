//! Start-up time of embedded GoMark: from `Embedded::start` until every one of the five
//! services answers SERVING on its gRPC health port and the gateway answers `/healthz`.
//! Measured on a fresh data folder (first start: migrations, keys), on a restart of the
//! same folder, and with the demo (until SERVING, then until the demo says it is ready).

use crate::live_bench::percentile;
use anyhow::{Context as _, Result, bail};
use gomark::{DemoState, Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVING_WAIT: Duration = Duration::from_secs(30);

async fn serving(addr: SocketAddr) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else { return false };
    let Ok(channel) = endpoint.connect_timeout(Duration::from_secs(1)).connect().await else { return false };
    let answer = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
    answer.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// Waits until every service and the gateway's HTTP port answer.
async fn all_serving(gomark: &Embedded, http: &reqwest::Client) -> Result<()> {
    let deadline = Instant::now() + SERVING_WAIT;
    for (name, addr) in &gomark.services {
        while !serving(*addr).await {
            if Instant::now() > deadline {
                bail!("{name} not SERVING within {SERVING_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let healthz = format!("{}/healthz", gomark.gateway_url);
    while !http.get(&healthz).send().await.is_ok_and(|r| r.status().is_success()) {
        if Instant::now() > deadline {
            bail!("the gateway's /healthz did not answer within {SERVING_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// One start: (time to all SERVING, time to the demo ready when `demo`).
async fn start_once(dir: &std::path::Path, demo: bool, http: &reqwest::Client) -> Result<(Duration, Option<Duration>)> {
    let shutdown = Shutdown::new();
    let options =
        EmbeddedOptions { data_dir: dir.to_owned(), port: 0, demo, demo_activity: None, ..Default::default() };
    let t0 = Instant::now();
    let gomark = Embedded::start(options, shutdown.clone()).await.context("start")?;
    all_serving(&gomark, http).await?;
    let up = t0.elapsed();
    let ready = if demo {
        match gomark.demo_ready(Duration::from_secs(120)).await {
            DemoState::Ready => Some(t0.elapsed()),
            other => bail!("the demo did not get ready: {other:?}"),
        }
    } else {
        None
    };
    shutdown.trigger();
    gomark.wait().await?;
    Ok((up, ready))
}

fn row(case: &str, mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    format!(
        "| {case} | {} | {} | {} | {} |\n",
        times.len(),
        ms(percentile(&times, 50.0)),
        ms(percentile(&times, 90.0)),
        ms(times.last().copied().unwrap_or_default())
    )
}

/// The report's table rows: fresh, restart, with the demo (SERVING and ready).
pub async fn run(runs: usize) -> Result<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let (mut fresh, mut restart, mut demo_up, mut demo_ready) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        fresh.push(start_once(dir.path(), false, &http).await?.0);
        restart.push(start_once(dir.path(), false, &http).await?.0);
        let demo_dir = tempfile::tempdir()?;
        let (up, ready) = start_once(demo_dir.path(), true, &http).await?;
        demo_up.push(up);
        demo_ready.extend(ready);
    }
    let mut rows = String::new();
    let _ = write!(
        rows,
        "{}{}{}{}",
        row("fresh data folder, no demo", fresh),
        row("restart of that folder", restart),
        row("fresh, with the demo: all SERVING", demo_up),
        row("fresh, with the demo: demo ready", demo_ready)
    );
    Ok(rows)
}
