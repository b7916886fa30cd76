//! A tower layer that counts and times every request and continues the caller's trace.

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

/// Records `grpc_server_requests_total` / `grpc_server_request_duration_seconds` (or the
/// `http_server_*` pair) labelled by method and outcome, inside a span that continues the
/// trace found in the request headers.
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
        let method = match protocol {
            // The path (`/gomark.orchestrator.v1.OrchestratorService/GetCompany`) is bounded.
            Protocol::Grpc => req.uri().path().to_owned(),
            // Raw HTTP paths hold ids; the gateway labels by matched route instead.
            Protocol::Http => req.method().as_str().to_owned(),
        };
        let span = match protocol {
            Protocol::Grpc => tracing::info_span!("grpc.request", rpc.method = %method),
            Protocol::Http => {
                tracing::info_span!("http.request", http.method = %method, http.path = %req.uri().path())
            }
        };
        crate::telemetry::adopt_trace_headers(&span, req.headers());
        let started = Instant::now();
        Box::pin(
            async move {
                let result = inner.call(req).await;
                let outcome = match (&result, protocol) {
                    (Ok(resp), Protocol::Grpc) => {
                        resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_owned()
                    }
                    (Ok(resp), Protocol::Http) => resp.status().as_u16().to_string(),
                    (Err(_), _) => "error".to_owned(),
                };
                let (total, duration) = match protocol {
                    Protocol::Grpc => ("grpc_server_requests_total", "grpc_server_request_duration_seconds"),
                    Protocol::Http => ("http_server_requests_total", "http_server_request_duration_seconds"),
                };
                let labels = [("method", method), ("code", outcome)];
                metrics::counter!(total, &labels).increment(1);
                metrics::histogram!(duration, &labels[..1]).record(started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
