//! The gateway alone, over real HTTP: security headers, CORS, rate limits, idempotency
//! keys, body limits, webhook signatures and OIDC tokens. No service behind it is needed
//! for these routes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gomark_gateway::{AuthSettings, GatewaySettings, OidcSettings, Settings, start_gateway};
use gomark_platform::Shutdown;
use gomark_platform::settings::{Secret, ServerSettings};
use gomark_storage::Database;
use hubspot_client::webhook::{WebhookSecret, sign_v3};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

const WEBHOOK_URL: &str = "https://gomark.example.com/webhooks/hubspot";
const WEBHOOK_SECRET: &str = "test-client-secret";

struct Gateway {
    url: String,
    admin_key: String,
    http: reqwest::Client,
    shutdown: Shutdown,
    /// Dropping it would stop the servers.
    _service: gomark_service::RunningService,
    _db: gomark_testkit::TestDatabase,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(auth: AuthSettings) -> Gateway {
    start_in(auth, None).await
}

/// A gateway on SQLite, its file in `data_dir` when given (to inspect what rests on disk).
async fn start_in(auth: AuthSettings, data_dir: Option<&std::path::Path>) -> Gateway {
    let mut tdb = gomark_testkit::TestDatabase::sqlite();
    if let Some(dir) = data_dir {
        tdb.settings.url = Secret::new(format!("sqlite://{}?mode=rwc", dir.join("gateway.db").display()));
    }
    start_on(auth, tdb).await
}

/// A gateway on the given database.
async fn start_on(auth: AuthSettings, tdb: gomark_testkit::TestDatabase) -> Gateway {
    let gateway = GatewaySettings {
        http_addr: loopback(),
        // Nothing listens there: these tests only use routes the gateway answers itself.
        orchestrator_url: "http://127.0.0.1:9".into(),
        upso_cadence_url: "http://127.0.0.1:9".into(),
        hubspot_sync_url: "http://127.0.0.1:9".into(),
        max_body_bytes: 4096,
        ..GatewaySettings::default()
    };
    start_with(auth, tdb, gateway).await
}

/// A gateway on the given database, with the given gateway settings.
async fn start_with(auth: AuthSettings, tdb: gomark_testkit::TestDatabase, gateway: GatewaySettings) -> Gateway {
    let db = Database::connect(&tdb.settings).await.expect("db");
    let settings = Settings {
        server: ServerSettings {
            grpc_addr: loopback(),
            admin_addr: loopback(),
            shutdown_grace_secs: 5,
            ..Default::default()
        },
        gateway,
        auth,
        ..Settings::default()
    };
    let shutdown = Shutdown::new();
    let gateway = start_gateway(settings, db, Arc::new(gomark_cache::MemoryCache::new("t")), shutdown.clone())
        .await
        .expect("gateway");
    Gateway {
        url: format!("http://{}", gateway.http_addr),
        admin_key: gateway.bootstrap_admin_key.expect("fresh database bootstraps a key"),
        http: reqwest::Client::new(),
        shutdown,
        _service: gateway.service,
        _db: tdb,
    }
}

fn auth() -> AuthSettings {
    AuthSettings {
        cors_allowed_origins: "https://app.example.com".into(),
        hubspot_webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
        hubspot_webhook_url: WEBHOOK_URL.into(),
        ..AuthSettings::default()
    }
}

impl Gateway {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.admin_key)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url)).bearer_auth(&self.admin_key)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

