//! A scriptable fake HubSpot: replies are served in order, every request is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use hubspot_client::{AccessToken, ApiVersion, ClientConfig, HubSpotClient};
use serde_json::Value;

pub const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";

pub fn token() -> AccessToken {
    AccessToken::new(TOKEN)
}

/// One scripted response.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn empty(status: u16) -> Self {
        Self::text(status, "")
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Option<Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct FakeServer {
    pub base_url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake server");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake server");
        });
        Self { base_url: format!("http://{addr}"), shared, task }
    }

    /// Queues a reply (served once, in order).
    pub fn push(&self, reply: Reply) -> &Self {
        self.shared.replies.lock().expect("lock").push_back(reply);
        self
    }

    /// The reply served whenever the queue is empty.
    pub fn always(&self, reply: Reply) -> &Self {
        *self.shared.fallback.lock().expect("lock") = Some(reply);
        self
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// Config pointing at this server with millisecond backoffs, on v3 paths (the tests
    /// spell those out; [`Self::client_for`] picks another version).
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            base_url: self.base_url.clone(),
            api_version: ApiVersion::V3,
            timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(1),
            rate_limit_backoff: Duration::from_millis(5),
            ..ClientConfig::default()
        }
    }

    pub fn client(&self) -> HubSpotClient {
        HubSpotClient::new(self.config()).expect("client")
    }

    pub fn client_for(&self, api_version: ApiVersion) -> HubSpotClient {
        HubSpotClient::new(ClientConfig { api_version, ..self.config() }).expect("client")
    }

    /// `(method, path, query)` of every request so far.
    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.requests().into_iter().map(|r| (r.method, r.path, r.query)).collect()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    shared.requests.lock().expect("lock").push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect(),
        body: body.to_vec(),
    });
    let reply = {
        let next = shared.replies.lock().expect("lock").pop_front();
        next.or_else(|| shared.fallback.lock().expect("lock").clone())
    };
    let reply = reply.unwrap_or_else(|| Reply::text(599, "no scripted reply"));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::builder().status(StatusCode::from_u16(reply.status).expect("status"));
    for (k, v) in &reply.headers {
        response = response.header(k, v);
    }
    response.body(Body::from(reply.body)).expect("response")
}

/// A realistic HubSpot property payload (with fields the client does not model).
pub fn property_json(name: &str) -> Value {
    serde_json::json!({
        "updatedAt": "2026-01-02T03:04:05.678Z",
        "createdAt": "2026-01-01T00:00:00Z",
        "name": name,
        "label": "GoMark Score",
        "type": "number",
        "fieldType": "number",
        "description": "",
        "groupName": "dealinformation",
        "options": [],
        "createdUserId": "123",
        "updatedUserId": "123",
        "displayOrder": -1,
        "calculated": false,
        "externalOptions": false,
        "archived": false,
        "hasUniqueValue": false,
        "hidden": false,
        "modificationMetadata": {
            "archivable": true,
            "readOnlyDefinition": false,
            "readOnlyValue": false
        },
        "formField": true,
        "dataSensitivity": "non_sensitive"
    })
}

pub fn hubspot_error(status: u16, category: &str, sub_category: Option<&str>, message: &str) -> Reply {
    let mut body = serde_json::json!({
        "status": "error",
        "message": message,
        "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
        "category": category,
        "context": {"name": ["x"]},
        "errors": []
    });
    if let Some(sub) = sub_category {
        body["subCategory"] = Value::String(sub.into());
    }
    Reply::json(status, body)
}

/// Every version, for tests that check every endpoint under each.
pub const VERSIONS: [ApiVersion; 3] = ApiVersion::ALL;

/// `/crm/v3/{family}` or `/crm/{family}/{date}`.
pub fn crm_prefix(version: ApiVersion, family: &str) -> String {
    match version {
        ApiVersion::V3 => format!("/crm/v3/{family}"),
        dated => format!("/crm/{family}/{dated}"),
    }
}

/// Expected `(method, path, query)` triple.
pub fn call(method: &str, path: impl Into<String>, query: &str) -> (String, String, String) {
    (method.to_owned(), path.into(), query.to_owned())
}

/// A realistic deal payload.
pub fn deal_json(id: &str) -> Value {
    serde_json::json!({
        "id": id,
        "properties": {
            "amount": "1500.50",
            "closedate": "2026-03-31T00:00:00Z",
            "createdate": "2026-01-01T10:00:00.123Z",
            "dealname": format!("Deal {id}"),
            "dealstage": "appointmentscheduled",
            "hs_lastmodifieddate": "2026-01-02T10:00:00.000Z",
            "hs_object_id": id,
            "pipeline": "default",
            "hubspot_owner_id": null
        },
        "createdAt": "2026-01-01T10:00:00.123Z",
        "updatedAt": "2026-01-02T10:00:00.000Z",
        "archived": false,
        "url": format!("https://app.hubspot.com/contacts/1/record/0-3/{id}")
    })
}
