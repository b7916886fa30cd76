//! The same API under v3, 2026-03 and 2026-09, and the documented differences between them.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{assert_error, start};
use hubspot_sim::{ApiVersion, SimConfig};

fn props(version: ApiVersion) -> String {
    match version {
        ApiVersion::V3 => "/crm/v3/properties/deals".into(),
        v => format!("/crm/properties/{}/deals", v.segment()),
    }
}

fn pipelines(version: ApiVersion) -> String {
    match version {
        ApiVersion::V3 => "/crm/v3/pipelines/deals".into(),
        v => format!("/crm/pipelines/{}/deals", v.segment()),
    }
}

fn deals(version: ApiVersion) -> String {
    match version {
        ApiVersion::V3 => "/crm/v3/objects/deals".into(),
        v => format!("/crm/objects/{}/deals", v.segment()),
    }
}

#[tokio::test]
async fn every_version_serves_properties_pipelines_deals_and_search() {
    let sim = start(SimConfig::default()).await;
    for version in ApiVersion::ALL {
        let (status, list) = sim.json(Method::GET, "tok", &props(version), None).await;
        assert_eq!(status, StatusCode::OK, "{version:?}");
        assert!(list["results"].as_array().is_some_and(|r| !r.is_empty()));
        let (status, _) = sim.json(Method::GET, "tok", &format!("{}/default", pipelines(version)), None).await;
        assert_eq!(status, StatusCode::OK, "{version:?}");
        let body = json!({"properties": {"dealname": format!("d {}", version.segment()), "dealstage": "closedwon", "closedate": "2026-12-01T00:00:00Z"}});
        let (status, deal) = sim.json(Method::POST, "tok", &deals(version), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{version:?}: {deal}");
        let (status, found) =
            sim.json(Method::POST, "tok", &format!("{}/search", deals(version)), Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{version:?}");
        assert!(found["total"].as_u64().is_some());
    }
}

#[tokio::test]
async fn option_display_order_is_required_from_2026_03() {
    let sim = start(SimConfig::default()).await;
    let body = |name: &str| {
        json!({"name": name, "label": "Tier", "type": "enumeration", "fieldType": "select",
               "groupName": "dealinformation", "options": [{"label": "A", "value": "a"}]})
    };
    let (status, _) = sim.json(Method::POST, "tok", &props(ApiVersion::V3), Some(body("tier_v3"))).await;
    assert_eq!(status, StatusCode::CREATED);
    for version in ApiVersion::DATED {
        let (status, err) = sim.json(Method::POST, "tok", &props(version), Some(body("tier_dated"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{version:?}");
        assert_error(&err, "VALIDATION_ERROR");
        assert!(err["message"].as_str().is_some_and(|m| m.contains("displayOrder")), "{err}");
        let patch = json!({"options": [{"label": "B", "value": "b"}]});
        let (status, _) = sim.json(Method::PATCH, "tok", &format!("{}/tier_v3", props(version)), Some(patch)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{version:?}");
    }
    let mut ok = body("tier_dated");
    ok["options"][0]["displayOrder"] = json!(0);
    let (status, _) = sim.json(Method::POST, "tok", &props(ApiVersion::V2026_09), Some(ok)).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn stages_carry_write_permissions_in_every_version() {
    let sim = start(SimConfig::default()).await;
    for version in ApiVersion::ALL {
        let (_, pipeline) = sim.json(Method::GET, "tok", &format!("{}/default", pipelines(version)), None).await;
        assert_eq!(pipeline["stages"][0]["writePermissions"], "CRM_PERMISSIONS_ENFORCEMENT", "{version:?}");
    }
}

#[tokio::test]
async fn delete_safety_is_on_by_default_only_in_2026_09() {
    let sim = start(SimConfig::default()).await;
    let stage =
        |label: &str, order: i64| json!({"label": label, "displayOrder": order, "metadata": {"probability": "0.5"}});
    for version in ApiVersion::ALL {
        let body = json!({"label": format!("P {}", version.segment()), "displayOrder": 5,
                          "stages": [stage("Open", 0), stage("Other", 1)]});
        let (status, pipeline) = sim.json(Method::POST, "tok", &pipelines(version), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{pipeline}");
        let id = pipeline["id"].as_str().expect("id").to_owned();
        let stage_id = pipeline["stages"][0]["id"].as_str().expect("stage").to_owned();
        let deal = json!({"properties": {"dealname": "x", "pipeline": id, "dealstage": stage_id}});
        let (status, _) = sim.json(Method::POST, "tok", &deals(version), Some(deal)).await;
        assert_eq!(status, StatusCode::CREATED);
        let stage_path = format!("{}/{id}/stages/{stage_id}", pipelines(version));
        let (status, err) = sim.json(Method::DELETE, "tok", &stage_path, None).await;
        let pipeline_path = format!("{}/{id}", pipelines(version));
        if version == ApiVersion::V2026_09 {
            assert_eq!(status, StatusCode::BAD_REQUEST, "in-use stage refused by default: {err}");
            let (status, _) = sim.json(Method::DELETE, "tok", &pipeline_path, None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "in-use pipeline refused by default");
            let opt_out = format!("{pipeline_path}?validateDealStageUsagesBeforeDelete=false");
            let (status, _) = sim.json(Method::DELETE, "tok", &opt_out, None).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "the caller may opt out");
        } else {
            assert_eq!(status, StatusCode::NO_CONTENT, "{version:?}: no check unless asked");
            let (status, _) = sim.json(Method::DELETE, "tok", &pipeline_path, None).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{version:?}");
        }
    }
}

#[tokio::test]
async fn python_style_booleans_are_accepted() {
    let sim = start(SimConfig::default()).await;
    for version in ApiVersion::ALL {
        for path in [
            format!("{}?archived=True", props(version)),
            format!("{}/amount?archived=False", props(version)),
            format!("{}/groups?archived=True", props(version)),
            format!("{}/groups/dealinformation?archived=False", props(version)),
            format!("{}?archived=True", pipelines(version)),
            format!("{}?archived=False", deals(version)),
        ] {
            let (status, body) = sim.json(Method::GET, "tok", &path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        let (status, _) = sim.json(Method::GET, "tok", &format!("{}?archived=yes", props(version)), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