#[tokio::test]
async fn responses_carry_security_headers_and_a_request_id() {
    let gw = start(auth()).await;
    for resp in [gw.get("/healthz").send().await.expect("send"), gw.get("/nope").send().await.expect("send")] {
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h.contains_key("content-security-policy"));
        assert!(h.contains_key("x-request-id"));
    }
    let echoed = gw.get("/healthz").header("x-request-id", "abc-123").send().await.expect("send");
    assert_eq!(echoed.headers()["x-request-id"], "abc-123", "a caller's request id is kept");
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let gw = start(auth()).await;
    let preflight = |origin: &'static str| {
        gw.http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/companies", gw.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("send");
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let refused = preflight("https://evil.example.com").await.expect("send");
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn each_key_is_rate_limited() {
    let gw = start(AuthSettings { rate_limit_per_minute: 6, ..auth() }).await;
    let other: Value = gw
        .post("/v1/api-keys")
        .json(&json!({"name": "other", "role": "admin"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let other_key = other["key"].as_str().expect("key").to_owned();
    for i in 0..5 {
        let r = gw.get("/v1/api-keys").send().await.expect("send");
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["ratelimit-remaining"], (4 - i).to_string().as_str());
        assert_eq!(r.headers()["ratelimit-policy"], "6;w=60");
        let reset: u64 = r.headers()["ratelimit-reset"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=60).contains(&reset), "reset in {reset} s");
    }
    let limited = gw.get("/v1/api-keys").send().await.expect("send");
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(limited.headers()["content-type"], "application/problem+json");
    let own_budget = gw.http.get(format!("{}/v1/api-keys", gw.url)).bearer_auth(&other_key).send().await.expect("send");
    assert_eq!(own_budget.status(), 200, "another key has its own budget");
}

#[tokio::test]
async fn an_idempotency_key_never_replays_or_keeps_a_key_secret() {
    let data = tempfile::tempdir().expect("tempdir");
    let gw = start_in(auth(), Some(data.path())).await;
    let create = |body: Value| gw.post("/v1/api-keys").header("idempotency-key", "k-1").json(&body).send();
    let first = create(json!({"name": "ci", "role": "viewer"})).await.expect("send");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let secret = first["key"].as_str().expect("the secret, this once").to_owned();
    let id = first["id"].as_str().expect("id").to_owned();
    let again = create(json!({"name": "ci", "role": "viewer"})).await.expect("send");
    assert_eq!(again.status(), 409, "the secret is gone, so the retry says what was created");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    let again = again.text().await.expect("body");
    assert!(!again.contains(&secret), "{again}");
    assert!(again.contains(&id), "names the key created: {again}");
    let listed: Value = gw.get("/v1/api-keys").send().await.expect("send").json().await.expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2), "bootstrap + one: {listed}");
    let different = create(json!({"name": "other", "role": "viewer"})).await.expect("send");
    assert_eq!(different.status(), 422, "a reused key with another body is refused");
    // Nothing on disk holds the secret (the SQLite file, its journal and WAL).
    for entry in std::fs::read_dir(data.path()).expect("dir").flatten() {
        let bytes = std::fs::read(entry.path()).expect("read");
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{} holds the secret", entry.path().display());
    }
}

#[tokio::test]
async fn an_idempotency_key_replays_other_responses() {
    let gw = start(auth()).await;
    let bad_create =
        |key: &'static str| gw.post("/v1/api-keys").header("idempotency-key", key).json(&json!({"name": "x"})).send();
    let first = bad_create("k-2").await.expect("send");
    assert!(first.status().is_client_error(), "a bad body: {}", first.status());
    let again = bad_create("k-2").await.expect("send");
    assert_eq!(again.status(), first.status());
    assert_eq!(again.headers()["idempotent-replayed"], "true", "non-secret answers replay as they were");
}

/// A service that accepts connections and never answers: every call to it runs into its timeout.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind(loopback()).await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

