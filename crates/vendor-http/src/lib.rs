//! The one place GoMark's HTTP calls to vendors (HubSpot, Upso) pass, like a reqwest
//! middleware but a plain function: each request runs in an OpenTelemetry client span
//! (`GET /crm/v3/objects/deals/{id}`, with `http.request.method`, `server.address`,
//! `url.template`, `http.response.status_code` and `error.type`) and is counted per vendor
//! and portal: `vendor_http_requests_total`, `vendor_http_rate_limited_total` (429s) and
//! `vendor_http_request_duration_seconds` (HELP text in `gomark_platform::metric_catalog`).
//!
//! Nothing that identifies a record or a credential reaches a span or a label: paths are
//! reduced to templates (id-like segments become `{id}`), query strings are dropped, and
//! headers (the bearer token) are never read.
//!
//! [`tls::client_builder`] gives every outbound client one shared TLS configuration.

pub mod tls;

use std::time::Instant;

/// Which vendor a call goes to: a metric label and a span attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    HubSpot,
    Upso,
}

impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::HubSpot => "hubspot",
            Vendor::Upso => "upso",
        }
    }
}

/// Sends `request` as [`reqwest::RequestBuilder::send`] does, inside a client span, and
/// records the vendor-call metrics under `portal` (a portal or account id, or a stable
/// hash: bounded by the number of customers, never a record id).
pub async fn send(
    vendor: Vendor,
    portal: &str,
    request: reqwest::RequestBuilder,
) -> reqwest::Result<reqwest::Response> {
    let (client, request) = request.build_split();
    let request = request?;
    let url = request.url();
    let method = request.method().as_str().to_owned();
    // The template names the span only: as a label it would multiply every portal's series
    // by every property and pipeline the portal has.
    let template = url_template(url.path());
    let span = tracing::info_span!(
        "http.client",
        otel.name = %format!("{method} {template}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default(),
        url.template = %template,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        gomark.vendor = vendor.as_str(),
        gomark.portal = portal,
    );
    let started = Instant::now();
    let result = tracing::Instrument::instrument(client.execute(request), span.clone()).await;
    let elapsed = started.elapsed().as_secs_f64();
    let vendor = vendor.as_str();
    let outcome = match &result {
        Ok(response) => {
            let status = response.status();
            span.record("http.response.status_code", i64::from(status.as_u16()));
            // For a client, 4xx is an error too: the call did not do what was asked.
            if status.is_client_error() || status.is_server_error() {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", status.as_str());
            }
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                metrics::counter!("vendor_http_rate_limited_total", "vendor" => vendor, "portal" => portal.to_owned())
                    .increment(1);
            }
            status.as_str().to_owned()
        }
        Err(err) => {
            let kind = error_type(err);
            span.record("otel.status_code", "ERROR");
            span.record("error.type", kind);
            kind.to_owned()
        }
    };
    metrics::histogram!("vendor_http_request_duration_seconds", "vendor" => vendor, "portal" => portal.to_owned())
        .record(elapsed);
    metrics::counter!(
        "vendor_http_requests_total",
        "vendor" => vendor,
        "portal" => portal.to_owned(),
        "method" => method,
        "code" => outcome,
    )
    .increment(1);
    result
}

/// `error.type` of a request that got no response.
fn error_type(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "_OTHER"
    }
}

/// `path` with every segment that may identify something replaced by `{id}`: only
/// lowercase words (`crm`, `objects`, `deals`, `dealstage`, `batch`), API versions (`v3`)
/// and dated versions (`2026-03`) are kept.
pub fn url_template(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    segments.iter().map(|s| if kept(s) { (*s).to_owned() } else { "{id}".to_owned() }).collect::<Vec<_>>().join("/")
}

fn kept(segment: &str) -> bool {
    let word = segment.len() <= 48 && segment.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-');
    let version = segment.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let dated = segment.len() == 7
        && segment.bytes().enumerate().all(|(i, b)| if i == 4 { b == b'-' } else { b.is_ascii_digit() });
    word || version || dated
}

