//! Server bootstrap: the gRPC server every service runs (with `grpc.health.v1`, reflection
//! v1 and v1alpha, caller verification, request metrics and trace propagation), the HTTP
//! server for public APIs (with header and idle timeouts) and the admin HTTP server
//! (`/metrics`, `/healthz`, `/readyz`). Health follows the service's [`Readiness`].
//!
//! Shutdown order: the token trips, health turns NOT_SERVING so load balancers stop routing
//! to us, the listener closes, in-flight calls drain, and after the grace period we stop
//! anyway.

mod request_telemetry;

pub use request_telemetry::RequestTelemetryLayer;

use crate::readiness::Readiness;
use crate::shutdown::Shutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("admin server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The health names a service answers SERVING for; `""` is the whole server.
pub struct HealthNames(pub Vec<&'static str>);

/// Serves `routes` plus health (and reflection, when `reflection`) on `listener` until
/// `shutdown` trips, then drains for at most `grace`. Health is SERVING while `readiness`
/// says ready.
pub async fn serve_grpc(
    listener: TcpListener,
    routes: Routes,
    health_names: HealthNames,
    readiness: Readiness,
    shutdown: Shutdown,
    grace: Duration,
    reflection: bool,
) -> Result<(), ServerError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health_names = Arc::new(health_names);
    let mut ready = readiness.subscribe();
    let status_of = |ready: bool| if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
    let initially = *ready.borrow_and_update();
    set_all(&reporter, &health_names, status_of(initially)).await;
    {
        let (reporter, names, shutdown) = (reporter.clone(), health_names.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    changed = ready.changed() => if changed.is_err() { return },
                }
                let now = *ready.borrow_and_update();
                if !shutdown.is_triggered() {
                    set_all(&reporter, &names, status_of(now)).await;
                }
            }
        });
    }
    let mut routes = routes.add_service(health_service);
    if reflection {
        // Both versions: grpcurl and Python's grpcio-reflection still ask v1alpha. Every
        // contract is described (a message may come from another service's file), but a
        // port lists only the services it serves.
        let builder = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(gomark_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health")
                .with_service_name("grpc.reflection.v1.ServerReflection")
                .with_service_name("grpc.reflection.v1alpha.ServerReflection");
            for name in &health_names.0 {
                builder = builder.with_service_name(*name);
            }
            builder
        };
        routes = routes.add_service(builder().build_v1()?).add_service(builder().build_v1alpha()?);
    }
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.wait().await;
            set_all(&reporter, &health_names, ServingStatus::NotServing).await;
        }
    };
    let server = tonic::transport::Server::builder()
        // Records a count and latency per method, and continues the caller's trace.
        .layer(RequestTelemetryLayer::grpc())
        // Only a signed assertion names a caller; forged plain metadata is dropped here.
        .layer(crate::assertion::VerifyCallerLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(without_nagle(TcpListenerStream::new(listener)), stop);
    with_grace(server, shutdown, grace, "grpc").await.unwrap_or(Ok(()))?;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off. HTTP/2 writes a response as several
/// small frames (headers, data, trailers); with Nagle on, the last waits for the peer's
/// delayed ACK, about 40 ms on Linux, on every call.
fn without_nagle(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    incoming.map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                crate::telemetry::root_span("connection")
                    .in_scope(|| tracing::debug!(error = %err, "cannot turn Nagle's algorithm off on a connection"));
            }
        })
    })
}

async fn set_all(reporter: &HealthReporter, names: &HealthNames, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in &names.0 {
        reporter.set_service_status(*name, status).await;
    }
}

/// Runs `fut` to completion, but once `shutdown` has tripped gives it only `grace` more.
/// Returns `None` when the grace period ran out.
pub async fn with_grace<F: Future>(fut: F, shutdown: Shutdown, grace: Duration, what: &str) -> Option<F::Output> {
    tokio::pin!(fut);
    tokio::select! {
        out = &mut fut => return Some(out),
        () = shutdown.wait() => {}
    }
    match tokio::time::timeout(grace, fut).await {
        Ok(out) => Some(out),
        Err(_) => {
            crate::telemetry::root_span("shutdown").in_scope(|| {
                tracing::warn!(
                    server = what,
                    grace_secs = grace.as_secs(),
                    "grace period over, stopping with work in flight"
                );
            });
            None
        }
    }
}

/// How long a client may take to send a request's headers, and how long an idle keep-alive
/// connection stays open: a client trickling headers (slowloris) or parking connections
/// cannot hold them for longer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over HTTP/1 and HTTP/2 until `shutdown` trips, then lets open connections
/// finish. Unlike `axum::serve`, headers must arrive within [`HEADER_READ_TIMEOUT`], which
/// also closes HTTP/1 connections idle that long; HTTP/2 peers that stop answering pings
/// are dropped. Each request carries the peer's address as
/// `axum::extract::ConnectInfo<SocketAddr>`.
pub async fn serve_http(listener: TcpListener, app: axum::Router, shutdown: Shutdown) -> Result<(), ServerError> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(HEADER_READ_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    crate::telemetry::root_span("connection").in_scope(|| tracing::warn!(error = %err, "accepting a connection failed"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        // As for gRPC (see `without_nagle`): small response writes leave at once.
        if let Err(err) = stream.set_nodelay(true) {
            crate::telemetry::root_span("connection")
                .in_scope(|| tracing::debug!(error = %err, "cannot turn Nagle's algorithm off on a connection"));
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Before the protocol is known hyper's timers do not run: a connection that
            // never sends a byte is closed here.
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await, Ok(Ok(1..))) {
                return;
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                // A span per failed connection only: one per connection would be a trace
                // for every keep-alive client.
                crate::telemetry::root_span("connection")
                    .in_scope(|| tracing::debug!(error = %err, "connection ended with an error"));
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves Prometheus `/metrics`, `/healthz` (the process is alive) and `/readyz` (it can
/// work: 503 while `readiness` says not ready, or once shutting down) until `shutdown` trips.
pub async fn serve_admin(listener: TcpListener, readiness: Readiness, shutdown: Shutdown) -> Result<(), ServerError> {
    let handle = crate::telemetry::install_metrics();
    let stopping = shutdown.clone();
    let readyz = move || {
        let ready = readiness.is_ready() && !stopping.is_triggered();
        std::future::ready(if ready {
            (axum::http::StatusCode::OK, "ready")
        } else {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
        })
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                crate::process_metrics::record();
                std::future::ready(handle.render())
            }),
        )
        .route("/healthz", axum::routing::get(|| std::future::ready("ok")))
        .route("/readyz", axum::routing::get(readyz));
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await?;
    Ok(())
}

/// Binds `addr`, naming it in the error so a taken port is obvious.
pub async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    TcpListener::bind(addr).await.with_context(|| format!("cannot bind {what} on {addr}"))
}
