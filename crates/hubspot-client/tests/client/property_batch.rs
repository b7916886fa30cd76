//! Property batch endpoints and property groups: paths (both versions), bodies, 207, chunking.

use hubspot_client::{PropertyCreate, PropertyGroupCreate, PropertyGroupUpdate};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, VERSIONS, call, crm_prefix, hubspot_error, property_json, token};

#[tokio::test]
async fn batch_paths_and_bodies_for_both_versions() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        server
            .push(Reply::json(201, json!({"status": "COMPLETE", "results": [property_json("gomark_a")]})))
            .push(Reply::json(200, json!({"status": "COMPLETE", "results": [property_json("gomark_a")]})))
            .push(Reply::empty(204));
        let client = server.client_for(version);
        let t = token();
        let created = client
            .batch_create_deal_properties(
                &t,
                &[PropertyCreate::new("gomark_a", "A", "string", "text", "dealinformation")],
            )
            .await
            .expect("create");
        assert_eq!(created.results[0].name, "gomark_a");
        assert!(created.is_complete());
        let read = client.batch_read_deal_properties(&t, &["gomark_a"], false).await.expect("read");
        assert_eq!(read.results.len(), 1);
        client.batch_archive_deal_properties(&t, &[String::from("gomark_a")]).await.expect("archive");

        let prefix = crm_prefix(version, "properties");
        assert_eq!(
            server.calls(),
            vec![
                call("POST", format!("{prefix}/deals/batch/create"), ""),
                call("POST", format!("{prefix}/deals/batch/read"), ""),
                call("POST", format!("{prefix}/deals/batch/archive"), ""),
            ]
        );
        let bodies: Vec<_> = server.requests().iter().map(|r| r.json()).collect();
        assert_eq!(
            bodies[0],
            json!({"inputs": [{"name": "gomark_a", "label": "A", "type": "string", "fieldType": "text", "groupName": "dealinformation"}]})
        );
        assert_eq!(
            bodies[1],
            json!({"archived": false, "dataSensitivity": "non_sensitive", "inputs": [{"name": "gomark_a"}]})
        );
        assert_eq!(bodies[2], json!({"inputs": [{"name": "gomark_a"}]}));
    }
}

#[tokio::test]
async fn multi_status_207_is_parsed() {
    let server = FakeServer::start().await;
    server.push(Reply::json(
        207,
        json!({
            "status": "COMPLETE",
            "results": [property_json("dealname")],
            "numErrors": 1,
            "errors": [{
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "subCategory": "Properties.PROPERTY_NOT_FOUND",
                "message": "Unable to find property gomark_missing",
                "context": {"names": ["gomark_missing"]},
                "errors": [],
                "links": {}
            }],
            "startedAt": "2026-01-01T00:00:00Z",
            "completedAt": "2026-01-01T00:00:01Z"
        }),
    ));
    let result =
        server.client().batch_read_deal_properties(&token(), &["dealname", "gomark_missing"], true).await.expect("207");
    assert_eq!(result.results.len(), 1);
    assert_eq!(result.errors.len(), 1);
    let error = &result.errors[0];
    assert_eq!(error.category, "OBJECT_NOT_FOUND");
    assert_eq!(error.sub_category.as_deref(), Some("Properties.PROPERTY_NOT_FOUND"));
    assert_eq!(error.context["names"], vec!["gomark_missing"]);
    assert_eq!(server.requests()[0].json()["archived"], json!(true));
}

