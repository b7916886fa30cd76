//! Paths, bodies and status handling of the deal-property endpoints.

use hubspot_client::{ApiVersion, Error, HubSpotClient, PropertyCreate, PropertyOption, PropertyUpdate};
use serde_json::json;

use crate::fake_server::{FakeServer, Reply, TOKEN, hubspot_error, property_json, token};

#[tokio::test]
async fn list_uses_v3_path_and_sends_auth_headers() {
    let server = FakeServer::start().await;
    server.push(Reply::json(
        200,
        json!({"results": [property_json("gomark_score"), {"name": "dealname", "label": "Deal Name", "type": "string", "fieldType": "text", "description": null}]}),
    ));
    let properties = server.client().list_deal_properties(&token()).await.expect("list");
    assert_eq!(properties.len(), 2);
    assert_eq!(properties[0].name, "gomark_score");
    assert_eq!(properties[0].r#type, "number");
    assert_eq!(properties[0].display_order, Some(-1));
    assert_eq!(properties[0].updated_at.as_deref(), Some("2026-01-02T03:04:05.678Z"));
    assert!(properties[0].modification_metadata.is_some_and(|m| m.archivable));
    assert_eq!(properties[1].description, "");
    assert!(!properties[1].form_field);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/crm/v3/properties/deals");
    assert_eq!(request.headers.get("authorization").map(String::as_str), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(request.headers.get("accept").map(String::as_str), Some("application/json"));
}

#[tokio::test]
async fn date_versioned_paths() {
    let server = FakeServer::start().await;
    let client = HubSpotClient::new(hubspot_client::ClientConfig {
        api_version: ApiVersion::Date2026_03,
        base_url: format!("{}/", server.base_url),
        ..server.config()
    })
    .expect("client");
    let t = token();
    server
        .push(Reply::json(200, json!({"results": []})))
        .push(Reply::json(200, property_json("gomark_score")))
        .push(Reply::json(201, property_json("gomark_score")))
        .push(Reply::json(200, property_json("gomark_score")))
        .push(Reply::empty(204));
    assert!(client.list_deal_properties(&t).await.expect("list").is_empty());
    client.get_deal_property(&t, "gomark_score").await.expect("get");
    client
        .create_deal_property(&t, &PropertyCreate::new("gomark_score", "Score", "number", "number", "dealinformation"))
        .await
        .expect("create");
    client.update_deal_property(&t, "gomark_score", &PropertyUpdate::default()).await.expect("update");
    client.archive_deal_property(&t, "gomark_score").await.expect("archive");
    let seen: Vec<(String, String)> = server.requests().into_iter().map(|r| (r.method, r.path)).collect();
    let expect = |m: &str, p: &str| (m.to_owned(), p.to_owned());
    assert_eq!(
        seen,
        vec![
            expect("GET", "/crm/properties/2026-03/deals"),
            expect("GET", "/crm/properties/2026-03/deals/gomark_score"),
            expect("POST", "/crm/properties/2026-03/deals"),
            expect("PATCH", "/crm/properties/2026-03/deals/gomark_score"),
            expect("DELETE", "/crm/properties/2026-03/deals/gomark_score"),
        ]
    );
}

#[tokio::test]
async fn get_found_and_not_found() {
    let server = FakeServer::start().await;
    server.push(Reply::json(200, property_json("gomark_score"))).push(hubspot_error(
        404,
        "OBJECT_NOT_FOUND",
        None,
        "Unable to find property gomark_missing",
    ));
    let client = server.client();
    let found = client.get_deal_property(&token(), "gomark_score").await.expect("get");
    assert_eq!(found.map(|p| p.name), Some("gomark_score".to_owned()));
    let missing = client.get_deal_property(&token(), "gomark_missing").await.expect("404 is not an error");
    assert_eq!(missing, None);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "404 is not retried");
    assert_eq!(requests[0].path, "/crm/v3/properties/deals/gomark_score");
    assert_eq!(requests[1].path, "/crm/v3/properties/deals/gomark_missing");
}

#[tokio::test]
async fn create_sends_camel_case_and_accepts_201() {
    let server = FakeServer::start().await;
    server.push(Reply::json(201, property_json("gomark_tier")));
    let input = PropertyCreate {
        description: Some("Tier".into()),
        options: vec![PropertyOption { display_order: Some(0), ..PropertyOption::new("Gold", "gold") }],
        form_field: Some(true),
        ..PropertyCreate::new("gomark_tier", "Tier", "enumeration", "select", "dealinformation")
    };
    let created = server.client().create_deal_property(&token(), &input).await.expect("create");
    assert_eq!(created.name, "gomark_tier");
    let requests = server.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/crm/v3/properties/deals");
    assert_eq!(requests[0].headers.get("content-type").map(String::as_str), Some("application/json"));
    assert_eq!(
        requests[0].json(),
        json!({
            "name": "gomark_tier",
            "label": "Tier",
            "type": "enumeration",
            "fieldType": "select",
            "groupName": "dealinformation",
            "description": "Tier",
            "options": [{"label": "Gold", "value": "gold", "displayOrder": 0, "hidden": false}],
            "formField": true
        })
    );
}

#[tokio::test]
async fn update_patches_without_name() {
    let server = FakeServer::start().await;
    let mut updated = property_json("gomark_score");
    updated["label"] = json!("Renamed");
    server.push(Reply::json(200, updated));
    let input = PropertyUpdate {
        label: Some("Renamed".into()),
        group_name: Some("gomark".into()),
        options: Some(vec![]),
        ..PropertyUpdate::default()
    };
    let property = server.client().update_deal_property(&token(), "gomark_score", &input).await.expect("update");
    assert_eq!(property.label, "Renamed");
    let request = &server.requests()[0];
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.path, "/crm/v3/properties/deals/gomark_score");
    let body = request.json();
    assert_eq!(body, json!({"label": "Renamed", "groupName": "gomark", "options": []}));
    assert!(body.get("name").is_none());
}