#[tokio::test]
async fn an_idempotency_key_is_not_left_in_progress_by_a_request_that_did_not_finish() {
    let silent = black_hole().await;
    let gateway = GatewaySettings {
        http_addr: loopback(),
        orchestrator_url: silent.clone(),
        upso_cadence_url: silent.clone(),
        hubspot_sync_url: silent,
        // The request's deadline is the call's: the deadline, not the call, ends the request.
        call_timeout_ms: 1_000,
        request_timeout_ms: 1_000,
        ..GatewaySettings::default()
    };
    let gw = start_with(auth(), gomark_testkit::TestDatabase::sqlite(), gateway).await;
    let start = |key: &'static str| gw.post("/v1/rollouts").header("idempotency-key", key).json(&json!({}));

    // Cut by the deadline: the key is released, so the retry runs again (and times out again).
    let first = start("k-deadline").send().await.expect("send");
    assert_eq!(first.status(), 504);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let retry = start("k-deadline").send().await.expect("send");
    assert_eq!(retry.status(), 504, "ran again rather than 'still in progress'");

    // The client hangs up: the request runs on (a retry meanwhile hears it is in progress),
    // and once it has ended the retry gets its outcome, not "in progress" for 24 hours.
    let hung_up = start("k-hangup").timeout(std::time::Duration::from_millis(200)).send().await;
    assert!(hung_up.is_err(), "the client gave up: {hung_up:?}");
    let meanwhile = start("k-hangup").send().await.expect("send");
    assert_eq!(meanwhile.status(), 409, "the first request is still running");
    let problem: Value = meanwhile.json().await.expect("json");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("in progress")), "{problem}");
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let after = start("k-hangup").send().await.expect("send");
    assert_eq!(after.status(), 504, "the first request ended and released its key");
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let gw = start(auth()).await;
    let big = json!({"name": "x".repeat(10_000), "role": "viewer"});
    let r = gw.post("/v1/api-keys").json(&big).send().await.expect("send");
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let webhook = gw
        .http
        .post(format!("{}/webhooks/hubspot", gw.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 10_000])
        .send()
        .await
        .expect("send");
    assert_eq!(webhook.status(), 413, "the webhook route too");
    assert_eq!(webhook.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn webhooks_need_a_valid_fresh_signature() {
    let gw = start(auth()).await;
    let secret = WebhookSecret::new(WEBHOOK_SECRET);
    let body = br#"[{"eventId":1,"subscriptionId":2,"portalId":3,"appId":4,"occurredAt":1700000000000,"subscriptionType":"deal.creation","attemptNumber":0,"objectId":5}]"#;
    let send = |signature: String, timestamp: String, body: &'static [u8]| {
        gw.http
            .post(format!("{}/webhooks/hubspot", gw.url))
            .header("content-type", "application/json")
            .header("x-hubspot-signature-v3", signature)
            .header("x-hubspot-request-timestamp", timestamp)
            .body(body)
            .send()
    };
    let now = chrono_now_ms();
    let good = sign_v3(&secret, "POST", WEBHOOK_URL, body, now);
    // Signature accepted; with no hubspot-sync behind this gateway the batch cannot be taken,
    // and the 503 makes HubSpot deliver it again (the 202 path runs end to end in gomark's
    // deal tests).
    let accepted = send(good.clone(), now.to_string(), body).await.expect("send");
    assert_eq!(accepted.status(), 503);
    assert_eq!(accepted.headers()["content-type"], "application/problem+json");

    let tampered: &'static [u8] = br#"[{"eventId":1,"subscriptionId":2,"portalId":3,"appId":4,"occurredAt":1700000000000,"subscriptionType":"deal.deletion","objectId":5}]"#;
    assert_eq!(send(good.clone(), now.to_string(), tampered).await.expect("send").status(), 401, "tampered body");
    let stale = now - 10 * 60 * 1000;
    let stale_sig = sign_v3(&secret, "POST", WEBHOOK_URL, body, stale);
    assert_eq!(send(stale_sig, stale.to_string(), body).await.expect("send").status(), 401, "stale");
    let other_url = sign_v3(&secret, "POST", "https://elsewhere.example.com/webhooks/hubspot", body, now);
    assert_eq!(send(other_url, now.to_string(), body).await.expect("send").status(), 401, "signed for another URL");
    let missing = gw.http.post(format!("{}/webhooks/hubspot", gw.url)).body(&body[..]).send().await.expect("send");
    assert_eq!(missing.status(), 401, "no signature");

    let unconfigured = start(AuthSettings::default()).await;
    let r = unconfigured
        .http
        .post(format!("{}/webhooks/hubspot", unconfigured.url))
        .header("x-hubspot-signature-v3", good)
        .header("x-hubspot-request-timestamp", now.to_string())
        .body(&body[..])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401, "without a secret nothing is accepted");
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// An identity provider in miniature: a JWKS endpoint and a key to sign tokens with.
struct Issuer {
    url: String,
    encoding: jsonwebtoken::EncodingKey,
}

async fn issuer() -> Issuer {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key pair");
    let public = pair.public_key().as_ref().to_vec();
    let pkcs8 = pair.to_pkcs8v1().expect("pkcs8");
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "test-key", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&public[1..33]), "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
    }]});
    let app =
        axum::Router::new().route("/jwks", axum::routing::get(move || std::future::ready(axum::Json(jwks.clone()))));
    let listener = tokio::net::TcpListener::bind(loopback()).await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Issuer { url, encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()) }
}

impl Issuer {
    fn token(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("test-key".into());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("sign")
    }
}

