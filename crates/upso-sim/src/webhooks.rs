//! Activity webhooks: batches of up to 100 activities, signed with `X-Upso-Signature`,
//! retried with backoff at most five times, in the background.

use crate::account::{AccountState, StoredWebhook};
use std::time::Duration;
use upso_client::{Activity, WebhookBatch, webhook};

const MAX_BATCH: usize = 100;
const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug)]
pub(crate) struct Delivery {
    url: String,
    secret: String,
    body: Vec<u8>,
}

pub(crate) fn take_deliveries(state: &mut AccountState) -> Vec<Delivery> {
    if state.undelivered.is_empty() {
        return Vec::new();
    }
    let activities = std::mem::take(&mut state.undelivered);
    let mut out = Vec::new();
    for StoredWebhook { webhook, secret } in &state.webhooks {
        let matching: Vec<&Activity> = activities
            .iter()
            .filter(|a| webhook.events.is_empty() || webhook.events.contains(&a.activity_type))
            .collect();
        for chunk in matching.chunks(MAX_BATCH) {
            let batch = WebhookBatch {
                account_id: state.account.id.clone(),
                events: chunk.iter().map(|a| (*a).clone()).collect(),
            };
            if let Ok(body) = serde_json::to_vec(&batch) {
                out.push(Delivery { url: webhook.url.clone(), secret: secret.clone(), body });
            }
        }
    }
    out
}

/// Sends each delivery on the current runtime; without one (a plain unit test) they are dropped.
pub(crate) fn deliver(http: &reqwest::Client, deliveries: Vec<Delivery>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    for delivery in deliveries {
        let http = http.clone();
        runtime.spawn(async move {
            for attempt in 1..=MAX_ATTEMPTS {
                let signature = webhook::sign(&delivery.secret, chrono::Utc::now().timestamp(), &delivery.body);
                let sent = http
                    .post(&delivery.url)
                    .header("content-type", "application/json")
                    .header(webhook::SIGNATURE_HEADER, signature)
                    .body(delivery.body.clone())
                    .send()
                    .await;
                if matches!(&sent, Ok(r) if r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(attempt - 1)).await;
            }
            tracing::warn!(url = %delivery.url, "upso-sim webhook delivery given up");
        });
    }
}
