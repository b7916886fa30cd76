//! Deal records: paths (both versions), query strings, bodies, chunked batches.

use std::collections::BTreeMap;

use hubspot_client::{Error, HubSpotClient};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, VERSIONS, call, crm_prefix, deal_json, hubspot_error, token};

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test]
async fn record_calls_for_both_versions() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        server
            .push(Reply::json(
                200,
                json!({"results": [deal_json("1"), deal_json("2")], "paging": {"next": {"after": "2", "link": "https://api.hubapi.com/x"}}}),
            ))
            .push(Reply::json(200, json!({"results": [deal_json("3")]})))
            .push(Reply::json(200, deal_json("1")))
            .push(hubspot_error(404, "OBJECT_NOT_FOUND", None, "Object not found.  objectId are usually numeric."))
            .push(Reply::json(201, deal_json("4")))
            .push(Reply::json(200, deal_json("4")))
            .push(Reply::empty(204));
        let client = server.client_for(version);
        let t = token();

        let page = client.list_deals(&t, &["dealname", "amount"], None, 100).await.expect("page 1");
        assert_eq!(page.results.len(), 2);
        assert_eq!(page.next_after.as_deref(), Some("2"));
        let deal = &page.results[0];
        assert_eq!(
            (deal.stage(), deal.pipeline(), deal.amount(), deal.owner()),
            (Some("appointmentscheduled"), Some("default"), Some(1500.5), None)
        );
        assert_eq!(deal.last_modified(), Some(1_767_348_000_000));
        assert_eq!(deal.close_date(), Some(1_774_915_200_000));
        let last = client.list_deals(&t, &[], page.next_after.as_deref(), 10).await.expect("page 2");
        assert_eq!(last.next_after, None);

        assert_eq!(client.get_deal(&t, "1", &["dealstage"]).await.expect("get").map(|d| d.id), Some("1".into()));
        assert_eq!(client.get_deal(&t, "999", &[]).await.expect("404"), None);
        let created = client
            .create_deal(
                &t,
                &props(&[("dealname", "Acme"), ("dealstage", "appointmentscheduled"), ("pipeline", "default")]),
            )
            .await
            .expect("create");
        assert_eq!(created.id, "4");
        client.update_deal(&t, "4", &props(&[("amount", "10"), ("closedate", "")])).await.expect("update");
        client.archive_deal(&t, "4").await.expect("archive");

        let p = format!("{}/deals", crm_prefix(version, "objects"));
        assert_eq!(
            server.calls(),
            vec![
                call("GET", p.clone(), "limit=100&archived=false&properties=dealname%2Camount"),
                call("GET", p.clone(), "limit=10&archived=false&after=2"),
                call("GET", format!("{p}/1"), "properties=dealstage"),
                call("GET", format!("{p}/999"), ""),
                call("POST", p.clone(), ""),
                call("PATCH", format!("{p}/4"), ""),
                call("DELETE", format!("{p}/4"), ""),
            ]
        );
        let requests = server.requests();
        assert_eq!(
            requests[4].json(),
            json!({"properties": {"dealname": "Acme", "dealstage": "appointmentscheduled", "pipeline": "default"}, "associations": []})
        );
        assert_eq!(requests[5].json(), json!({"properties": {"amount": "10", "closedate": ""}}));
    }
}

#[tokio::test]
async fn list_limit_is_checked_locally() {
    let server = FakeServer::start().await;
    let client = server.client();
    for limit in [0, 101] {
        let err = client.list_deals(&token(), &[], None, limit).await.expect_err("limit");
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn batch_read_is_chunked_and_parses_207() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        server
            .push(Reply::json(200, json!({"status": "COMPLETE", "results": [deal_json("1")]})))
            .push(Reply::json(200, json!({"status": "COMPLETE", "results": [deal_json("101")]})))
            .push(Reply::json(
                207,
                json!({
                    "status": "COMPLETE", "results": [deal_json("201")], "numErrors": 1,
                    "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some DEAL objects, they may be deleted or not exist. Check that ids are valid.", "context": {"ids": ["249"]}}]
                }),
            ));
        let client = server.client_for(version);
        let ids: Vec<String> = (0..250).map(|i| i.to_string()).collect();
        let result = client.batch_read_deals(&token(), &ids, &["dealname", "dealstage"]).await.expect("batch read");
        assert_eq!(result.results.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec!["1", "101", "201"]);
        assert_eq!(result.errors.len(), 1);
        assert_eq!(result.errors[0].context["ids"], vec!["249"]);

        let path = format!("{}/deals/batch/read", crm_prefix(version, "objects"));
        assert_eq!(server.calls(), vec![call("POST", path.clone(), "archived=false"); 3]);
        let requests = server.requests();
        let first = requests[0].json();
        assert_eq!(first["properties"], json!(["dealname", "dealstage"]));
        assert_eq!(first["inputs"][0], json!({"id": "0"}));
        let sizes: Vec<usize> = requests.iter().map(|r| r.json()["inputs"].as_array().map_or(0, Vec::len)).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }
}

#[tokio::test]
async fn batch_create_is_chunked() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        server.always(Reply::json(201, json!({"status": "COMPLETE", "results": [deal_json("7")]})));
        let client: HubSpotClient = server.client_for(version);
        let inputs: Vec<BTreeMap<String, String>> = (0..250)
            .map(|i| props(&[("dealname", &format!("Deal {i}")), ("dealstage", "appointmentscheduled")]))
            .collect();
        let result = client.batch_create_deals(&token(), &inputs).await.expect("batch create");
        assert_eq!(result.results.len(), 3);
        let path = format!("{}/deals/batch/create", crm_prefix(version, "objects"));
        assert_eq!(server.calls(), vec![call("POST", path, ""); 3]);
        let requests = server.requests();
        assert_eq!(
            requests[0].json()["inputs"][0],
            json!({"properties": {"dealname": "Deal 0", "dealstage": "appointmentscheduled"}, "associations": []})
        );
        let sizes: Vec<usize> = requests.iter().map(|r| r.json()["inputs"].as_array().map_or(0, Vec::len)).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }
}
