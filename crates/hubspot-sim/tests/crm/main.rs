//! End-to-end tests of pipelines, deals, search, webhooks and scale: real HTTP against a
//! simulator spawned on port 0.

mod deals;
mod gaps;
mod journal;
mod pipeline_rules;
mod pipelines;
mod scale;
mod search;
mod validation;
mod versions;
mod webhooks;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hubspot_sim::{HubSpotSim, SimConfig, spawn};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::Value;

pub const PIPELINES: &str = "/crm/v3/pipelines/deals";
pub const DEALS: &str = "/crm/v3/objects/deals";
pub const DATED_DEALS: &str = "/crm/objects/2026-03/deals";

pub struct Sim {
    pub sim: HubSpotSim,
    pub base: String,
    pub client: Client,
}

pub async fn start(config: SimConfig) -> Sim {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let (sim, addr) = spawn(config, addr).await.expect("spawn");
    Sim { sim, base: format!("http://{addr}"), client: Client::new() }
}

impl Sim {
    pub async fn call(&self, method: Method, token: &str, path: &str, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request")
    }

    pub async fn json(&self, method: Method, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let resp = self.call(method, token, path, body).await;
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("json body") };
        (status, value)
    }
}

pub fn assert_error(body: &Value, category: &str) {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["category"], category, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