#[tokio::test]
async fn archive_204_and_404() {
    let server = FakeServer::start().await;
    server.push(Reply::empty(204)).push(hubspot_error(404, "OBJECT_NOT_FOUND", None, "not found"));
    let client = server.client();
    client.archive_deal_property(&token(), "gomark_score").await.expect("archive");
    let err = client.archive_deal_property(&token(), "gomark_gone").await.expect_err("404");
    assert!(
        matches!(err, Error::Api { status: 404, ref category, .. } if category.as_deref() == Some("OBJECT_NOT_FOUND")),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(404));
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.method == "DELETE"));
}

#[tokio::test]
async fn conflict_409_is_parsed_and_not_retried() {
    let server = FakeServer::start().await;
    server.always(hubspot_error(
        409,
        "OBJECT_ALREADY_EXISTS",
        Some("Properties.PROPERTY_WITH_NAME_EXISTS"),
        "A property named 'gomark_score' already exists.",
    ));
    let err = server
        .client()
        .create_deal_property(
            &token(),
            &PropertyCreate::new("gomark_score", "Score", "number", "number", "dealinformation"),
        )
        .await
        .expect_err("409");
    assert_eq!(
        err,
        Error::Api {
            status: 409,
            category: Some("OBJECT_ALREADY_EXISTS".into()),
            sub_category: Some("Properties.PROPERTY_WITH_NAME_EXISTS".into()),
            message: "A property named 'gomark_score' already exists.".into(),
            correlation_id: Some("aeb5f871-7f07-4993-9211-075dc63e7cbf".into()),
        }
    );
    assert!(!err.is_retryable());
    assert_eq!(server.requests().len(), 1, "a create answered 409 is never retried");
}

#[tokio::test]
async fn validation_error_and_non_json_bodies() {
    let server = FakeServer::start().await;
    server
        .push(Reply::json(
            400,
            json!({"status":"error","message":"Property values were not valid","category":"VALIDATION_ERROR","errors":[{"message":"bad type","code":"INVALID","subCategory":"Properties.INVALID_TYPE"}]}),
        ))
        .push(Reply::text(403, "<html>Forbidden</html>"));
    let client = server.client();
    let err = client.list_deal_properties(&token()).await.expect_err("400");
    assert!(
        matches!(&err, Error::Validation(r) if r.rule.as_deref() == Some("INVALID")
            && r.sub_category.as_deref() == Some("Properties.INVALID_TYPE") && r.correlation_id.is_none()),
        "{err:?}"
    );
    let err = client.list_deal_properties(&token()).await.expect_err("403");
    assert!(
        matches!(&err, Error::Api { status: 403, message, category: None, .. } if message == "unexpected response"),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 2, "4xx are not retried");
}

#[tokio::test]
async fn malformed_success_body_is_a_decode_error() {
    let server = FakeServer::start().await;
    server.always(Reply::text(200, "not json"));
    let err = server.client().list_deal_properties(&token()).await.expect_err("decode");
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn property_names_are_percent_encoded() {
    let server = FakeServer::start().await;
    server.push(hubspot_error(404, "OBJECT_NOT_FOUND", None, "nope"));
    let got = server.client().get_deal_property(&token(), "a b/../c").await.expect("get");
    assert_eq!(got, None);
    assert_eq!(server.requests()[0].path, "/crm/v3/properties/deals/a%20b%2F..%2Fc");
}