#[tokio::test]
async fn oidc_tokens_from_the_issuer_are_accepted_and_others_are_not() {
    let idp = issuer().await;
    let oidc = OidcSettings {
        issuer: "https://login.example.com".into(),
        audience: "gomark".into(),
        jwks_url: format!("{}/jwks", idp.url),
        ..OidcSettings::default()
    };
    let gw = start(AuthSettings { oidc: Some(oidc), ..auth() }).await;
    let exp = chrono_now_ms() / 1000 + 600;
    let claims = |overrides: Value| {
        let mut c = json!({"iss": "https://login.example.com", "aud": "gomark", "sub": "ada", "exp": exp, "gomark_role": "admin"});
        if let (Some(c), Some(o)) = (c.as_object_mut(), overrides.as_object()) {
            c.extend(o.clone());
        }
        c
    };
    let call = |token: String| gw.http.get(format!("{}/v1/api-keys", gw.url)).bearer_auth(token).send();

    assert_eq!(call(idp.token(claims(json!({})))).await.expect("send").status(), 200, "a valid admin token");
    assert_eq!(call(idp.token(claims(json!({"gomark_role": "viewer"})))).await.expect("send").status(), 403, "viewer");
    assert_eq!(call(idp.token(claims(json!({"gomark_role": null})))).await.expect("send").status(), 403, "no role");
    for bad in [
        json!({"aud": "someone-else"}),
        json!({"iss": "https://evil.example.com"}),
        json!({"exp": chrono_now_ms() / 1000 - 600}),
    ] {
        assert_eq!(call(idp.token(claims(bad.clone()))).await.expect("send").status(), 401, "{bad}");
    }
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    )
    .expect("sign");
    assert_eq!(call(forged).await.expect("send").status(), 401, "symmetric algorithms never pass");
    let other_idp = issuer().await;
    assert_eq!(call(other_idp.token(claims(json!({})))).await.expect("send").status(), 401, "another issuer's key");
    let later = chrono_now_ms() / 1000 + 300;
    assert_eq!(call(idp.token(claims(json!({"nbf": later})))).await.expect("send").status(), 401, "not valid yet");
    let earlier = chrono_now_ms() / 1000 - 300;
    assert_eq!(call(idp.token(claims(json!({"nbf": earlier})))).await.expect("send").status(), 200, "valid since");
}

#[tokio::test]
async fn only_a_single_company_string_scopes_an_oidc_token() {
    let idp = issuer().await;
    let oidc = OidcSettings {
        issuer: "https://login.example.com".into(),
        audience: "gomark".into(),
        jwks_url: format!("{}/jwks", idp.url),
        ..OidcSettings::default()
    };
    let gw = start(AuthSettings { oidc: Some(oidc), ..auth() }).await;
    let exp = chrono_now_ms() / 1000 + 600;
    let token = |company: Option<Value>| {
        let mut c = json!({"iss": "https://login.example.com", "aud": "gomark", "sub": "ada", "exp": exp, "gomark_role": "admin"});
        if let (Some(c), Some(company)) = (c.as_object_mut(), company) {
            c.insert("gomark_company".into(), company);
        }
        idp.token(c)
    };
    // A portfolio-wide list a company-scoped caller may not see: the scope shows in the answer.
    let call = |token: String| gw.http.get(format!("{}/v1/api-keys", gw.url)).bearer_auth(token).send();
    assert_eq!(call(token(None)).await.expect("send").status(), 200, "no claim: the portfolio");
    let scoped = call(token(Some(json!("c1")))).await.expect("send");
    assert_ne!(scoped.status(), 401, "one company id is a valid token");
    assert_ne!(scoped.status(), 500);
    for bad in [json!(["c1"]), json!(["c1", "c2"]), json!(7), json!(null), json!(""), json!([])] {
        let r = call(token(Some(bad.clone()))).await.expect("send");
        assert_eq!(r.status(), 403, "{bad} is refused, never widened to the portfolio");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn replicas_share_one_rate_limit_through_redis() {
    let Some(redis) = gomark_testkit::redis_url() else {
        gomark_testkit::note_skipped("shared rate limit", gomark_testkit::REDIS_VAR);
        return;
    };
    // Two gateways (replicas) on one database and one Redis prefix: one budget per key.
    let tdb = gomark_testkit::TestDatabase::sqlite();
    let prefix = gomark_testkit::unique("rl");
    let mut urls = Vec::new();
    let mut keep = Vec::new();
    let mut admin_key = None;
    for _ in 0..2 {
        let db = Database::connect(&tdb.settings).await.expect("db");
        let cache =
            Arc::new(gomark_cache::RedisCache::new(&redis, &prefix, std::time::Duration::from_secs(2)).expect("redis"));
        let settings = Settings {
            server: ServerSettings {
                grpc_addr: loopback(),
                admin_addr: loopback(),
                shutdown_grace_secs: 5,
                ..Default::default()
            },
            gateway: GatewaySettings { http_addr: loopback(), ..GatewaySettings::default() },
            auth: AuthSettings { rate_limit_per_minute: 4, ..AuthSettings::default() },
            ..Settings::default()
        };
        let gw = start_gateway(settings, db, cache, Shutdown::new()).await.expect("gateway");
        admin_key = admin_key.or(gw.bootstrap_admin_key.clone());
        urls.push(format!("http://{}", gw.http_addr));
        keep.push(gw.service);
    }
    let key = admin_key.expect("the first replica bootstrapped a key");
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = http.get(format!("{}/v1/api-keys", urls[i % 2])).bearer_auth(&key).send().await.expect("send");
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429], "4 a minute across both replicas");
}

