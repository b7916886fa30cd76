//! No HubSpot or Upso token appears in any log line, error, API response, or in the
//! database files (where credentials are sealed). Its own test binary, so it can capture every log
//! line of the process at TRACE level.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const TOKEN: &str = "pat-na1-4c2b-SECRET-TOKEN-do-not-leak";
const UPSO_TOKEN: &str = "upso-SECRET-TOKEN-do-not-leak";

#[tokio::test]
async fn the_token_never_shows() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        gomark::EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..Default::default() };
    let gomark = gomark::Embedded::start(options, gomark_platform::Shutdown::new()).await.expect("start");
    let key = gomark.admin_api_key.clone().expect("admin key");
    let http = reqwest::Client::new();
    let mut responses = String::new();
    let mut call = async |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut req = http.request(method, format!("{}{path}", gomark.gateway_url)).bearer_auth(&key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("send");
        let headers = format!("{:?}", resp.headers());
        let text = format!("{headers} {}", resp.text().await.expect("text"));
        responses.push_str(&text);
        text
    };

    gomark.hubspot_sim.register_portal(TOKEN, 777);
    let created = call(
        reqwest::Method::POST,
        "/v1/companies",
        Some(serde_json::json!({"name": "Leak Co", "hubspotPortalId": "777", "hubspotToken": TOKEN})),
    )
    .await;
    let body = created.rsplit_once("} ").map_or("", |(_, b)| b);
    let company: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let company = company["id"].as_str().expect("company id").to_owned();

    // HubSpot refuses the token: the failure is reported, the token is not.
    gomark.hubspot_sim.fail_next(TOKEN, 50, 401);
    let property = serde_json::json!({"name": "gomark_leak", "label": "Leak", "type": "string", "fieldType": "text", "groupName": "dealinformation"});
    call(reqwest::Method::POST, &format!("/v1/companies/{company}/deal-properties"), Some(property)).await;
    let mut failed = false;
    for _ in 0..100 {
        let text =
            call(reqwest::Method::GET, &format!("/v1/companies/{company}/deal-properties/gomark_leak"), None).await;
        if text.contains("\"failed\"") {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "the apply failed with HubSpot's 401, as arranged");

    // The Upso token: registered, used, refused by Upso; never shown.
    gomark.upso_sim.register_account(UPSO_TOKEN, "Leak Co");
    let upso_account = serde_json::json!({"token": UPSO_TOKEN});
    let registered =
        call(reqwest::Method::PUT, &format!("/v1/companies/{company}/upso-account"), Some(upso_account)).await;
    assert!(registered.contains("upsoAccountId"), "{registered}");
    call(reqwest::Method::GET, &format!("/v1/companies/{company}/upsell/dry-run"), None).await;
    gomark.upso_sim.fail_next(UPSO_TOKEN, 50, 401);
    let again = serde_json::json!({"token": UPSO_TOKEN});
    let refused = call(reqwest::Method::PUT, &format!("/v1/companies/{company}/upso-account"), Some(again)).await;
    assert!(refused.contains("Upso refused this token"), "{refused}");
    call(reqwest::Method::GET, &format!("/v1/companies/{company}"), None).await;
    call(reqwest::Method::GET, &format!("/v1/companies/{company}/audit"), None).await;
    call(reqwest::Method::GET, "/v1/companies", None).await;

    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");

    let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(logged.len() > 1000, "logs were captured ({} bytes)", logged.len());
    for token in [TOKEN, UPSO_TOKEN] {
        assert!(!logged.contains(token), "the token is in the logs");
        assert!(!responses.contains(token), "the token is in an API response");
    }
    for entry in std::fs::read_dir(dir.path()).expect("data dir") {
        let path = entry.expect("entry").path();
        // The simulated HubSpot and Upso keep their own state here (a vendor knows the
        // tokens it issued); every file of GoMark's own must hold none.
        if path.file_name().is_some_and(|n| n == "hubspot-sim.json" || n == "upso-sim.json") {
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // A SQLite -wal/-shm file removed as its last connection closes holds nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read {}: {e}", path.display()),
        };
        let text = String::from_utf8_lossy(&bytes);
        for token in [TOKEN, UPSO_TOKEN] {
            assert!(!text.contains(token), "a token is stored in clear in {}", path.display());
        }
    }
}
