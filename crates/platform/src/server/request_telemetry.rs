//! A tower layer that counts and times every request and continues the caller's trace in a
//! server span that follows OpenTelemetry's semantic conventions (RPC and HTTP).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Grpc,
    Http,
}

/// Records `grpc_server_requests_total` / `grpc_server_request_duration_seconds` (labelled
/// by method and status code) or the `http_server_*` pair (by method, matched route and
/// status), inside a server span that continues the trace found in the request headers.
/// For HTTP, add it with `Router::layer`, so the matched route is known.
#[derive(Clone, Copy, Debug)]
pub struct RequestTelemetryLayer {
    protocol: Protocol,
}

impl RequestTelemetryLayer {
    pub fn grpc() -> Self {
        Self { protocol: Protocol::Grpc }
    }

    pub fn http() -> Self {
        Self { protocol: Protocol::Http }
    }
}

impl<S> Layer<S> for RequestTelemetryLayer {
    type Service = RequestTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTelemetry { inner, protocol: self.protocol }
    }
}

#[derive(Clone, Debug)]
pub struct RequestTelemetry<S> {
    inner: S,
    protocol: Protocol,
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for RequestTelemetry<S>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        // Take the ready service and leave a fresh clone behind (tower's clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let protocol = self.protocol;
        let (span, labels) = match protocol {
            Protocol::Grpc => grpc_span(req.uri().path()),
            Protocol::Http => http_span(&req),
        };
        crate::telemetry::adopt_trace_headers(&span, req.headers());
        let started = Instant::now();
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = inner.call(req).await;
                let outcome = match (&result, protocol) {
                    (Ok(resp), Protocol::Grpc) => {
                        // An error is answered trailers-only (the status in the headers);
                        // a success sends it in the trailers, after this point.
                        let code = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0");
                        record_grpc_status(&recorder, code);
                        code.to_owned()
                    }
                    (Ok(resp), Protocol::Http) => {
                        record_http_status(&recorder, resp.status());
                        resp.status().as_u16().to_string()
                    }
                    (Err(_), _) => {
                        recorder.record("otel.status_code", "ERROR");
                        recorder.record("error.type", "_OTHER");
                        "error".to_owned()
                    }
                };
                let (total, duration) = match protocol {
                    Protocol::Grpc => ("grpc_server_requests_total", "grpc_server_request_duration_seconds"),
                    Protocol::Http => ("http_server_requests_total", "http_server_request_duration_seconds"),
                };
                let mut labels = labels;
                metrics::histogram!(duration, &labels).record(started.elapsed().as_secs_f64());
                labels.push(("code", outcome));
                metrics::counter!(total, &labels).increment(1);
                result
            }
            .instrument(span),
        )
    }
}

/// gRPC status codes that mean the server failed (OpenTelemetry's list for server spans):
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. The others
/// (NOT_FOUND, FAILED_PRECONDITION, ...) are the caller's.
pub fn is_server_fault(grpc_code: &str) -> bool {
    matches!(grpc_code, "2" | "4" | "12" | "13" | "14" | "15")
}

