//! Pipelines and stages.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{DEALS, PIPELINES, assert_error, start};
use hubspot_sim::SimConfig;

fn stage(label: &str, order: i64, probability: &str) -> serde_json::Value {
    json!({"label": label, "displayOrder": order, "metadata": {"probability": probability}})
}

#[tokio::test]
async fn default_pipeline_and_crud() {
    let sim = start(SimConfig::default()).await;
    for path in [PIPELINES, "/crm/pipelines/2026-03/deals", "/crm/v3/pipelines/0-3"] {
        let (status, list) = sim.json(Method::GET, "tok", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let results = list["results"].as_array().expect("results");
        assert_eq!(results.len(), 1);
        assert_eq!(results[0]["id"], "default");
        assert_eq!(results[0]["label"], "Sales Pipeline");
        let stages = results[0]["stages"].as_array().expect("stages");
        let ids: Vec<&str> = stages.iter().filter_map(|s| s["id"].as_str()).collect();
        assert_eq!(
            ids,
            [
                "appointmentscheduled",
                "qualifiedtobuy",
                "presentationscheduled",
                "decisionmakerboughtin",
                "contractsent",
                "closedwon",
                "closedlost"
            ]
        );
        assert_eq!(stages[0]["metadata"], json!({"probability": "0.2", "isClosed": "false"}));
        assert_eq!(stages[5]["metadata"], json!({"probability": "1.0", "isClosed": "true"}));
        assert_eq!(stages[6]["metadata"], json!({"probability": "0.0", "isClosed": "true"}));
    }
    assert_eq!(sim.sim.pipeline("tok", "default").expect("helper")["stages"][4]["metadata"]["probability"], "0.9");

    let body =
        json!({"label": "Renewals", "displayOrder": 1, "stages": [stage("Open", 0, "0.5"), stage("Won", 1, "1.0")]});
    let (status, created) = sim.json(Method::POST, "tok", PIPELINES, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.parse::<u64>().is_ok(), "HubSpot ids are numeric strings: {id}");
    assert!(created["stages"][0]["id"].as_str().expect("stage id").parse::<u64>().is_ok());
    assert_eq!(created["stages"][0]["metadata"]["isClosed"], "false");

    let (status, dup) = sim.json(Method::POST, "tok", PIPELINES, Some(body)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&dup, "OBJECT_ALREADY_EXISTS");
    let (status, _) =
        sim.json(Method::POST, "tok", PIPELINES, Some(json!({"label": "No stages", "displayOrder": 2}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let path = format!("{PIPELINES}/{id}");
    let (status, patched) = sim.json(Method::PATCH, "tok", &path, Some(json!({"label": "Renewals 2"}))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["label"], "Renewals 2");
    let (status, _) = sim.json(Method::PATCH, "tok", &path, Some(json!({"label": "Sales Pipeline"}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    for bad in [json!({"archived": true}), json!({"archived": false})] {
        let (status, body) = sim.json(Method::PATCH, "tok", &path, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    let resp = sim.call(Method::DELETE, "tok", &path, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, _) = sim.json(Method::GET, "tok", &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim.json(Method::PATCH, "tok", &path, Some(json!({"label": "x"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, restored) = sim.json(Method::PATCH, "tok", &path, Some(json!({"archived": false}))).await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["archived"], false);

    // PUT replaces the stage list: keep "Open" (by id), drop "Won", add "Lost".
    let open_id = created["stages"][0]["id"].clone();
    let put = json!({"label": "Renewals", "displayOrder": 3, "stages": [
        {"stageId": open_id, "label": "Open again", "displayOrder": 0, "metadata": {"probability": "0.4"}},
        {"label": "Lost", "displayOrder": 1, "metadata": {"probability": "0.0", "isClosed": "true"}}
    ]});
    let (status, replaced) = sim.json(Method::PUT, "tok", &path, Some(put)).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["stages"].as_array().map(Vec::len), Some(2));
    assert_eq!(replaced["stages"][0]["id"], open_id);
    assert_eq!(replaced["stages"][0]["label"], "Open again");
    assert_eq!(replaced["stages"][1]["metadata"]["isClosed"], "true");

    // Another portal is untouched.
    let (_, other) = sim.json(Method::GET, "other", PIPELINES, None).await;
    assert_eq!(other["results"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn stage_crud_and_probability_validation() {
    let sim = start(SimConfig::default()).await;
    let stages = format!("{PIPELINES}/default/stages");
    for bad in [
        stage("Quarter", 9, "0.25"),
        stage("Too high", 9, "1.1"),
        stage("Negative", 9, "-0.1"),
        stage("Text", 9, "high"),
        json!({"label": "No metadata", "displayOrder": 9}),
        json!({"label": "No probability", "displayOrder": 9, "metadata": {"isClosed": "false"}}),
        json!({"displayOrder": 9, "metadata": {"probability": "0.5"}}),
    ] {
        let (status, body) = sim.json(Method::POST, "tok", &stages, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {body}");
        assert_error(&body, "VALIDATION_ERROR");
    }
    let (status, created) = sim.json(Method::POST, "tok", &stages, Some(stage("Negotiation", 9, "0.70"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["metadata"]["probability"], "0.7");
    let (status, _) = sim.json(Method::POST, "tok", &stages, Some(stage("Negotiation", 10, "0.7"))).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let stage_path = format!("{stages}/{}", created["id"].as_str().expect("id"));
    let (status, _) = sim.json(Method::PATCH, "tok", &stage_path, Some(json!({"label": "x"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "metadata is required on PATCH");
    let (status, patched) = sim
        .json(
            Method::PATCH,
            "tok",
            &stage_path,
            Some(json!({"label": "Negotiating", "metadata": {"probability": "1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["metadata"], json!({"probability": "1.0", "isClosed": "false"}));
    assert_eq!(patched["label"], "Negotiating");
    let (status, _) =
        sim.json(Method::PATCH, "tok", &stage_path, Some(json!({"metadata": {"probability": "0.05"}}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, put) = sim
        .json(
            Method::PUT,
            "tok",
            &stage_path,
            Some(
                json!({"label": "Verbal", "displayOrder": 6, "metadata": {"probability": "0.9", "isClosed": "false"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["label"], "Verbal");
    let (_, got) = sim.json(Method::GET, "tok", &stage_path, None).await;
    assert_eq!(got["metadata"]["probability"], "0.9");
    let (_, list) = sim.json(Method::GET, "tok", &stages, None).await;
    assert_eq!(list["results"].as_array().map(Vec::len), Some(8));

    let resp = sim.call(Method::DELETE, "tok", &stage_path, None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, _) = sim.json(Method::GET, "tok", &stage_path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim.json(Method::GET, "tok", &format!("{PIPELINES}/nope/stages"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stages_in_use_are_protected_when_asked() {
    let sim = start(SimConfig::default()).await;
    let ids = sim.sim.create_deals("tok", 2, "closedlost", "default");
    assert_eq!(ids.len(), 2);
    let validate = "validateDealStageUsagesBeforeDelete=true";

    let (status, body) =
        sim.json(Method::DELETE, "tok", &format!("{PIPELINES}/default/stages/closedlost?{validate}"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "VALIDATION_ERROR");
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("closedlost") && message.contains("2 deal"), "{message}");

    // PUT without the stage, with validation: refused.
    let (_, default) = sim.json(Method::GET, "tok", &format!("{PIPELINES}/default"), None).await;
    let mut stages = default["stages"].as_array().expect("stages").clone();
    stages.retain(|s| s["id"] != "closedlost");
    let put = json!({"label": "Sales Pipeline", "displayOrder": 0, "stages": stages});
    let (status, body) =
        sim.json(Method::PUT, "tok", &format!("{PIPELINES}/default?{validate}"), Some(put.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().expect("message").contains("closedlost"));

    // Deleting the whole pipeline (with a second one present) is refused too.
    let other = json!({"label": "Other", "displayOrder": 1, "stages": [stage("Only", 0, "0.1")]});
    let (status, _) = sim.json(Method::POST, "tok", PIPELINES, Some(other)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = sim.json(Method::DELETE, "tok", &format!("{PIPELINES}/default?{validate}"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Once the deals are gone (archived deals don't count), the delete goes through.
    for id in &ids {
        let resp = sim.call(Method::DELETE, "tok", &format!("{DEALS}/{id}"), None).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let resp =
        sim.call(Method::DELETE, "tok", &format!("{PIPELINES}/default/stages/closedlost?{validate}"), None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    // Without the flag, HubSpot does not check usage.
    sim.sim.create_deals("tok", 1, "closedwon", "default");
    let resp = sim.call(Method::DELETE, "tok", &format!("{PIPELINES}/default/stages/closedwon"), None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}
