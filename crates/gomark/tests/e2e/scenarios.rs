//! The user stories both run modes must pass.

use crate::support::{Api, eventually};
use hubspot_sim::HubSpotSim;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn create_company(api: &Api, sim: &HubSpotSim, name: &str, token: &str, portal: u64) -> String {
    sim.register_portal(token, portal);
    let reply = api
        .send(
            Method::POST,
            "/v1/companies",
            Some(json!({ "name": name, "hubspotPortalId": portal.to_string(), "hubspotToken": token })),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(reply.body.get("hubspotToken").is_none(), "the token is never returned");
    assert!(!reply.body.to_string().contains(token), "the token is never returned");
    reply.body["id"].as_str().expect("id").to_owned()
}

/// Waits until the property is applied to the portal, with `label` when given.
pub async fn wait_synced(api: &Api, company: &str, name: &str, label: Option<&str>) -> Value {
    let path = format!("/v1/companies/{company}/deal-properties/{name}");
    eventually(&format!("{name} ({label:?}) applied"), APPLY_TIMEOUT, || async {
        let reply = api.send(Method::GET, &path, None).await;
        let labelled = label.is_none_or(|l| reply.body["label"] == l);
        (labelled && reply.body["sync"]["state"] == "applied").then_some(reply.body)
    })
    .await
}

/// How many successful creates of property `name` the portal of `token` received (single or
/// batch creates: the name is matched in the request body).
pub fn property_creates(sim: &HubSpotSim, token: &str, name: &str) -> usize {
    let quoted = format!("\"{name}\"");
    sim.writes(Some(sim.portal_id_for(token)))
        .iter()
        .filter(|w| w.method == "POST" && w.status < 300 && w.path.contains("/properties/"))
        .filter(|w| w.body.contains(&quoted))
        .count()
}

async fn wait_in_portal(sim: &HubSpotSim, token: &str, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{name} in the simulated portal"), APPLY_TIMEOUT, || async {
        sim.property(token, name).filter(|p| check(p))
    })
    .await
}

