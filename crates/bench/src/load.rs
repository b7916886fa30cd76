//! A closed-loop load generator: `concurrency` tasks, each with its own HTTP/1.1 keep-alive
//! connection, sending the next request as soon as the previous answer has been read.
//! Closed loop means the offered load adapts to the server, so req/s is the throughput at
//! that concurrency and the latencies are what a caller waiting in line sees.

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One URL to hammer.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Bounds every connect and every request, so a stuck server cannot stall the run.
    pub request_timeout: Duration,
}

/// What one target did inside the measured window.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Latencies of the 2xx answers, sorted, in nanoseconds.
    latencies_ns: Vec<u64>,
    /// Non-2xx answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Connect failures, broken connections and timeouts.
    pub transport_errors: u64,
    /// From the start of the measured window to the last measured answer.
    pub window: Duration,
    /// CPU use during the measured window; `None` where `/proc` is unreadable.
    pub cpu: Option<crate::cpu::Usage>,
}

impl Outcome {
    pub fn ok(&self) -> u64 {
        self.latencies_ns.len() as u64
    }

    pub fn errors(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors
    }

    /// 2xx answers per second: a 429 or a 500 answered fast is not throughput.
    pub fn rate(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 { self.ok() as f64 / secs } else { 0.0 }
    }

    /// Nearest-rank percentile of the 2xx latencies; `None` without any.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.latencies_ns.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        self.latencies_ns.get(index).map(|ns| Duration::from_nanos(*ns))
    }

    pub fn max(&self) -> Option<Duration> {
        self.latencies_ns.last().map(|ns| Duration::from_nanos(*ns))
    }
}

#[derive(Default)]
struct WorkerStats {
    latencies_ns: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    last_done: Option<Instant>,
}

struct Endpoint {
    addr: String,
    host: String,
    path: String,
    authorization: Option<String>,
}

impl Endpoint {
    fn parse(target: &Target) -> Result<Self> {
        let uri: Uri = target.url.parse().with_context(|| format!("bad URL {}", target.url))?;
        if uri.scheme_str() != Some("http") {
            bail!("only plain http is supported: {}", target.url);
        }
        let authority = uri.authority().context("URL without host")?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            addr: format!("{}:{port}", authority.host()),
            host: authority.as_str().to_owned(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            authorization: target.bearer.as_ref().map(|key| format!("Bearer {key}")),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>> {
        let stream = TcpStream::connect(&self.addr).await?;
        // Requests are tiny and latency is what we measure: do not let Nagle hold them.
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection ends when `sender` is dropped, which ends this task with it.
        tokio::spawn(connection);
        Ok(sender)
    }

    fn request(&self) -> Result<Request<Empty<Bytes>>> {
        let mut builder = Request::get(self.path.as_str()).header(hyper::header::HOST, self.host.as_str());
        if let Some(authorization) = &self.authorization {
            builder = builder.header(hyper::header::AUTHORIZATION, authorization.as_str());
        }
        Ok(builder.body(Empty::new())?)
    }
}

/// Runs `config.concurrency` workers against `target` for warmup + duration and returns what
/// happened in the measured part.
pub async fn run(target: &Target, config: LoadConfig, cpus: usize) -> Result<Outcome> {
    let endpoint = Arc::new(Endpoint::parse(target)?);
    let measure_from = Instant::now() + config.warmup;
    let stop_at = measure_from + config.duration;
    let workers: Vec<_> = (0..config.concurrency)
        .map(|_| tokio::spawn(worker(endpoint.clone(), measure_from, stop_at, config.request_timeout)))
        .collect();
    tokio::time::sleep_until(measure_from).await;
    let cpu_before = crate::cpu::Snapshot::take();
    tokio::time::sleep_until(stop_at).await;
    let cpu_after = crate::cpu::Snapshot::take();

    let cpu = cpu_before.zip(cpu_after).and_then(|(before, after)| crate::cpu::usage(before, after, cpus));
    let mut outcome = Outcome { cpu, ..Outcome::default() };
    let mut last_done = measure_from;
    for worker in workers {
        let stats = worker.await.context("a load worker panicked")?;
        outcome.latencies_ns.extend(stats.latencies_ns);
        for (status, count) in stats.statuses {
            *outcome.statuses.entry(status).or_default() += count;
        }
        outcome.transport_errors += stats.transport_errors;
        if let Some(done) = stats.last_done {
            last_done = last_done.max(done);
        }
    }
    outcome.latencies_ns.sort_unstable();
    outcome.window = last_done.saturating_duration_since(measure_from);
    Ok(outcome)
}

async fn worker(endpoint: Arc<Endpoint>, measure_from: Instant, stop_at: Instant, timeout: Duration) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut connection: Option<SendRequest<Empty<Bytes>>> = None;
    // Stops issuing at `stop_at`; with every await bounded by `timeout`, the worker ends by
    // `stop_at + 2 * timeout` at the latest.
    while Instant::now() < stop_at {
        let started = Instant::now();
        let measured = started >= measure_from;
        let sender = match connection.as_mut() {
            Some(sender) => sender,
            None => match tokio::time::timeout(timeout, endpoint.connect()).await {
                Ok(Ok(sender)) => connection.insert(sender),
                _ => {
                    if measured {
                        stats.transport_errors += 1;
                    }
                    // A refused connect returns at once; pause so a dead server is not spun on.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let request = match endpoint.request() {
            Ok(request) => request,
            // The same request is built every time, so this cannot succeed later either.
            Err(_) => {
                stats.transport_errors += 1;
                break;
            }
        };
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            // Read the whole body: a request is done when its last byte has arrived.
            response.into_body().collect().await?;
            anyhow::Ok(status)
        })
        .await;
        let done = Instant::now();
        let measured = started >= measure_from;
        match answer {
            Ok(Ok(status)) if measured => {
                if status.is_success() {
                    stats.latencies_ns.push(done.duration_since(started).as_nanos() as u64);
                } else {
                    *stats.statuses.entry(status.as_u16()).or_default() += 1;
                }
                stats.last_done = Some(done);
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => {
                // The connection is in an unknown state; open a new one.
                connection = None;
                if measured {
                    stats.transport_errors += 1;
                    stats.last_done = Some(done);
                }
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let outcome = Outcome {
            latencies_ns: (1..=100).map(|ms| ms * 1_000_000).collect(),
            window: Duration::from_secs(2),
            ..Outcome::default()
        };
        assert_eq!(outcome.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(outcome.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(outcome.percentile(100.0), Some(Duration::from_millis(100)));
        assert_eq!(outcome.max(), Some(Duration::from_millis(100)));
        assert_eq!(outcome.rate(), 50.0);
        assert_eq!(Outcome::default().percentile(50.0), None);
    }
}
