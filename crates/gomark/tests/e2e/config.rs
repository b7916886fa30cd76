//! GTM configuration as code: revisions, validation by path, plans against the portals,
//! diff, rollback, and their audit trail.

use crate::scenarios::create_company;
use crate::support::{Api, eventually};
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use gtm_config::Document;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

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
        crate::scenarios::wait_synced(&api, id, "gomark_customer_tier", None).await;
    }
    assert_eq!(gomark.demo_ready(Duration::from_secs(60)).await, gomark::DemoState::Ready);
    let latest = api.send(Method::GET, "/v1/config", None).await.body["number"].as_i64();
    // The demo's own revisions (its import, its configuration, an adopted drift) come first.
    assert!(latest >= Some(2), "the demo stored its revisions: {latest:?}");
    let imported = api.send(Method::POST, "/v1/config/import", Some(json!({}))).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    assert_eq!(imported.body["revision"]["number"].as_i64(), latest.map(|n| n + 1), "the import is the next revision");
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

    // What a company declared beyond its portal (currency, tags, stage mapping) survives a
    // re-import, which adopts only what the portal holds.
    let latest = api.send(Method::GET, "/v1/config", None).await;
    let mut document = Document::from_yaml(latest.body["document"].as_str().expect("document")).expect("yaml");
    let (key, overlay) = document.companies.iter_mut().next().expect("a company");
    let key = key.clone();
    overlay.currency = Some("EUR".into());
    overlay.tags.insert("salesMotion".into(), "plg".into());
    overlay.stage_mapping.insert("closedwon".into(), "won".into());
    let yaml = document.to_yaml().expect("yaml");
    let stored =
        api.send(Method::POST, "/v1/config/revisions", Some(json!({"document": yaml, "message": "declare"}))).await;
    assert_eq!(stored.status, 201, "{}", stored.body);
    let imported = api.send(Method::POST, "/v1/config/import", Some(json!({}))).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let latest = api.send(Method::GET, "/v1/config", None).await;
    let document = Document::from_yaml(latest.body["document"].as_str().expect("document")).expect("yaml");
    let overlay = &document.companies[&key];
    assert_eq!(overlay.currency.as_deref(), Some("EUR"), "{key}");
    assert_eq!(overlay.tags.get("salesMotion").map(String::as_str), Some("plg"), "{key}");
    assert_eq!(overlay.stage_mapping.get("closedwon").map(String::as_str), Some("won"), "{key}");
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
    // Before and after are JSON values (here strings and an object), absent for an addition.
    let change = |pred: &dyn Fn(&str) -> bool| {
        diff.body["changes"].as_array().and_then(|c| c.iter().find(|c| c["path"].as_str().is_some_and(pred))).cloned()
    };
    let label = change(&|p| p.contains("gomark_tier") && p.ends_with("label")).expect("label change");
    assert_eq!((&label["before"], &label["after"]), (&json!("Tier"), &json!("Customer tier")), "{label}");
    let seats = change(&|p| p.contains("gomark_seats")).expect("seats change");
    assert!(seats["before"].is_null() && !seats["after"].is_null(), "{seats}");

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