/// Create, list, rename (label), archive: each step is a revision of the company's
/// overlay, reaches the portal through a rollout, and is audited.
pub async fn property_lifecycle(api: &Api, sim: &HubSpotSim, token: &str, portal: u64) {
    let company = create_company(api, sim, "Lifecycle Co", token, portal).await;
    let base = format!("/v1/companies/{company}/deal-properties");

    let created = api
        .send(
            Method::POST,
            &base,
            Some(json!({
                "name": "gomark_renewal_risk",
                "label": "Renewal risk",
                "type": "enumeration",
                "fieldType": "select",
                "groupName": "dealinformation",
                "options": [{"label": "Low", "value": "low"}, {"label": "High", "value": "high", "displayOrder": 1}]
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["sync"]["state"], "pending");
    assert!(created.body["rolloutId"].is_string(), "{}", created.body);
    let etag = created.body["etag"].as_str().expect("etag").to_owned();
    assert_eq!(created.headers.get("etag").and_then(|v| v.to_str().ok()), Some(format!("\"{etag}\"").as_str()));

    let synced = wait_synced(api, &company, "gomark_renewal_risk", None).await;
    assert_eq!(synced["etag"], etag.as_str());
    let in_portal = wait_in_portal(sim, token, "gomark_renewal_risk", |p| p["archived"] == false).await;
    assert_eq!(in_portal["label"], "Renewal risk");
    assert_eq!(in_portal["options"].as_array().map(Vec::len), Some(2));

    let list = api.send(Method::GET, &base, None).await;
    assert_eq!(list.status, 200);
    let names: Vec<&str> =
        list.body["items"].as_array().expect("items").iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["gomark_renewal_risk"]);

    // A rename is a label change; a stale ETag is refused.
    let stale = api
        .send_with(
            Method::PATCH,
            &format!("{base}/gomark_renewal_risk"),
            Some(json!({"label": "x"})),
            &[("if-match", "\"0badc0de\"")],
        )
        .await;
    stale.problem(412);
    let if_match = format!("\"{etag}\"");
    let renamed = api
        .send_with(
            Method::PATCH,
            &format!("{base}/gomark_renewal_risk"),
            Some(json!({"label": "Churn risk"})),
            &[("if-match", if_match.as_str())],
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.body["label"], "Churn risk");
    assert_ne!(renamed.body["etag"], etag.as_str());
    wait_synced(api, &company, "gomark_renewal_risk", Some("Churn risk")).await;
    wait_in_portal(sim, token, "gomark_renewal_risk", |p| p["label"] == "Churn risk").await;

    let renaming_the_name =
        api.send(Method::PATCH, &format!("{base}/gomark_renewal_risk"), Some(json!({"name": "other"}))).await;
    assert_eq!(renaming_the_name.problem(400)["errors"][0]["field"], "name");

    let archived = api.send(Method::DELETE, &format!("{base}/gomark_renewal_risk"), None).await;
    assert_eq!(archived.status, 204);
    wait_in_portal(sim, token, "gomark_renewal_risk", |p| p["archived"] == true).await;
    api.send(Method::GET, &format!("{base}/gomark_renewal_risk"), None).await.problem(404);
    let listed = api.send(Method::GET, &base, None).await;
    assert_eq!(listed.body["items"], json!([]), "{}", listed.body);

    let audit = api.send(Method::GET, &format!("/v1/companies/{company}/audit?resource=deal_property/"), None).await;
    assert_eq!(audit.status, 200);
    let actions: Vec<&str> =
        audit.body["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["deal_property.archive", "deal_property.update", "deal_property.create"]);
    let update = &audit.body["items"][1];
    assert_eq!(update["before"]["label"], "Renewal risk");
    assert_eq!(update["after"]["label"], "Churn risk");
    assert!(update["actor"].is_string() && update["at"].is_string());
    // Each change reached the portal through a rollout, whose audit entry says what it did.
    let applied = eventually("three applies audited", APPLY_TIMEOUT, || async {
        let r = api.send(Method::GET, &format!("/v1/companies/{company}/audit?resource=rollout/"), None).await;
        let entries = r.body["items"].as_array().cloned().unwrap_or_default();
        (entries.iter().filter(|e| e["action"] == "config.apply").count() == 3).then_some(entries)
    })
    .await;
    let performed: Vec<String> =
        applied.iter().rev().filter_map(|e| e["after"]["performed"][0].as_str().map(str::to_owned)).collect();
    assert_eq!(
        performed,
        [
            "+ deal property gomark_renewal_risk",
            "~ deal property gomark_renewal_risk: label \"Renewal risk\" → \"Churn risk\"",
            "- deal property gomark_renewal_risk"
        ]
    );
    let everything = api.send(Method::GET, &format!("/v1/companies/{company}/audit"), None).await;
    assert!(!everything.body.to_string().contains(token), "no token in the audit log");
}

/// Bad input gets a 4xx problem naming what is wrong, never a 5xx.
pub async fn bad_input(api: &Api, sim: &HubSpotSim, token: &str, portal: u64) {
    let company = create_company(api, sim, "Validation Co", token, portal).await;
    let base = format!("/v1/companies/{company}/deal-properties");
    let property = |overrides: Value| {
        let mut p = json!({"name": "gomark_ok", "label": "OK", "type": "string", "fieldType": "text", "groupName": "dealinformation"});
        if let (Some(p), Some(o)) = (p.as_object_mut(), overrides.as_object()) {
            p.extend(o.clone());
        }
        p
    };
    let cases = [
        (json!({"fieldType": "select"}), "fieldType"),
        (json!({"name": "Deal Stage"}), "name"),
        (json!({"name": "hs_secret"}), "name"),
        (json!({"type": "money"}), "type"),
        (json!({"type": "enumeration", "fieldType": "select"}), "options"),
        (json!({"label": ""}), "label"),
        (json!({"label": "Ti\0er"}), "label"),
    ];
    for (overrides, field) in cases {
        let reply = api.send(Method::POST, &base, Some(property(overrides.clone()))).await;
        assert_eq!(reply.problem(400)["errors"][0]["field"], field, "{overrides}");
    }
    api.send(Method::POST, "/v1/companies/nope/deal-properties", Some(property(json!({})))).await.problem(404);
    api.send(Method::GET, "/v1/companies/nope", None).await.problem(404);
    api.raw(Method::POST, &base, "application/json", "{\"name\": ").await.problem(400);
    api.raw(Method::POST, &base, "text/plain", "hello").await.problem(415);
    // serde alone would read a struct from an array of its fields in order.
    let positional = api.raw(Method::POST, "/v1/companies", "application/json", r#"["X", "1", "tok"]"#).await;
    assert!(
        positional.problem(400)["detail"].as_str().is_some_and(|d| d.contains("JSON object")),
        "{}",
        positional.body
    );
    api.raw(Method::POST, "/v1/config/import", "application/json", "[]").await.problem(400);
    api.send(Method::POST, &base, Some(json!({"name": "gomark_ok"}))).await.problem(400);
    api.send(Method::GET, "/v1/nothing-here", None).await.problem(404);
    api.send(Method::PUT, "/v1/companies", None).await.problem(405);
    api.send(Method::POST, "/v1/companies", Some(json!({"name": "", "hubspotPortalId": "1", "hubspotToken": "t"})))
        .await
        .problem(400);
    api.send(Method::POST, "/v1/companies", Some(json!({"name": "X", "hubspotPortalId": "abc", "hubspotToken": "t"})))
        .await
        .problem(400);
    let nul = json!({"name": "Nul\0Co", "hubspotPortalId": "1", "hubspotToken": "t"});
    assert_eq!(api.send(Method::POST, "/v1/companies", Some(nul)).await.problem(400)["errors"][0]["field"], "name");
    // A token that cannot travel in a header would fail every HubSpot call later; refuse it now.
    let unsendable = api
        .send(Method::POST, "/v1/companies", Some(json!({"name": "X", "hubspotPortalId": "1", "hubspotToken": "a b"})))
        .await;
    assert_eq!(unsendable.problem(400)["errors"][0]["field"], "hubspotToken", "{}", unsendable.body);
    let dup = api.send(Method::POST, &base, Some(property(json!({})))).await;
    assert_eq!(dup.status, 201);
    api.send(Method::POST, &base, Some(property(json!({})))).await.problem(409);
    api.send(Method::GET, "/v1/companies?limit=abc", None).await.problem(400);
}

/// The previous GoMark's routes, as its documentation showed them.
pub async fn legacy_routes(api: &Api, sim: &HubSpotSim, token: &str, portal: u64) {
    let company = create_company(api, sim, "Legacy Co", token, portal).await;
    let added = api
        .send(
            Method::POST,
            "/hubspot/fields/add",
            Some(json!({"company_id": company, "name": "Deal Stage", "type": "string", "value": "Negotiation"})),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(added.body["name"], "deal_stage");
    assert_eq!(added.body["label"], "Deal Stage");
    assert_eq!(added.body["description"], "Negotiation");
    wait_synced(api, &company, "deal_stage", None).await;

    let modified = api
        .send(
            Method::PUT,
            &format!("/hubspot/fields/modify/{company}/Deal%20Stage"),
            Some(json!({"new_name": "Stage of deal"})),
        )
        .await;
    assert_eq!(modified.status, 200, "{}", modified.body);
    assert_eq!(modified.body["name"], "deal_stage");
    assert_eq!(modified.body["label"], "Stage of deal");
    wait_synced(api, &company, "deal_stage", Some("Stage of deal")).await;
    assert_eq!(sim.property(token, "deal_stage").expect("in portal")["label"], "Stage of deal");

    let enumeration = api
        .send(
            Method::POST,
            "/hubspot/fields/add",
            Some(json!({"company_id": company, "name": "Plan", "type": "enumeration", "value": "Starter; Pro;Enterprise"})),
        )
        .await;
    assert_eq!(enumeration.status, 201, "{}", enumeration.body);
    assert_eq!(enumeration.body["options"].as_array().map(Vec::len), Some(3));

    api.send(Method::PUT, &format!("/hubspot/fields/modify/{company}/nope"), Some(json!({"new_name": "x"})))
        .await
        .problem(404);
    api.send(
        Method::POST,
        "/hubspot/fields/add",
        Some(json!({"company_id": "nope", "name": "X", "type": "string", "value": ""})),
    )
    .await
    .problem(404);
    api.send(
        Method::POST,
        "/hubspot/fields/add",
        Some(json!({"company_id": company, "name": "X", "type": "blob", "value": ""})),
    )
    .await
    .problem(400);
    let cadence = api
        .send(
            Method::PUT,
            &format!("/upso/cadence/modify/{company}"),
            Some(json!({"template": "Hi {{first_name}}", "delay_hours": 24})),
        )
        .await;
    // Without an upsell cadence in the configuration there is nothing to modify (the
    // success path is in upsell.rs).
    let detail = cadence.problem(422)["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("no upsell cadence"), "{}", cadence.body);
}