#[tokio::test]
async fn batches_are_chunked_at_100_and_merged() {
    let server = FakeServer::start().await;
    server.always(Reply::json(
        207,
        json!({"status": "COMPLETE", "results": [property_json("x")], "errors": [{"status": "error", "category": "VALIDATION_ERROR", "message": "m"}], "numErrors": 1}),
    ));
    let client = server.client();
    let inputs: Vec<PropertyCreate> = (0..250)
        .map(|i| PropertyCreate::new(format!("gomark_{i}"), format!("P{i}"), "string", "text", "dealinformation"))
        .collect();
    let created = client.batch_create_deal_properties(&token(), &inputs).await.expect("create");
    assert_eq!((created.results.len(), created.errors.len()), (3, 3));
    let sizes: Vec<usize> =
        server.requests().iter().map(|r| r.json()["inputs"].as_array().map_or(0, Vec::len)).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let first = server.requests()[0].json();
    assert_eq!(first["inputs"][0]["name"], "gomark_0");
    assert_eq!(server.requests()[2].json()["inputs"][49]["name"], "gomark_249");

    let names: Vec<String> = (0..250).map(|i| format!("gomark_{i}")).collect();
    client.batch_read_deal_properties(&token(), &names, false).await.expect("read");
    server.always(Reply::empty(204));
    client.batch_archive_deal_properties(&token(), &names).await.expect("archive");
    let sizes: Vec<usize> =
        server.requests()[3..].iter().map(|r| r.json()["inputs"].as_array().map_or(0, Vec::len)).collect();
    assert_eq!(sizes, vec![100, 100, 50, 100, 100, 50]);

    // Nothing to do, no call.
    client.batch_archive_deal_properties::<&str>(&token(), &[]).await.expect("empty");
    assert_eq!(server.requests().len(), 9);
}

#[tokio::test]
async fn failing_chunk_stops_the_batch() {
    let server = FakeServer::start().await;
    server.push(Reply::json(201, json!({"results": []}))).push(hubspot_error(
        400,
        "VALIDATION_ERROR",
        None,
        "bad input",
    ));
    let names: Vec<String> = (0..250).map(|i| format!("gomark_{i}")).collect();
    let err = server.client().batch_read_deal_properties(&token(), &names, false).await.expect_err("400");
    assert_eq!(err.status(), Some(400));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn groups_for_both_versions() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        let group = json!({"name": "gomark", "label": "GoMark", "displayOrder": 2, "archived": false});
        server
            .push(Reply::json(200, json!({"results": [group.clone(), {"name": "dealinformation", "label": "Deal information", "displayOrder": -1}]})))
            .push(Reply::json(200, group.clone()))
            .push(hubspot_error(404, "OBJECT_NOT_FOUND", None, "no group"))
            .push(Reply::json(201, group.clone()))
            .push(Reply::json(200, group))
            .push(Reply::empty(204));
        let client = server.client_for(version);
        let t = token();
        let groups = client.list_deal_property_groups(&t).await.expect("list");
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].name.as_str(), groups[0].display_order, groups[0].archived), ("gomark", 2, false));
        assert_eq!(groups[1].display_order, -1);
        assert_eq!(
            client.get_deal_property_group(&t, "gomark").await.expect("get").map(|g| g.label),
            Some("GoMark".into())
        );
        assert_eq!(client.get_deal_property_group(&t, "missing").await.expect("404"), None);
        client
            .create_deal_property_group(
                &t,
                &PropertyGroupCreate { display_order: Some(2), ..PropertyGroupCreate::new("gomark", "GoMark") },
            )
            .await
            .expect("create");
        client
            .update_deal_property_group(
                &t,
                "gomark",
                &PropertyGroupUpdate { label: Some("GoMark 2".into()), display_order: None },
            )
            .await
            .expect("update");
        client.archive_deal_property_group(&t, "gomark").await.expect("archive");

        let p = format!("{}/deals/groups", crm_prefix(version, "properties"));
        assert_eq!(
            server.calls(),
            vec![
                call("GET", p.clone(), ""),
                call("GET", format!("{p}/gomark"), ""),
                call("GET", format!("{p}/missing"), ""),
                call("POST", p.clone(), ""),
                call("PATCH", format!("{p}/gomark"), ""),
                call("DELETE", format!("{p}/gomark"), ""),
            ]
        );
        let requests = server.requests();
        assert_eq!(requests[3].json(), json!({"name": "gomark", "label": "GoMark", "displayOrder": 2}));
        assert_eq!(requests[4].json(), json!({"label": "GoMark 2"}));
    }
}