#[cfg(test)]
mod tests {
    use super::*;
    use gomark_platform::settings::LogFormat;
    use gomark_platform::telemetry::capture::{Captured, attribute};
    use opentelemetry::trace::{SpanKind, Status};

    #[test]
    fn templates_keep_words_and_versions_and_hide_ids() {
        assert_eq!(url_template("/crm/v3/objects/deals/12345"), "/crm/v3/objects/deals/{id}");
        assert_eq!(url_template("/crm/properties/2026-03/deals/dealstage"), "/crm/properties/2026-03/deals/dealstage");
        assert_eq!(url_template("/crm/v3/properties/deals/a%20b%2Fc"), "/crm/v3/properties/deals/{id}");
        assert_eq!(url_template("/v1/cadences/cad_01HX9/enrollments"), "/v1/cadences/{id}/enrollments");
        assert_eq!(url_template("/"), "/");
    }

    async fn vendor() -> String {
        let app = axum::Router::new()
            .route("/crm/v3/objects/deals/{id}", axum::routing::get(|| async { "{}" }))
            .route("/v1/limited", axum::routing::get(|| async { reqwest::StatusCode::TOO_MANY_REQUESTS }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// Spans, metrics and what they must never carry, for one success, one 429 and one call
    /// to a closed port.
    #[test]
    fn calls_are_client_spans_and_counted_per_portal() {
        let c = Captured::new(LogFormat::Json);
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let base = tracing::dispatcher::with_default(&c.dispatch, || {
            metrics::with_local_recorder(&recorder, || {
                runtime.block_on(async {
                    let base = vendor().await;
                    let http = reqwest::Client::new();
                    let get = |url: String| http.get(url).bearer_auth("pat-na1-secret");
                    let ok = send(
                        Vendor::HubSpot,
                        "4242",
                        get(format!("{base}/crm/v3/objects/deals/987654?hapikey=secret")),
                    );
                    assert_eq!(ok.await.expect("ok").status(), 200);
                    let limited = send(Vendor::Upso, "acct-1", get(format!("{base}/v1/limited"))).await;
                    assert_eq!(limited.expect("429").status(), 429);
                    let refused = send(Vendor::Upso, "acct-1", get("http://127.0.0.1:1/v1/account".into())).await;
                    assert!(refused.is_err());
                    base
                })
            })
        });
        let span = c.span("GET /crm/v3/objects/deals/{id}").expect("named by method and template");
        assert_eq!(span.span_kind, SpanKind::Client);
        assert_eq!(attribute(&span, "url.template").as_deref(), Some("/crm/v3/objects/deals/{id}"));
        assert_eq!(attribute(&span, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(attribute(&span, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(attribute(&span, "gomark.portal").as_deref(), Some("4242"));
        let limited = c.span("GET /v1/limited").expect("429 span");
        assert!(matches!(limited.status, Status::Error { .. }));
        assert_eq!(attribute(&limited, "error.type").as_deref(), Some("429"));
        let refused = c.span("GET /v1/account").expect("failed span");
        assert_eq!(attribute(&refused, "error.type").as_deref(), Some("connect"));
        for span in c.spans() {
            let text = format!("{:?}", span.attributes);
            for leak in ["987654", "secret", "hapikey", base.as_str()] {
                assert!(!text.contains(leak), "{leak} in {text}");
            }
        }

        let text = metrics.render();
        for line in [
            r#"vendor_http_requests_total{vendor="hubspot",portal="4242",method="GET",code="200"} 1"#,
            r#"vendor_http_requests_total{vendor="upso",portal="acct-1",method="GET",code="429"} 1"#,
            r#"vendor_http_requests_total{vendor="upso",portal="acct-1",method="GET",code="connect"} 1"#,
            r#"vendor_http_rate_limited_total{vendor="upso",portal="acct-1"} 1"#,
            r#"vendor_http_request_duration_seconds_count{vendor="hubspot",portal="4242"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("987654"), "no record ids in labels");
    }
}