/// The portfolio story: import the demo's 20 companies, change the baseline (a new property,
/// a relabelled one, a new stage), see exactly that in the plan, apply it, find it in every
/// portal, roll it back.
#[tokio::test]
async fn import_change_plan_apply_and_roll_back_the_demo_portfolio() {
    use gtm_config::{DealProperty, FieldType, PropertyType, Stage};
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: true,
        rate_limit_per_minute: 1_000_000,
        ..EmbeddedOptions::default()
    };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let companies: Vec<String> = api.send(Method::GET, "/v1/companies?limit=100", None).await.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(companies.len(), 20);
    assert_eq!(gomark.demo_ready(Duration::from_secs(60)).await, gomark::DemoState::Ready);
    for id in &companies {
        crate::scenarios::wait_synced(&api, id, "gomark_customer_tier", None).await;
    }
    let imported = api.send(Method::POST, "/v1/config/import", Some(json!({}))).await;
    assert_eq!(imported.status, 201, "{}", imported.body);
    let imported_revision = imported.body["revision"]["number"].as_i64().expect("number");

    // The change, made to the imported document as a person would edit the YAML.
    let latest = api.send(Method::GET, "/v1/config", None).await;
    let mut document = Document::from_yaml(latest.body["document"].as_str().expect("document")).expect("yaml");
    document.baseline.deal_properties.push(DealProperty {
        name: "gomark_renewal_date".into(),
        label: "Renewal date".into(),
        property_type: PropertyType::Date,
        field_type: FieldType::Date,
        group_name: "dealinformation".into(),
        description: None,
        options: vec![],
        has_unique_value: false,
    });
    for overlay in document.companies.values_mut() {
        let tier =
            overlay.deal_properties.iter_mut().find(|p| p.name == "gomark_customer_tier").expect("imported tier");
        tier.label = "Customer tier (portfolio)".into();
        let sales = overlay.pipelines.iter_mut().find(|p| p.label == "Sales Pipeline").expect("imported pipeline");
        sales.stages.push(Stage {
            id: "negotiation".into(),
            label: "Negotiation".into(),
            display_order: Some(10),
            probability: 0.7,
            closed: false,
        });
    }
    let yaml = document.to_yaml().expect("yaml");
    let second = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": yaml, "message": "renewals, clearer tier, negotiation stage"})),
        )
        .await;
    assert_eq!(second.status, 201, "{}", second.body);

    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({}))).await;
    let planned = plan.body["companies"].as_array().expect("companies");
    assert_eq!(planned.len(), 20);
    for company in planned {
        let actions: BTreeSet<(String, String, String)> = company["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| {
                (
                    a["op"].as_str().unwrap_or("").into(),
                    a["targetKind"].as_str().unwrap_or("").into(),
                    a["target"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        let expected: BTreeSet<(String, String, String)> = [
            ("create", "deal_property", "gomark_renewal_date".to_owned()),
            ("update", "deal_property", "gomark_customer_tier".to_owned()),
            ("create", "stage", "sales-pipeline/negotiation".to_owned()),
        ]
        .into_iter()
        .map(|(o, k, t)| (o.to_owned(), k.to_owned(), t))
        .collect();
        assert_eq!(actions, expected, "exactly the change, nothing else: {company}");
    }

    let rollout = |revision: i64| {
        let api = &api;
        async move {
            let started =
                api.send(Method::POST, "/v1/rollouts", Some(json!({"revision": revision, "concurrency": 8}))).await;
            let id = started.body["id"].as_str().expect("id").to_owned();
            eventually("the rollout", Duration::from_secs(60), || async {
                let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
                (r.body["state"] == "completed").then_some(r.body)
            })
            .await
        }
    };
    let applied = rollout(second.body["number"].as_i64().expect("number")).await;
    assert_eq!(applied["done"], 20, "{applied}");
    let (created, finished) = (applied["createdAt"].as_str(), applied["finishedAt"].as_str());
    assert!(finished.is_some() && finished >= created, "a completed rollout's finish time: {applied}");
    let observe = |id: String| {
        let api = &api;
        async move { api.send(Method::GET, &format!("/v1/companies/{id}/hubspot/observed"), None).await.body }
    };
    for id in &companies {
        let observed = observe(id.clone()).await;
        let props = observed["properties"].as_array().expect("properties");
        assert!(props.iter().any(|p| p["name"] == "gomark_renewal_date"), "{id}: new property");
        assert!(
            props.iter().any(|p| p["name"] == "gomark_customer_tier" && p["label"] == "Customer tier (portfolio)"),
            "{id}: relabelled"
        );
        let sales = observed["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .find(|p| p["label"] == "Sales Pipeline")
            .expect("pipeline")
            .clone();
        assert!(
            sales["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .any(|s| s["label"] == "Negotiation" && s["probability"] == "0.7"),
            "{id}: new stage"
        );
    }

    let rolled_back = api.send(Method::POST, "/v1/config/rollback", Some(json!({"to": imported_revision}))).await;

    // The rollback deletes the stage GoMark created, and the plan says so; in Acme's
    // portal a deal sits in it, which HubSpot would refuse: blocked, with the way out.
    let acme = api.send(Method::GET, "/v1/companies?limit=100", None).await.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["name"] == gomark::DEMO_COMPANIES[0])
        .and_then(|c| c["id"].as_str())
        .expect("acme")
        .to_owned();
    let acme_sales = observe(acme.clone()).await["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .find(|p| p["label"] == "Sales Pipeline")
        .expect("pipeline")
        .clone();
    let negotiation = acme_sales["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["label"] == "Negotiation")
        .and_then(|s| s["id"].as_str())
        .expect("negotiation stage")
        .to_owned();
    let pipeline = acme_sales["id"].as_str().expect("pipeline id");
    let token = gomark::demo_token(0);
    let deal = gomark.hubspot_sim.create_deals(&token, 1, &negotiation, pipeline);
    let stage_deletion = |company: &Value| {
        company["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .find(|a| a["op"] == "archive" && a["targetKind"] == "stage" && a["target"] == "sales-pipeline/negotiation")
            .cloned()
    };
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({}))).await;
    for company in plan.body["companies"].as_array().expect("companies") {
        let deletion = stage_deletion(company).unwrap_or_else(|| panic!("the stage deletion is planned: {company}"));
        if company["companyId"] == acme.as_str() {
            assert_eq!(deletion["blocked"], "stage still used by deals", "{deletion}");
            assert!(deletion["safeAlternative"].as_str().is_some_and(|a| !a.is_empty()), "{deletion}");
        } else {
            assert!(deletion.get("blocked").is_none(), "{company}");
        }
    }
    assert!(gomark.hubspot_sim.delete_deal(&token, &deal[0]), "the deal leaves the stage");
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({"companyIds": [acme]}))).await;
    let deletion = stage_deletion(&plan.body["companies"][0]).expect("still planned");
    assert!(deletion.get("blocked").is_none(), "unblocked once the stage is empty: {deletion}");

    let restored = rollout(rolled_back.body["number"].as_i64().expect("number")).await;
    let all = api.send(Method::GET, "/v1/companies?limit=100", None).await.body;
    let drifted = all["items"].as_array().expect("items").iter().find_map(|c| {
        (c["name"] == gomark::DEMO_COMPANIES[gomark::DRIFTED_COMPANY]).then(|| c["id"].as_str().map(str::to_owned))?
    });
    assert_eq!(restored["done"], 20, "{restored}");
    for id in &companies {
        let observed = observe(id.clone()).await;
        let props = observed["properties"].as_array().expect("properties");
        assert!(!props.iter().any(|p| p["name"] == "gomark_renewal_date"), "{id}: property archived again");
        // The company whose label the demo edited by hand adopted that label.
        let label = if Some(id) == drifted.as_ref() { gomark::DRIFTED_LABEL } else { "Customer tier" };
        assert!(
            props.iter().any(|p| p["name"] == "gomark_customer_tier" && p["label"] == label),
            "{id}: label restored"
        );
        let sales = observed["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .find(|p| p["label"] == "Sales Pipeline")
            .expect("pipeline")
            .clone();
        assert!(
            !sales["stages"].as_array().expect("stages").iter().any(|s| s["label"] == "Negotiation"),
            "{id}: stage removed"
        );
    }
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({}))).await;
    assert!(
        plan.body["companies"]
            .as_array()
            .expect("companies")
            .iter()
            .all(|c| c["actions"].as_array().is_some_and(Vec::is_empty))
    );

    // The audit log answers by resource and by actor.
    let rollouts = api.send(Method::GET, "/v1/audit?resource=rollout/", None).await;
    let actions: BTreeSet<&str> =
        rollouts.body["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, BTreeSet::from(["rollout.start"]));
    let by_rollout =
        api.send(Method::GET, &format!("/v1/companies/{}/audit?actor=system:rollout", companies[0]), None).await;
    assert_eq!(
        by_rollout.body["items"].as_array().map(Vec::len),
        Some(3),
        "one apply per rollout (the demo's, the change, the rollback): {}",
        by_rollout.body
    );
    api.send(Method::GET, "/v1/audit?from=yesterday", None).await.problem(400);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}