/// A server span named `package.Service/Method`, with OpenTelemetry's RPC attributes, and
/// the metric labels (`method` is the full path, bounded by the services we serve).
fn grpc_span(path: &str) -> (tracing::Span, Vec<(&'static str, String)>) {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    (span, vec![("method", path.to_owned())])
}

/// A server span named `GET /v1/companies/{companyId}` (the matched route: never raw paths,
/// which hold ids), with OpenTelemetry's HTTP attributes, and the metric labels.
fn http_span<B>(req: &http::Request<B>) -> (tracing::Span, Vec<(&'static str, String)>) {
    let method = req.method().as_str();
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        "http.server",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.as_deref(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    // Requests no route matched share one label value.
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    (span, vec![("method", method.to_owned()), ("route", route)])
}

fn record_grpc_status(span: &tracing::Span, code: &str) {
    span.record("rpc.grpc.status_code", code.parse::<i64>().unwrap_or(2));
    if is_server_fault(code) {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", code);
    }
}

fn record_http_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    // For a server, only 5xx is an error; 4xx are the caller's.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::LogFormat;
    use crate::telemetry::capture::{Captured, attribute};
    use opentelemetry::trace::{SpanKind, Status};

    #[test]
    fn server_faults_are_only_the_servers_codes() {
        for code in ["2", "4", "12", "13", "14", "15"] {
            assert!(is_server_fault(code), "{code}");
        }
        for code in ["0", "1", "3", "5", "6", "7", "8", "9", "10", "11", "16"] {
            assert!(!is_server_fault(code), "{code}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn grpc_calls_get_server_spans_with_rpc_attributes() {
        let c = Captured::new(LogFormat::Json);
        let _scope = tracing::dispatcher::set_default(&c.dispatch);
        let reply = |code: &'static str| {
            tower::service_fn(move |_req: http::Request<()>| async move {
                let mut resp = http::Response::new(());
                if code != "0" {
                    resp.headers_mut().insert("grpc-status", http::HeaderValue::from_static(code));
                }
                Ok::<_, std::convert::Infallible>(resp)
            })
        };
        for (code, path) in [
            ("0", "/gomark.orchestrator.v1.OrchestratorService/GetCompany"),
            ("5", "/a.v1.S/Missing"),
            ("13", "/a.v1.S/Broken"),
        ] {
            let mut svc = RequestTelemetryLayer::grpc().layer(reply(code));
            let req = http::Request::builder()
                .uri(format!("http://x{path}"))
                .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .body(())
                .expect("request");
            tower::ServiceExt::ready(&mut svc).await.expect("ready");
            svc.call(req).await.expect("call");
        }
        let ok = c.span("gomark.orchestrator.v1.OrchestratorService/GetCompany").expect("span named by method");
        assert_eq!(ok.span_kind, SpanKind::Server);
        assert_eq!(attribute(&ok, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(attribute(&ok, "rpc.service").as_deref(), Some("gomark.orchestrator.v1.OrchestratorService"));
        assert_eq!(attribute(&ok, "rpc.method").as_deref(), Some("GetCompany"));
        assert_eq!(attribute(&ok, "rpc.grpc.status_code").as_deref(), Some("0"));
        assert_eq!(
            ok.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "continues the caller's trace"
        );
        let missing = c.span("a.v1.S/Missing").expect("span");
        assert_eq!(attribute(&missing, "rpc.grpc.status_code").as_deref(), Some("5"));
        assert!(!matches!(missing.status, Status::Error { .. }), "NOT_FOUND is the caller's: {:?}", missing.status);
        let broken = c.span("a.v1.S/Broken").expect("span");
        assert!(matches!(broken.status, Status::Error { .. }), "INTERNAL is the server's: {:?}", broken.status);
        assert_eq!(attribute(&broken, "error.type").as_deref(), Some("13"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn http_requests_get_server_spans_named_by_route() {
        let c = Captured::new(LogFormat::Json);
        let _scope = tracing::dispatcher::set_default(&c.dispatch);
        let app = axum::Router::new()
            .route("/v1/companies/{id}", axum::routing::get(|| async { "ok" }))
            .route("/v1/boom", axum::routing::post(|| async { http::StatusCode::INTERNAL_SERVER_ERROR }))
            .layer(RequestTelemetryLayer::http());
        for (method, uri) in [("GET", "/v1/companies/0190d7e4-secret-id"), ("POST", "/v1/boom")] {
            let req =
                http::Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).expect("request");
            tower::ServiceExt::oneshot(app.clone(), req).await.expect("call");
        }
        let get = c.span("GET /v1/companies/{id}").expect("span named by method and route");
        assert_eq!(get.span_kind, SpanKind::Server);
        assert_eq!(attribute(&get, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(attribute(&get, "http.route").as_deref(), Some("/v1/companies/{id}"));
        assert_eq!(attribute(&get, "http.response.status_code").as_deref(), Some("200"));
        assert!(get.attributes.iter().all(|kv| !kv.value.to_string().contains("secret-id")), "no raw path: {get:?}");
        let boom = c.span("POST /v1/boom").expect("span");
        assert_eq!(attribute(&boom, "http.response.status_code").as_deref(), Some("500"));
        assert!(matches!(boom.status, Status::Error { .. }));
    }
}
