//! Channels to other GoMark services: lazy, with timeouts, carrying the trace context and
//! the caller as a signed assertion.

use std::time::Duration;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A channel whose every request carries the caller's trace context and signed identity.
pub type TracedChannel = InterceptedService<Channel, TraceInjector>;

/// Copies the current span's W3C trace context into the request metadata, and turns the
/// plain caller metadata [`crate::Caller::request`] wrote into a signed assertion
/// ([`crate::assertion`]): the one place every outgoing call passes.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceInjector;

impl Interceptor for TraceInjector {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        crate::assertion::sign_metadata(req.metadata_mut());
        let mut headers = std::mem::take(req.metadata_mut()).into_headers();
        crate::telemetry::inject_trace_headers(&mut headers);
        *req.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        Ok(req)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid service URL {url:?}")]
pub struct InvalidUrl {
    url: String,
}

/// Connects on first use, so services can start in any order; every call has `timeout`.
pub fn channel(url: &str, timeout: Duration) -> Result<TracedChannel, InvalidUrl> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|_| InvalidUrl { url: url.to_owned() })?;
    let channel = endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy();
    Ok(InterceptedService::new(channel, TraceInjector))
}
