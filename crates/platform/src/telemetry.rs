//! Logs, traces and metrics.
//!
//! Logs are JSON (or pretty for humans); every line written inside a span carries that
//! span's `trace_id` and `span_id`, so a log search finds the trace and back. Work no
//! request caused (background loops, start-up) runs in a [`root_span`] of its own, so in
//! practice every line has them; a loop polling several times a second uses a
//! [`poll_span`], whose lines have ids but whose trace is not exported. Traces go to
//! an OTLP collector when one is configured (`telemetry.otlp_endpoint`, else the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`); the W3C trace context is always propagated, across gRPC
//! calls (headers) and events (the envelope's `trace_context`), so one request can be
//! followed through every service. SQL statements become client spans here, from the
//! events sqlx logs for each statement, so no store has to wrap its queries. Metrics are
//! kept by a process-wide Prometheus recorder served on the admin port.

use crate::settings::{LogFormat, TelemetrySettings};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Latency buckets (seconds) for every `*_duration_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The standard OpenTelemetry variable, honoured when `telemetry.otlp_endpoint` is unset.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Flushes buffered spans when dropped; keep it alive for the life of the process.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Whether spans leave the process (an OTLP endpoint was configured).
    pub fn exports(&self) -> bool {
        EXPORTING.get().copied().unwrap_or(false)
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Best effort: the collector may already be gone at shutdown.
        let _ = self.provider.shutdown();
    }
}

static EXPORTING: OnceLock<bool> = OnceLock::new();

/// The collector spans go to: the setting, else `OTEL_EXPORTER_OTLP_ENDPOINT` (when it is
/// an http(s) URL), else none.
pub fn otlp_endpoint(settings: &TelemetrySettings) -> Option<String> {
    choose_endpoint(settings, std::env::var(OTLP_ENDPOINT_ENV).ok())
}

fn choose_endpoint(settings: &TelemetrySettings, from_env: Option<String>) -> Option<String> {
    let url = |e: &String| e.starts_with("http://") || e.starts_with("https://");
    settings.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()).or_else(|| from_env.filter(url))
}

/// Installs logging and tracing for this process. Call once, from `main`.
pub fn init(settings: &TelemetrySettings, service: &str) -> anyhow::Result<TelemetryGuard> {
    let mut provider = SdkTracerProvider::builder()
        .with_sampler(QuietPolls::standard())
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build());
    let endpoint = otlp_endpoint(settings);
    if let Some(endpoint) = &endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
        provider = provider.with_batch_exporter(exporter);
    }
    let _ = EXPORTING.set(endpoint.is_some());
    let provider = provider.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    // Logs go to stderr: stdout is for what a command prints for its user.
    subscriber(settings, &provider, service, std::io::stderr)?.try_init()?;
    install_metrics();
    Ok(TelemetryGuard { provider })
}

/// The subscriber [`init`] installs, writing log lines to `writer`: the log formatter
/// (with trace ids), the OpenTelemetry layer and SQL client spans. Exposed for tests,
/// which install it for a scope with `tracing::dispatcher::with_default`.
pub fn subscriber<W>(
    settings: &TelemetrySettings,
    provider: &SdkTracerProvider,
    service: &str,
    writer: W,
) -> anyhow::Result<Dispatch>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // The trace-id formatter and the SQL layer read span contexts through the dispatcher,
    // which exists only once the layers are assembled: they share this cell, filled below.
    let cell: Arc<OnceLock<WeakDispatch>> = Arc::default();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(writer)
            .map_event_format(|inner| WithTraceIds { inner, json: true, dispatch: cell.clone() })
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(ansi)
            .with_writer(writer)
            .map_event_format(|inner| WithTraceIds { inner, json: false, dispatch: cell.clone() })
            .boxed(),
    };
    // Each layer its own filter: the log level decides what is logged and traced, while
    // sqlx's per-statement events (debug) are always seen by the SQL layer, never logged.
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()));
    let sql = SqlSpans { tracer: provider.tracer("gomark.sql"), dispatch: cell.clone() };
    let subscriber = tracing_subscriber::registry()
        .with(fmt.with_filter(EnvFilter::try_new(&settings.log_level)?))
        .with(otel.with_filter(EnvFilter::try_new(&settings.log_level)?))
        .with(sql.with_filter(Targets::new().with_target(SQLX_QUERY, LevelFilter::DEBUG)));
    let dispatch = Dispatch::new(subscriber);
    let _ = cell.set(dispatch.downgrade());
    Ok(dispatch)
}

/// A span that starts a new trace, for work no request caused: one pass of a background
/// loop, a start-up phase. The lines it logs carry its fresh `trace_id` like a request's,
/// so that every line of a running service can be found by trace (and the pass's SQL
/// statements and calls are traced under it). `what` names the span, e.g. `outbox relay`.
pub fn root_span(what: &'static str) -> tracing::Span {
    tracing::info_span!(parent: None, "background", otel.name = what)
}

/// A [`root_span`] for one pass of a loop that polls several times a second (the outbox
/// relay, the rollout tick): its lines carry a `trace_id` like any other, but the trace is
/// never exported. A trace per idle poll would bury the traces that matter; the work a
/// poll finds (a rollout step, a drift check) runs in a `root_span` that is exported.
pub fn poll_span(what: &'static str) -> tracing::Span {
    tracing::info_span!(parent: None, "background", otel.name = what, { POLL_ATTRIBUTE } = true)
}

/// Marks a [`poll_span`] for [`QuietPolls`].
const POLL_ATTRIBUTE: &str = "gomark.poll";

/// The sampler the process's traces use: the standard one (`OTEL_TRACES_SAMPLER`, default
/// parent-based always-on), except that a [`poll_span`] is dropped, and with it, parent
/// based, everything under it. A dropped span keeps valid ids, so its lines still name it.
#[derive(Clone, Debug)]
struct QuietPolls(Box<dyn ShouldSample>);

impl QuietPolls {
    fn standard() -> Self {
        Self(opentelemetry_sdk::trace::Config::default().sampler)
    }
}

impl ShouldSample for QuietPolls {
    fn should_sample(
        &self,
        parent: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        let root = parent.is_none_or(|cx| !cx.span().span_context().is_valid());
        if root && attributes.iter().any(|kv| kv.key.as_str() == POLL_ATTRIBUTE) {
            return SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: Default::default(),
            };
        }
        self.0.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// The OpenTelemetry span context of the span `id`, if it has a valid one.
fn span_context(cell: &OnceLock<WeakDispatch>, id: &tracing::span::Id) -> Option<opentelemetry::Context> {
    let dispatch = cell.get()?.upgrade()?;
    let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
    cx.span().span_context().is_valid().then_some(cx)
}

/// Writes `trace_id` and `span_id` of the span an event belongs to into its log line:
/// first keys of the JSON object, or a prefix of the pretty line.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let ids = ctx.parent_span().and_then(|span| span_context(&self.dispatch, &span.id())).map(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            (sc.trace_id(), sc.span_id())
        });
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// The target of the event sqlx logs once per statement (with its text and duration).
const SQLX_QUERY: &str = "sqlx::query";

/// `db.system.name` of the database this process uses (set by `gomark-storage` on connect).
static DATABASE_SYSTEM: OnceLock<&'static str> = OnceLock::new();

/// Names the database engine SQL spans report (`postgresql`, `sqlite`). The first call wins:
/// a process uses one engine (SQLite embedded, Postgres distributed).
pub fn set_database_system(name: &'static str) {
    let _ = DATABASE_SYSTEM.set(name);
}

/// Turns each statement sqlx logs into a client span (`SELECT deals`) under the span that
/// ran it, with `db.system.name`, `db.operation.name` and `db.collection.name`. The span is
/// back-dated by the statement's duration. Statements run outside any span are skipped
/// rather than made into traces of their own. The statement's text is not recorded: a
/// summary is enough to find a slow query, and it cannot leak a value.
struct SqlSpans {
    tracer: SdkTracer,
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<S> Layer<S> for SqlSpans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != SQLX_QUERY {
            return;
        }
        // `current_span` is the registry's, not narrowed by this layer's filter.
        let Some(parent) = ctx.current_span().id().and_then(|id| span_context(&self.dispatch, id)) else {
            return;
        };
        let mut fields = SqlFields::default();
        event.record(&mut fields);
        let statement = if fields.statement.trim().is_empty() { &fields.summary } else { &fields.statement };
        let summary = SqlSummary::of(statement);
        let end = SystemTime::now();
        let start = end.checked_sub(Duration::from_secs_f64(fields.elapsed_secs.max(0.0))).unwrap_or(end);
        let mut attributes = vec![KeyValue::new("db.operation.name", summary.operation.clone())];
        if let Some(system) = DATABASE_SYSTEM.get() {
            attributes.push(KeyValue::new("db.system.name", *system));
        }
        if let Some(table) = &summary.collection {
            attributes.push(KeyValue::new("db.collection.name", table.clone()));
        }
        attributes.push(KeyValue::new("db.query.summary", summary.name()));
        let mut span = self
            .tracer
            .span_builder(summary.name())
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        span.end_with_timestamp(end);
    }
}

#[derive(Default)]
struct SqlFields {
    statement: String,
    summary: String,
    elapsed_secs: f64,
}

impl tracing::field::Visit for SqlFields {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "db.statement" => value.clone_into(&mut self.statement),
            "summary" => value.clone_into(&mut self.summary),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "db.statement" => self.statement = format!("{value:?}"),
            "summary" => self.summary = format!("{value:?}"),
            _ => {}
        }
    }
}

/// What a statement does and to which table, read from its first words.
#[derive(Debug, PartialEq, Eq)]
struct SqlSummary {
    operation: String,
    collection: Option<String>,
}

impl SqlSummary {
    fn of(sql: &str) -> Self {
        let words: Vec<&str> = sql.split_whitespace().collect();
        let operation = words.first().map_or_else(|| "SQL".to_owned(), |w| w.to_ascii_uppercase());
        // The table follows FROM / INTO / UPDATE (the first one: a sub-select comes later).
        let collection = words
            .windows(2)
            .find(|pair| matches!(pair[0].to_ascii_uppercase().as_str(), "FROM" | "INTO" | "UPDATE"))
            .map(|pair| pair[1].trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')).to_owned())
            .filter(|table| !table.is_empty());
        Self { operation, collection }
    }

    fn name(&self) -> String {
        match &self.collection {
            Some(table) => format!("{} {table}", self.operation),
            None => self.operation.clone(),
        }
    }
}

/// The process-wide Prometheus recorder; installed on first use.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = builder
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            crate::metric_catalog::describe();
            handle
        })
        .clone()
}

/// The current span's trace context as W3C headers (`traceparent`, `tracestate`).
pub fn current_trace_context() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier
}

/// Makes `span` a child of the trace described by `carrier`, if it describes one.
pub fn adopt_trace_context(span: &tracing::Span, carrier: &HashMap<String, String>) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    let _ = span.set_parent(cx);
}

/// Same as [`adopt_trace_context`], reading HTTP/gRPC headers.
pub fn adopt_trace_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// Writes the current span's trace context into outgoing HTTP/gRPC headers.
pub fn inject_trace_headers(headers: &mut http::HeaderMap) {
    inject_span_headers(&tracing::Span::current(), headers);
}

/// Writes `span`'s trace context into outgoing HTTP/gRPC headers (a client span names
/// itself as the parent of the server's).
pub fn inject_span_headers(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Spans and log lines kept in memory, for tests that check what telemetry code emits.
pub mod capture {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use std::sync::{Mutex, PoisonError};

    /// A subscriber like [`super::init`]'s, whose spans and log lines stay in memory.
    /// Install it with `tracing::dispatcher::with_default` or `set_default` (per thread:
    /// use a current-thread runtime).
    pub struct Captured {
        pub dispatch: Dispatch,
        provider: SdkTracerProvider,
        spans: Store,
        logs: Logs,
    }

    impl Captured {
        pub fn new(log_format: LogFormat) -> Self {
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            let spans = Store::default();
            let provider = SdkTracerProvider::builder()
                .with_sampler(QuietPolls::standard())
                .with_simple_exporter(spans.clone())
                .build();
            let logs = Logs::default();
            let settings = TelemetrySettings { log_format, log_level: "info".into(), otlp_endpoint: None };
            // A fixed level and format: building cannot fail.
            let dispatch = match subscriber(&settings, &provider, "test", logs.clone()) {
                Ok(dispatch) => dispatch,
                Err(err) => panic!("test subscriber: {err}"),
            };
            Self { dispatch, provider, spans, logs }
        }

        /// Every span ended so far.
        pub fn spans(&self) -> Vec<SpanData> {
            let _ = self.provider.force_flush();
            self.spans.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }

        /// The span named `name`, if one ended.
        pub fn span(&self, name: &str) -> Option<SpanData> {
            self.spans().into_iter().find(|s| s.name == name)
        }

        /// Everything logged so far.
        pub fn logs(&self) -> String {
            String::from_utf8_lossy(&self.logs.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
        }
    }

    /// The value of attribute `key` of `span`, as a string.
    pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
    }

    #[derive(Clone, Debug, Default)]
    struct Store(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Store {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(batch);
            Ok(())
        }
    }

    #[derive(Clone, Debug, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Logs {
        type Writer = Logs;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::capture::{Captured, attribute};
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn remote_parent() -> HashMap<String, String> {
        HashMap::from([("traceparent".to_owned(), PARENT.to_owned())])
    }

    #[test]
    fn json_log_lines_carry_the_trace_and_span_ids() {
        let c = Captured::new(LogFormat::Json);
        tracing::dispatcher::with_default(&c.dispatch, || {
            let span = tracing::info_span!("work");
            adopt_trace_context(&span, &remote_parent());
            span.in_scope(|| tracing::info!(answer = 42, "inside"));
        });
        let logs = c.logs();
        let lines: Vec<serde_json::Value> =
            logs.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        assert_eq!(lines.len(), 1, "{logs}");
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{}", lines[0]);
        assert_eq!(lines[0]["answer"], 42, "the event's own fields are kept: {}", lines[0]);
        let span_id = lines[0]["span_id"].as_str().expect("span_id");
        assert_eq!(span_id.len(), 16);
        assert_ne!(span_id, "00f067aa0ba902b7", "the line names its own span, not the remote parent");
        let work = c.span("work").expect("span exported");
        assert_eq!(work.span_context.span_id().to_string(), span_id);
    }

    #[test]
    fn a_poll_logs_with_a_trace_id_but_is_not_exported() {
        let c = Captured::new(LogFormat::Json);
        tracing::dispatcher::with_default(&c.dispatch, || {
            poll_span("test poll").in_scope(|| {
                tracing::info_span!("inside the poll").in_scope(|| tracing::info!("polled"));
            });
            root_span("test work").in_scope(|| tracing::info!("worked"));
        });
        let logs = c.logs();
        for line in logs.lines() {
            let line: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
            let id = line["trace_id"].as_str().unwrap_or_else(|| panic!("no trace_id: {line}"));
            assert_ne!(id, "00000000000000000000000000000000", "{line}");
        }
        assert_eq!(logs.lines().count(), 2, "{logs}");
        let names: Vec<String> = c.spans().into_iter().map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["test work"], "only the work is exported, nothing of the poll");
    }

    #[test]
    fn each_background_pass_logs_under_a_fresh_trace() {
        let c = Captured::new(LogFormat::Json);
        tracing::dispatcher::with_default(&c.dispatch, || {
            // Even inside a request's span, a pass starts its own trace.
            let request = tracing::info_span!("request");
            adopt_trace_context(&request, &remote_parent());
            request.in_scope(|| {
                for pass in 0..2 {
                    root_span("test loop").in_scope(|| tracing::info!(pass, "pass done"));
                }
            });
        });
        let logs = c.logs();
        let ids: Vec<String> = logs
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON"))
            .map(|line| line["trace_id"].as_str().unwrap_or_else(|| panic!("no trace_id: {line}")).to_owned())
            .collect();
        assert_eq!(ids.len(), 2, "{logs}");
        assert_ne!(ids[0], ids[1], "one trace per pass: {logs}");
        assert!(!ids.contains(&"4bf92f3577b34da6a3ce929d0e0e4736".to_owned()), "a root, not a child: {logs}");
        let passes: Vec<String> = c
            .spans()
            .into_iter()
            .filter(|s| s.name == "test loop")
            .map(|s| s.span_context.trace_id().to_string())
            .collect();
        assert_eq!(passes, ids, "each pass is exported under its name, with the trace its lines name");
    }

    #[test]
    fn pretty_log_lines_carry_the_trace_id() {
        let c = Captured::new(LogFormat::Pretty);
        tracing::dispatcher::with_default(&c.dispatch, || {
            let span = tracing::info_span!("work");
            adopt_trace_context(&span, &remote_parent());
            span.in_scope(|| tracing::warn!("inside"));
        });
        let logs = c.logs();
        assert!(logs.starts_with("trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id="), "{logs}");
        assert!(logs.contains("inside"), "{logs}");
    }

    #[test]
    fn sqlx_statements_become_client_spans_under_the_caller() {
        set_database_system("sqlite");
        let c = Captured::new(LogFormat::Json);
        tracing::dispatcher::with_default(&c.dispatch, || {
            // What sqlx logs per statement (sqlx-core's QueryLogger), outside and inside a span.
            tracing::debug!(target: "sqlx::query", summary = "select 1", elapsed_secs = 0.001);
            tracing::info_span!("handler").in_scope(|| {
                tracing::debug!(
                    target: "sqlx::query",
                    summary = "SELECT id, name FROM …",
                    db.statement = "\n\nSELECT id, name FROM companies WHERE id = $1\n",
                    elapsed_secs = 0.25,
                );
            });
        });
        let spans = c.spans();
        let sql: Vec<_> = spans.iter().filter(|s| s.span_kind == SpanKind::Client).collect();
        assert_eq!(sql.len(), 1, "only the statement run inside a span: {spans:#?}");
        let span = sql[0];
        let handler = c.span("handler").expect("handler span");
        assert_eq!(span.name, "SELECT companies");
        assert_eq!(span.parent_span_id, handler.span_context.span_id());
        assert_eq!(span.span_context.trace_id(), handler.span_context.trace_id());
        assert_eq!(attribute(span, "db.system.name").as_deref(), Some("sqlite"));
        assert_eq!(attribute(span, "db.operation.name").as_deref(), Some("SELECT"));
        assert_eq!(attribute(span, "db.collection.name").as_deref(), Some("companies"));
        assert!(attribute(span, "db.query.text").is_none(), "no statement text");
        let took = span.end_time.duration_since(span.start_time).expect("ordered");
        assert!(took >= Duration::from_millis(249), "back-dated by the statement's duration: {took:?}");
        assert!(!c.logs().contains("companies"), "statements are not logged at info: {}", c.logs());
    }

    #[test]
    fn summaries_name_the_operation_and_table() {
        let s = |sql| SqlSummary::of(sql).name();
        assert_eq!(s("insert into outbox (id, body) values ($1, $2)"), "INSERT outbox");
        assert_eq!(s("UPDATE \"rollouts\" SET state = $1"), "UPDATE rollouts");
        assert_eq!(s("DELETE FROM idempotency WHERE expires_at < $1"), "DELETE idempotency");
        assert_eq!(s("BEGIN"), "BEGIN");
        assert_eq!(s(""), "SQL");
    }

    #[test]
    fn the_endpoint_setting_wins_over_the_standard_variable() {
        let mut settings = TelemetrySettings::default();
        let env = || Some("http://collector:4317".to_owned());
        assert_eq!(choose_endpoint(&settings, env()).as_deref(), Some("http://collector:4317"));
        assert_eq!(choose_endpoint(&settings, Some("collector:4317".into())), None, "not a URL");
        assert_eq!(choose_endpoint(&settings, None), None);
        settings.otlp_endpoint = Some("http://mine:4317".into());
        assert_eq!(choose_endpoint(&settings, env()).as_deref(), Some("http://mine:4317"));
    }
}
