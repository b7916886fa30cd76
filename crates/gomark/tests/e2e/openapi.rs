//! The OpenAPI document and the router agree: every documented operation is routed, and
//! the document is valid OpenAPI 3.1 with every operation's errors described.

use crate::support::Api;
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use reqwest::Method;

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let doc = Api::anonymous(&gomark.gateway_url).send(Method::GET, "/openapi.json", None).await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 14, "{} paths", paths.len());
    let mut checked = 0;
    let mut operation_ids = std::collections::BTreeSet::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            // Client generators name methods after these: present, camelCase and unique.
            let id = op["operationId"].as_str().unwrap_or_default();
            let camel = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric());
            assert!(camel, "{method} {path} has operationId {id:?}");
            assert!(operation_ids.insert(id.to_owned()), "operationId {id} is used twice");
            // Errors are documented per operation (the gateway's tests check the rule); here,
            // that the served document carries them: 500 everywhere, 401 where a token is needed.
            assert!(op["responses"].get("500").is_some(), "{method} {path} documents no 500");
            let public = op["security"].as_array().is_some_and(|s| s.iter().all(|r| r == &serde_json::json!({})));
            assert_eq!(op["responses"].get("401").is_some(), !public || path == "/webhooks/hubspot", "{method} {path}");
            let concrete = path
                .replace("{companyId}", "c0")
                .replace("{name}", "n0")
                .replace("{oldName}", "n0")
                .replace("{keyId}", "k0")
                .replace("{pipelineId}", "default");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let reply = api.send(method.clone(), &concrete, Some(serde_json::json!({}))).await;
            let fallback = reply.body["detail"] == "no such route" || reply.status == 405;
            assert!(!fallback, "{method} {path} is documented but not routed: {}", reply.body);
            checked += 1;
        }
    }
    assert!(checked >= 18, "{checked} operations");
    assert!(operation_ids.contains("listCompanies") && operation_ids.contains("createDealProperty"));
    // And the other way: a route that is not documented does not exist.
    api.send(Method::GET, "/v1/undocumented", None).await.problem(404);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}
