//! GTM configuration as code: revisions, validation by path, plans against the portals,
//! diff, rollback, and their audit trail.

use crate::scenarios::create_company;
use crate::support::Api;
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use reqwest::Method;
use serde_json::json;

fn document(a: &str, b: &str, tier_label: &str, extra_property: bool, won_probability: &str) -> String {
    let extra = if extra_property {
        "\n    - {name: gomark_seats, label: Seats, type: number, fieldType: number, groupName: gomark}"
    } else {
        ""
    };
    format!(
        r#"baseline:
  propertyGroups:
    - {{name: gomark, label: GoMark, displayOrder: 1}}
  dealProperties:
    - name: gomark_tier
      label: {tier_label}
      type: enumeration
      fieldType: select
      groupName: gomark
      options:
        - {{label: Gold, value: gold}}
        - {{label: Silver, value: silver}}{extra}
  pipelines:
    - id: upsell
      label: Upsell
      stages:
        - {{id: qualify, label: Qualify, probability: 0.2, closed: false}}
        - {{id: won, label: Won, probability: {won_probability}, closed: true}}
        - {{id: lost, label: Lost, probability: 0.0, closed: true}}
companies:
  alpha:
    companyId: "{a}"
    settings: {{driftPolicy: enforce, rolloutWave: 0}}
  beta:
    companyId: "{b}"
"#
    )
}

#[tokio::test]
async fn importing_the_portfolio_adopts_reality_and_plans_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: true, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let companies =
        api.send(Method::GET, "/v1/companies?limit=100", None).await.body["items"].as_array().expect("items").clone();
    assert!(companies.len() >= 20);
    // Wait until the demo's property reached every portal, so it is there to adopt.
    for company in &companies {
        let id = company["id"].as_str().expect("id");
        crate::scenarios::wait_synced(&api, id, "gomark_customer_tier", 1).await;
    }
    let imported = api.send(Method::POST, "/v1/config/import", Some(json!({}))).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    assert_eq!(imported.body["revision"]["number"], 1);
    let adopted = imported.body["companies"].as_array().expect("companies");
    assert_eq!(adopted.len(), companies.len());
    assert!(
        adopted.iter().all(|c| c["dealProperties"].as_u64() >= Some(1) && c["pipelines"].as_u64() >= Some(1)),
        "{adopted:?}"
    );

    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({}))).await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    for company in plan.body["companies"].as_array().expect("companies") {
        assert_eq!(company["actions"].as_array().map(Vec::len), Some(0), "reality adopted, nothing to do: {company}");
    }
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn revisions_plans_diffs_and_rollbacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let a = create_company(&api, &gomark.hubspot_sim, "Alpha", "config-a", 981).await;
    let b = create_company(&api, &gomark.hubspot_sim, "Beta", "config-b", 982).await;

    api.send(Method::GET, "/v1/config", None).await.problem(404);
    let bad = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&a, &b, "Tier", false, "1.5"), "message": "bad"})),
        )
        .await;
    let field = bad.problem(400)["errors"][0]["field"].as_str().unwrap_or_default().to_owned();
    assert!(field.starts_with("baseline.pipelines[0].stages[1].probability"), "the error names its path: {}", bad.body);
    let unknown = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&a, "no-such-company", "Tier", false, "1.0"), "message": "x"})),
        )
        .await;
    assert_eq!(unknown.problem(400)["errors"][0]["field"], "companies.beta.companyId");

    let first = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&a, &b, "Tier", false, "1.0"), "message": "first baseline"})),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["number"], 1);
    assert!(first.body["document"].as_str().is_some_and(|d| d.contains("gomark_tier")));
    let hash1 = first.body["contentHash"].clone();

    // The portals have none of it yet: the plan creates the group, the property, the pipeline.
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({}))).await;
    assert_eq!(plan.status, 200, "{}", plan.body);
    let companies = plan.body["companies"].as_array().expect("companies");
    assert_eq!(companies.len(), 2);
    for company in companies {
        let actions = company["actions"].as_array().expect("actions");
        let has = |kind: &str, target: &str| {
            actions.iter().any(|x| x["targetKind"] == kind && x["target"] == target && x["op"] == "create")
        };
        // The simulated portals already hold a `gomark` group, so no group is created.
        assert!(!actions.iter().any(|x| x["targetKind"] == "property_group"), "{company}");
        assert!(has("deal_property", "gomark_tier") && has("pipeline", "upsell"), "{company}");
        assert!(company.get("error").is_none(), "{company}");
    }
    let only_a = api.send(Method::POST, "/v1/config/plan", Some(json!({"companyIds": [a]}))).await;
    assert_eq!(only_a.body["companies"].as_array().map(Vec::len), Some(1));

    let second = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&a, &b, "Customer tier", true, "1.0"), "message": "seats, and a clearer label", "expectedLatest": 1})),
        )
        .await;
    assert_eq!(second.body["number"], 2, "{}", second.body);
    let stale = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&a, &b, "x", true, "1.0"), "message": "stale", "expectedLatest": 1})),
        )
        .await;
    stale.problem(412);

    let diff = api.send(Method::GET, "/v1/config/diff?from=1&to=2", None).await;
    assert_eq!(diff.status, 200, "{}", diff.body);
    let paths: Vec<&str> =
        diff.body["changes"].as_array().expect("changes").iter().filter_map(|c| c["path"].as_str()).collect();
    assert!(paths.iter().any(|p| p.contains("gomark_seats")), "{paths:?}");
    assert!(paths.iter().any(|p| p.contains("gomark_tier") && p.ends_with("label")), "{paths:?}");

    let rolled = api.send(Method::POST, "/v1/config/rollback", Some(json!({"to": 1}))).await;
    assert_eq!(rolled.status, 201, "{}", rolled.body);
    assert_eq!((rolled.body["number"].as_i64(), rolled.body["rolledBackTo"].as_i64()), (Some(3), Some(1)));
    assert_eq!(rolled.body["contentHash"], hash1, "a rollback is the old document again");

    let same = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&a, &b, "Tier", false, "1.0"), "message": "again"})),
        )
        .await;
    assert_eq!(same.body["number"], 3, "an unchanged document makes no new revision");

    let list = api.send(Method::GET, "/v1/config/revisions", None).await;
    let numbers: Vec<i64> =
        list.body["items"].as_array().expect("items").iter().filter_map(|r| r["number"].as_i64()).collect();
    assert_eq!(numbers, [3, 2, 1]);
    let audit = api.send(Method::GET, "/v1/audit", None).await;
    let actions: Vec<&str> =
        audit.body["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["config.rollback", "config.revision", "config.revision"]);

    // Company-scoped callers do not read or change the portfolio's configuration.
    let scoped =
        api.send(Method::POST, "/v1/api-keys", Some(json!({"name": "a", "role": "admin", "companyId": a}))).await;
    let scoped = api.with_token(scoped.body["key"].as_str().expect("key"));
    scoped.send(Method::GET, "/v1/config/revisions", None).await.problem(403);
    scoped
        .send(Method::POST, "/v1/config/revisions", Some(json!({"document": "baseline: {}", "message": "x"})))
        .await
        .problem(403);
    scoped.send(Method::GET, "/v1/audit", None).await.problem(403);
    let own_plan = scoped.send(Method::POST, "/v1/config/plan", Some(json!({"companyIds": [a]}))).await;
    assert_eq!(own_plan.status, 200, "a company may see its own plan: {}", own_plan.body);
    scoped.send(Method::POST, "/v1/config/plan", Some(json!({"companyIds": [b]}))).await.problem(403);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}