/// Reads until the server closes the connection; how long that took.
async fn closed_within(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    use tokio::io::AsyncReadExt as _;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut() {
    use tokio::io::AsyncWriteExt as _;
    let gw = start(auth()).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let limit = std::time::Duration::from_secs(20);

    // One header line every two seconds, never finishing (slowloris).
    let (mut reader, mut slow) = tokio::net::TcpStream::connect(&addr).await.expect("connect").into_split();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gomark\r\n").await.expect("write");
    let trickle = async {
        for i in 0..20 {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            if slow.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let (_, cut) = tokio::join!(trickle, closed_within(&mut reader, limit));
    let cut = cut.expect("a trickling client is cut off");
    assert!(cut >= std::time::Duration::from_secs(5), "not before the timeout: {cut:?}");

    // A connection that never sends anything.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    assert!(closed_within(&mut idle, limit).await.is_some(), "an idle connection is closed");
}

#[tokio::test]
async fn unknown_keys_are_rate_limited_before_any_lookup() {
    let gw = start(AuthSettings { rate_limit_per_minute: 6, ..auth() }).await;
    let guess =
        |i: usize| gw.http.get(format!("{}/v1/api-keys", gw.url)).bearer_auth(format!("gmk_guess{i:040}")).send();
    for i in 0..6 {
        assert_eq!(guess(i).await.expect("send").status(), 401, "guess {i}");
    }
    let limited = guess(6).await.expect("send");
    assert_eq!(limited.status(), 429, "a client refused too often is limited");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(limited.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_docs_page_and_its_assets_are_public_and_typed() {
    let gw = start(auth()).await;
    let page = gw.http.get(format!("{}/docs", gw.url)).send().await.expect("send");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().expect("ascii").starts_with("text/html"));
    let csp = page.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.expect("html");
    let assets: Vec<&str> = html.split('"').filter(|s| s.starts_with("/docs/assets/")).collect();
    assert_eq!(assets.len(), 3, "{html}");
    for asset in assets {
        let reply = gw.http.get(format!("{}{asset}", gw.url)).send().await.expect("send");
        assert_eq!(reply.status(), 200, "{asset}");
        let kind = reply.headers()["content-type"].to_str().expect("ascii").to_owned();
        let expected = if asset.contains(".css") { "text/css" } else { "text/javascript" };
        assert!(kind.starts_with(expected), "{asset}: {kind}");
        assert!(reply.headers()["cache-control"].to_str().expect("ascii").contains("immutable"), "{asset}");
        assert!(reply.bytes().await.expect("body").len() > 100, "{asset}");
    }
    let missing = gw.http.get(format!("{}/docs/assets/nope.js", gw.url)).send().await.expect("send");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_api_keys_list_pages() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        api_keys_list_pages(start_on(auth(), tdb).await).await;
        eprintln!("api keys paged on {label}");
    }
}

async fn api_keys_list_pages(gw: Gateway) {
    for i in 0..4 {
        let created = gw.post("/v1/api-keys").json(&json!({"name": format!("k{i}"), "role": "viewer"})).send();
        assert_eq!(created.await.expect("send").status(), 201);
    }
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let query = cursor.as_ref().map_or_else(String::new, |c| format!("&cursor={c}"));
        let page: Value =
            gw.get(&format!("/v1/api-keys?limit=2{query}")).send().await.expect("send").json().await.expect("json");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2, "{page}");
        ids.extend(items.iter().map(|k| k["id"].as_str().expect("id").to_owned()));
        cursor = page["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "the pages end");
    assert_eq!(ids.len(), 5, "bootstrap + 4, each once: {ids:?}");
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(ids, sorted, "newest id first, no repeats");
    for bad in ["limit=0", "limit=501", "cursor=not-a-cursor"] {
        let reply = gw.get(&format!("/v1/api-keys?{bad}")).send().await.expect("send");
        assert_eq!(reply.status(), 400, "{bad}");
    }
}
