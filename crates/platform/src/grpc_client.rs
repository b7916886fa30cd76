//! Channels to other GoMark services: lazy, with timeouts, carrying the trace context and
//! the caller as a signed assertion, each call in an OpenTelemetry client span.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tracing::Instrument;

/// A channel whose every call runs in a client span (`package.Service/Method`, with
/// `rpc.*` and `server.address` attributes and the status code) and carries that span's
/// trace context and the caller's signed identity.
#[derive(Clone, Debug)]
pub struct TracedChannel {
    inner: Channel,
    peer: Arc<Peer>,
}

#[derive(Debug)]
struct Peer {
    address: String,
    port: Option<u16>,
}

impl TracedChannel {
    /// Wraps `inner`, which talks to `address:port`.
    pub fn new(inner: Channel, address: impl Into<String>, port: Option<u16>) -> Self {
        Self { inner, peer: Arc::new(Peer { address: address.into(), port }) }
    }
}

impl Service<http::Request<Body>> for TracedChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let name = req.uri().path().trim_start_matches('/').to_owned();
        let (service, method) = name.split_once('/').unwrap_or((&name, ""));
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            server.address = %self.peer.address,
            server.port = self.peer.port,
            rpc.grpc.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        prepare_headers(&span, req.headers_mut());
        // Take the ready channel and leave a fresh clone behind (tower's clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = inner.call(req).await;
                match &result {
                    Ok(resp) => {
                        // Errors come trailers-only (status in the headers); a success's status
                        // is in the trailers, which arrive after this point.
                        let code = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0");
                        recorder.record("rpc.grpc.status_code", code.parse::<i64>().unwrap_or(2));
                        if code != "0" {
                            // For a client, any non-OK status is an error.
                            recorder.record("otel.status_code", "ERROR");
                            recorder.record("error.type", code);
                        }
                    }
                    Err(_) => {
                        recorder.record("otel.status_code", "ERROR");
                        recorder.record("error.type", "transport");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Turns the plain caller metadata [`crate::Caller::request`] wrote into a signed assertion
/// ([`crate::assertion`]) and writes the client span's W3C trace context: the one place
/// every outgoing call passes.
fn prepare_headers(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let mut metadata = tonic::metadata::MetadataMap::from_headers(std::mem::take(headers));
    crate::assertion::sign_metadata(&mut metadata);
    *headers = metadata.into_headers();
    crate::telemetry::inject_span_headers(span, headers);
}

#[derive(Debug, thiserror::Error)]
#[error("invalid service URL {url:?}")]
pub struct InvalidUrl {
    url: String,
}

/// Connects on first use, so services can start in any order; every call has `timeout`.
pub fn channel(url: &str, timeout: Duration) -> Result<TracedChannel, InvalidUrl> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|_| InvalidUrl { url: url.to_owned() })?;
    let (host, port) = (endpoint.uri().host().unwrap_or_default().to_owned(), endpoint.uri().port_u16());
    let channel = endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy();
    Ok(TracedChannel::new(channel, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::LogFormat;
    use crate::telemetry::capture::{Captured, attribute};
    use opentelemetry::trace::{SpanKind, Status};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    /// A call through the channel is a client span, parent of the server's span: the link a
    /// service graph is drawn from.
    #[tokio::test(flavor = "current_thread")]
    async fn calls_are_client_spans_parenting_the_server_span() {
        let c = Captured::new(LogFormat::Json);
        let _scope = tracing::dispatcher::set_default(&c.dispatch);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (readiness, shutdown) = (crate::Readiness::new(), crate::Shutdown::new());
        readiness.set(true);
        let server = tokio::spawn(crate::server::serve_grpc(
            listener,
            tonic::service::Routes::default(),
            crate::server::HealthNames(vec![]),
            readiness,
            shutdown.clone(),
            Duration::from_secs(1),
            false,
        ));
        let mut client = HealthClient::new(channel(&format!("http://{addr}"), Duration::from_secs(5)).expect("url"));
        let ask = |service: &str| tonic::Request::new(HealthCheckRequest { service: service.to_owned() });
        async {
            client.check(ask("")).await.expect("serving");
            let err = client.check(ask("no.such.Service")).await.expect_err("unknown service");
            assert_eq!(err.code(), tonic::Code::NotFound);
        }
        .instrument(tracing::info_span!("caller"))
        .await;
        shutdown.trigger();
        let _ = server.await;

        let spans = c.spans();
        let named = |kind: SpanKind| {
            spans
                .iter()
                .filter(move |s| s.name == "grpc.health.v1.Health/Check" && s.span_kind == kind)
                .collect::<Vec<_>>()
        };
        let (clients, servers) = (named(SpanKind::Client), named(SpanKind::Server));
        assert_eq!((clients.len(), servers.len()), (2, 2), "{spans:#?}");
        let caller = c.span("caller").expect("caller span");
        for (client, server) in clients.iter().zip(&servers) {
            assert_eq!(client.parent_span_id, caller.span_context.span_id(), "client span under its caller");
            assert!(
                servers.iter().any(|s| s.parent_span_id == client.span_context.span_id()),
                "a server span is the child of each client span"
            );
            assert_eq!(server.span_context.trace_id(), caller.span_context.trace_id());
            assert_eq!(attribute(client, "rpc.system").as_deref(), Some("grpc"));
            assert_eq!(attribute(client, "server.address").as_deref(), Some("127.0.0.1"));
            assert_eq!(attribute(client, "server.port"), Some(addr.port().to_string()));
        }
        let failed = clients.iter().find(|s| attribute(s, "rpc.grpc.status_code").as_deref() == Some("5"));
        let failed = failed.expect("the NOT_FOUND call");
        assert!(matches!(failed.status, Status::Error { .. }), "a client counts any non-OK status");
    }
}
