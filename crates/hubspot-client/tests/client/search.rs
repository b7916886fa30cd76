//! Deal search: path (both versions), wire format, local validation, "secondly" 429 retries.

use std::time::{Duration, Instant};

use hubspot_client::{ClientConfig, Error, Filter, FilterGroup, HubSpotClient, RateLimitPolicy, SearchRequest, Sort};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, VERSIONS, call, crm_prefix, deal_json, token};

fn secondly() -> Reply {
    Reply::json(
        429,
        json!({"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT", "correlationId": "c"}),
    )
}

fn groups(sizes: &[usize]) -> Vec<FilterGroup> {
    sizes.iter().map(|n| FilterGroup::new((0..*n).map(|i| Filter::eq(format!("p{i}"), "x")).collect())).collect()
}

#[tokio::test]
async fn search_path_body_and_response() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        server.push(Reply::json(
            200,
            json!({"total": 412, "results": [deal_json("1"), deal_json("2")], "paging": {"next": {"after": "2", "link": "x"}}}),
        ));
        let request = SearchRequest {
            filter_groups: vec![FilterGroup::new(vec![
                Filter::gte("hs_lastmodifieddate", "1767225600000"),
                Filter::in_list("dealstage", ["closedwon", "closedlost"], true),
            ])],
            sorts: vec![Sort::desc("amount")],
            properties: vec!["dealname".into(), "amount".into()],
            limit: 2,
            after: Some("0".into()),
            query: Some("acme".into()),
        };
        let page = server.client_for(version).search_deals(&token(), &request).await.expect("search");
        assert_eq!(page.total, 412);
        assert_eq!(page.results.len(), 2);
        assert_eq!(page.next_after.as_deref(), Some("2"));
        assert_eq!(server.calls(), vec![call("POST", format!("{}/deals/search", crm_prefix(version, "objects")), "")]);
        assert_eq!(
            server.requests()[0].json(),
            json!({
                "filterGroups": [{"filters": [
                    {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1767225600000"},
                    {"propertyName": "dealstage", "operator": "NOT_IN", "values": ["closedwon", "closedlost"]}
                ]}],
                "sorts": [{"propertyName": "amount", "direction": "DESCENDING"}],
                "properties": ["dealname", "amount"],
                "limit": 2,
                "after": "0",
                "query": "acme"
            })
        );
    }
}

#[tokio::test]
async fn over_cap_requests_never_reach_hubspot() {
    let server = FakeServer::start().await;
    let client = server.client();
    let refused = [
        SearchRequest { filter_groups: groups(&[1; 6]), ..SearchRequest::default() },
        SearchRequest { filter_groups: groups(&[7]), ..SearchRequest::default() },
        SearchRequest { filter_groups: groups(&[6, 6, 6, 1]), ..SearchRequest::default() },
        SearchRequest { filter_groups: groups(&[5, 5, 5, 4]), ..SearchRequest::default() },
        SearchRequest { limit: 201, ..SearchRequest::default() },
        SearchRequest { query: Some("q".repeat(3001)), ..SearchRequest::default() },
    ];
    for request in &refused {
        let err = client.search_deals(&token(), request).await.expect_err("refused");
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert!(server.requests().is_empty());

    // The caps themselves are allowed.
    server.always(Reply::json(200, json!({"total": 0, "results": []})));
    for request in [
        SearchRequest { filter_groups: groups(&[6, 6, 6]), ..SearchRequest::default() },
        SearchRequest { filter_groups: groups(&[1; 5]), limit: 200, ..SearchRequest::default() },
    ] {
        client.search_deals(&token(), &request).await.expect("at the caps");
    }
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn secondly_limit_is_retried_after_a_tenth_of_the_burst_backoff() {
    let server = FakeServer::start().await;
    server.push(secondly()).push(secondly()).push(Reply::json(200, json!({"total": 0, "results": []})));
    // rate_limit_backoff 10 s in production → 1 s × n for search; here 300 ms → 30 ms × n.
    let client = HubSpotClient::new(ClientConfig { rate_limit_backoff: Duration::from_millis(300), ..server.config() })
        .expect("client");
    let started = Instant::now();
    client.search_deals(&token(), &SearchRequest::default()).await.expect("retried");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(90), "30 ms + 60 ms expected, got {elapsed:?}");
    assert!(elapsed < Duration::from_millis(290), "must not wait the burst backoff, got {elapsed:?}");
    assert_eq!(server.requests().len(), 3);

    server.always(secondly());
    let err = server.client().search_deals(&token(), &SearchRequest::default()).await.expect_err("429");
    assert_eq!(err, Error::RateLimited { policy: RateLimitPolicy::Secondly, retry_after: None });
}
