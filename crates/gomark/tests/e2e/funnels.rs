//! Funnels end to end: deals made in HubSpot reach the funnel stream, the REST reads
//! (now, at a past date, the waterfall, the portfolio) and the server-sent events.

use crate::scenarios::create_company;
use crate::support::Api;
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::{Caller, Shutdown};
use gomark_proto::pipeline_tracker::v1 as pt;
use hubspot_sim::HubSpotSim;
use reqwest::Method;
use std::net::SocketAddr;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(40);

/// The next streamed funnel that satisfies `done`.
async fn until(
    stream: &mut tonic::Streaming<pt::Funnel>,
    what: &str,
    done: impl Fn(&pt::Funnel) -> bool,
) -> pt::Funnel {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        let funnel = next
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("stream healthy")
            .expect("stream open");
        if done(&funnel) {
            return funnel;
        }
    }
}

pub async fn funnel_follows_deals(api: &Api, sim: &HubSpotSim, tracker: SocketAddr, token: &str, portal: u64) {
    let company = create_company(api, sim, "Funnel Co", token, portal).await;
    // A channel like the services' own, so the caller travels signed with this process's key.
    let channel =
        gomark_platform::grpc_client::channel(&format!("http://{tracker}"), Duration::from_secs(30)).expect("channel");
    let mut client = pt::pipeline_tracker_service_client::PipelineTrackerServiceClient::new(channel);
    let watch = pt::GetFunnelRequest { company_id: company.clone(), ..Default::default() };
    let mut stream = client.watch_funnel(Caller::system("test").request(watch)).await.expect("watch").into_inner();
    let first = until(&mut stream, "the first funnel", |_| true).await;
    assert_eq!(first.open_count, 0);
    let before = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let ids = sim.create_deals(token, 3, "appointmentscheduled", "default");
    for (i, id) in ids.iter().enumerate() {
        sim.update_deal(token, id, [("amount", format!("{}", (i + 1) * 1000))]).expect("amount");
    }
    let usd = |units: i64| Some(gomark_proto::common::v1::Money { currency_code: "USD".into(), units, nanos: 0 });
    let f =
        until(&mut stream, "three open deals worth 6000", |f| f.open_count == 3 && f.open_amount_money == usd(6000))
            .await;
    // Exactly 6000 × 0.2: the sim's deals carry deal_currency_code (the company currency).
    assert_eq!(f.weighted_forecast_money, usd(1200), "{f:?}");
    // Read now, so the gateway holds this answer when the deal is won.
    let open = api.send(Method::GET, &format!("/v1/companies/{company}/funnels/default"), None).await.body;
    assert_eq!((open["openCount"].as_u64(), open["wonCount"].as_u64()), (Some(3), Some(0)), "{open}");
    sim.update_deal(token, &ids[0], [("dealstage", "closedwon")]).expect("won");
    let f = until(&mut stream, "one deal won", |f| f.won_count == 1).await;
    assert_eq!((f.open_count, f.won_amount_money.clone(), f.win_rate), (2, usd(1000), 1.0));
    // The gateway reuses a funnel for at most 0.5 s (README): a poll sees the change by then.
    let seen = std::time::Instant::now();
    loop {
        let now = api.send(Method::GET, &format!("/v1/companies/{company}/funnels/default"), None).await.body;
        if now["wonCount"] == 1 {
            break;
        }
        assert!(seen.elapsed() < Duration::from_millis(1500), "still stale after {:?}: {now}", seen.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Time travel: before the deals, the funnel was empty.
    let at = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let past = api.send(Method::GET, &format!("/v1/companies/{company}/funnels/default?at={at}"), None).await;
    assert_eq!(past.status, 200, "{}", past.body);
    assert_eq!((past.body["openCount"].as_u64(), past.body["wonCount"].as_u64()), (Some(0), Some(0)), "{}", past.body);
    let now = api.send(Method::GET, &format!("/v1/companies/{company}/funnels/default"), None).await.body;
    assert_eq!(now["wonCount"], 1, "{now}");
    assert_eq!(now["stages"][0]["label"], "Appointment Scheduled", "labels come from the pipeline: {now}");

    let to = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let w = api
        .send(Method::GET, &format!("/v1/companies/{company}/funnels/default/waterfall?from={at}&to={to}"), None)
        .await;
    assert_eq!(w.status, 200, "{}", w.body);
    assert_eq!(
        (w.body["created"]["count"].as_u64(), w.body["won"]["count"].as_u64()),
        (Some(3), Some(1)),
        "{}",
        w.body
    );
    assert_eq!(w.body["end"]["amount"], serde_json::json!({"amount": "5000", "currency": "USD"}), "{}", w.body);
    // Each bar names its deals, largest first, with the deal as it was at each date.
    let listed = |bar: &str| -> Vec<(String, String, String)> {
        w.body[bar]["deals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let field = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                (field("dealId"), field("name"), d["amount"]["amount"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    };
    let deal = |i: usize, amount: &str| (ids[i].clone(), format!("Deal {}", i + 1), amount.to_owned());
    assert_eq!(listed("created"), [deal(2, "3000"), deal(1, "2000"), deal(0, "1000")], "{}", w.body);
    assert_eq!(listed("won"), [deal(0, "1000")], "{}", w.body);
    assert_eq!(w.body["won"]["deals"][0]["after"]["stageId"], "closedwon", "{}", w.body);
    assert!(w.body["won"]["deals"][0].get("before").is_none(), "not yet created at `from`: {}", w.body);
    assert_eq!(w.body["created"]["dealsTruncated"], false, "{}", w.body);
    let one = api
        .send(
            Method::GET,
            &format!("/v1/companies/{company}/funnels/default/waterfall?from={at}&to={to}&dealLimit=1"),
            None,
        )
        .await
        .body;
    assert_eq!(
        (one["created"]["count"].as_u64(), one["created"]["dealsTruncated"].as_bool()),
        (Some(3), Some(true)),
        "{one}"
    );
    assert_eq!(one["created"]["deals"].as_array().map(Vec::len), Some(1), "{one}");
    let many = api
        .send(
            Method::GET,
            &format!("/v1/companies/{company}/funnels/default/waterfall?from={at}&to={to}&dealLimit=500"),
            None,
        )
        .await;
    assert_eq!(many.problem(400)["errors"][0]["field"], "dealLimit", "{}", many.body);

    let p = api.send(Method::GET, &format!("/v1/portfolio/funnel?companyIds={company}"), None).await.body;
    assert_eq!((p["totals"]["openCount"].as_u64(), p["companyCount"].as_u64()), (Some(2), Some(1)), "{p}");
    assert_eq!(p["items"][0]["companyName"], "Funnel Co", "{p}");
    assert_eq!(p["reportingCurrency"], "USD", "{p}");

    // Exchange rates by REST: checked, stored, then shown on the rows they convert.
    let rates = serde_json::json!({"rates": [{"date": "2026-01-01", "from": "GBP", "to": "USD", "rate": "1.25"}]});
    let put = api.send(Method::PUT, "/v1/portfolio/fx-rates", Some(rates)).await;
    assert_eq!((put.status.as_u16(), put.body["stored"].as_u64()), (200, Some(1)), "{}", put.body);
    let bad = serde_json::json!({"rates": [{"date": "2026-01-01", "from": "GBP", "to": "USD", "rate": "-1"}]});
    let bad = api.send(Method::PUT, "/v1/portfolio/fx-rates", Some(bad)).await;
    assert!(bad.problem(400)["detail"].as_str().expect("detail").contains("rates[0].rate"), "{}", bad.body);

    // The same funnel as server-sent events through the gateway.
    let http = reqwest::Client::builder().timeout(TIMEOUT).build().expect("client");
    let mut resp = http
        .get(format!("{}/v1/companies/{company}/funnels/default/events", api.base))
        .bearer_auth(api.token().expect("token"))
        .send()
        .await
        .expect("sse");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = resp.chunk().await.expect("chunk").expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: funnel\ndata: {"), "{text}");
    assert!(text.contains("\"openCount\":2"), "{text}");
    drop(resp);

    // Pipelines, and a wrong request named clearly.
    let pipelines = api.send(Method::GET, &format!("/v1/companies/{company}/pipelines"), None).await.body;
    assert_eq!(pipelines["items"][0]["pipelineId"], "default", "{pipelines}");
    let bad = api
        .send(Method::GET, &format!("/v1/companies/{company}/funnels/default/waterfall?from={to}&to={at}"), None)
        .await;
    // The service names the query parameter itself, now that its field is a Timestamp `to`.
    assert_eq!(bad.problem(400)["errors"][0]["field"], "to", "{}", bad.body);
    let bad = api.send(Method::GET, &format!("/v1/companies/{company}/funnels/default?at=yesterday"), None).await;
    assert!(bad.problem(400)["detail"].as_str().expect("detail").contains("at"), "{}", bad.body);
}

#[tokio::test]
async fn embedded_funnels_follow_hubspot_deals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let tracker = gomark.grpc_addr("pipeline-tracker").expect("tracker");
    funnel_follows_deals(&api, &gomark.hubspot_sim, tracker, "funnel-token", 961).await;
    // The dashboard page is served without a key (it holds no data).
    let page = Api::anonymous(&gomark.gateway_url).send(Method::GET, "/dashboard", None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.as_str().is_some_and(|html| html.contains("live sales funnels")));
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// Metric definitions as code through REST: the defaults at first, then a revision's
/// `baseline.metrics` and overlay tags, which every figure and benchmark then names.
#[tokio::test]
async fn embedded_benchmarks_follow_the_metric_definitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let sim = &gomark.hubspot_sim;
    let a = create_company(&api, sim, "Bench A", "bench-a", 971).await;
    let b = create_company(&api, sim, "Bench B", "bench-b", 972).await;
    // A wins 2 of 2, B 1 of 2.
    sim.create_deals("bench-a", 2, "closedwon", "default");
    sim.create_deals("bench-b", 1, "closedwon", "default");
    sim.create_deals("bench-b", 1, "closedlost", "default");
    let ids = format!("{a},{b}");
    crate::support::eventually("both companies' deals counted", TIMEOUT, || async {
        let p = api.send(Method::GET, &format!("/v1/portfolio/funnel?companyIds={ids}"), None).await.body;
        (p["totals"]["wonCount"] == 3 && p["totals"]["lostCount"] == 1).then_some(())
    })
    .await;

    let defs = api.send(Method::GET, "/v1/metrics/definitions", None).await.body;
    assert_eq!((defs["revision"].as_i64(), defs["minDeals"].as_u64()), (Some(0), Some(5)), "{defs}");
    let bench = api.send(Method::GET, &format!("/v1/portfolio/benchmarks?metric=winRate&companyIds={ids}"), None).await;
    assert_eq!(bench.status, 200, "{}", bench.body);
    // Two deals per company are below the default five: not enough data, and no number.
    let company = &bench.body["metrics"][0]["groups"][0]["companies"][0];
    assert_eq!((company["value"]["notEnoughData"].as_bool(), company["value"].get("value")), (Some(true), None));

    let doc = format!(
        "baseline:\n  metrics:\n    minimumSample: {{deals: 2, companies: 2}}\ncompanies:\n  a: {{companyId: \"{a}\", tags: {{salesMotion: plg}}}}\n  b: {{companyId: \"{b}\", tags: {{salesMotion: plg}}}}\n"
    );
    let revision = api
        .send(Method::POST, "/v1/config/revisions", Some(serde_json::json!({"document": doc, "message": "metrics"})))
        .await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    let number = revision.body["number"].as_i64().expect("number");
    crate::support::eventually("the new definitions in force", TIMEOUT, || async {
        let defs = api.send(Method::GET, "/v1/metrics/definitions", None).await.body;
        (defs["revision"].as_i64() == Some(number)).then_some(())
    })
    .await;
    let path = format!("/v1/portfolio/benchmarks?metric=winRate&groupBy=salesMotion&companyIds={ids}");
    let bench = api.send(Method::GET, &path, None).await.body;
    assert_eq!(bench["definitionRevision"].as_i64(), Some(number), "{bench}");
    let group = &bench["metrics"][0]["groups"][0];
    assert_eq!((group["tagValue"].as_str(), group["p50"].as_f64()), (Some("plg"), Some(0.75)), "{bench}");
    let rank = |id: &str| {
        group["companies"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["companyId"] == id))
            .map(|c| c["percentileRank"].clone())
    };
    assert_eq!((rank(&a), rank(&b)), (Some(serde_json::json!(75.0)), Some(serde_json::json!(25.0))), "{bench}");
    let p = api.send(Method::GET, &format!("/v1/portfolio/funnel?companyIds={ids}"), None).await.body;
    assert_eq!(p["items"][0]["definitionRevision"].as_i64(), Some(number), "{p}");
    assert_eq!(p["items"][0]["metrics"]["winRate"]["sampleSize"].as_u64(), Some(2), "{p}");
    let bad = api.send(Method::GET, "/v1/portfolio/benchmarks?metric=revenue", None).await;
    assert!(bad.problem(400)["detail"].as_str().expect("detail").contains("metric"), "{}", bad.body);
    gomark.shutdown.trigger();
}
