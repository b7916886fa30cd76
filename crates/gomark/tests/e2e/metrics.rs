//! `/metrics` explains itself: every metric has HELP text, and `build_info` says which
//! build runs.

use crate::support::Api;
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use reqwest::Method;
use std::collections::BTreeSet;

#[tokio::test]
async fn every_metric_has_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    // Some traffic, so that request metrics exist (HTTP at the gateway, gRPC behind it).
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    api.send(Method::GET, "/v1/companies", None).await;
    api.send(Method::GET, "/v1/drift", None).await;

    let text = reqwest::get(format!("http://{}/metrics", gomark.admin_addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let names = |prefix: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    let typed = names("# TYPE ");
    let helped = names("# HELP ");
    for name in ["build_info", "http_server_requests_total", "grpc_server_requests_total"] {
        assert!(typed.contains(name), "{name} is not exported:\n{text}");
    }
    let undocumented: Vec<&String> = typed.difference(&helped).collect();
    assert!(undocumented.is_empty(), "no HELP for {undocumented:?}: describe them in gomark_platform::metric_catalog");
    // HTTP metrics are labelled by matched route (never the raw path, which holds ids).
    let routed = r#"http_server_requests_total{method="GET",route="/v1/companies",code="200"}"#;
    assert!(text.lines().any(|l| l.starts_with(routed)), "{routed} missing:\n{text}");
    let version = format!("build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(text.lines().any(|l| l == version), "{version} missing:\n{text}");

    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}
