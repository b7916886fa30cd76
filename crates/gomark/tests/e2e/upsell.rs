//! Upsell outreach end to end, embedded: cadences declared in the configuration reach the
//! Upso simulator on rollout, show in plans when they change and as drift when edited by
//! hand; deals closed-won in the HubSpot simulator lead to the right customers enrolled in
//! the upsell cadence, in score order, within caps, each skip recorded with its reason;
//! the previous GoMark's cadence route works on top of it.

use crate::scenarios::create_company;
use crate::support::{Api, eventually};
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const HUBSPOT_TOKEN: &str = "upsell-portal";
const UPSO_TOKEN: &str = "upsell-upso";
const DAY_MS: i64 = 24 * 3600 * 1000;
const WAIT: Duration = Duration::from_secs(30);

fn document(company: &str, call_delay: u32) -> String {
    format!(
        r#"
baseline:
  dealProperties:
    - {{name: gomark_contact_email, label: Contact email, type: string, fieldType: text, groupName: dealinformation}}
    - {{name: gomark_contact_first_name, label: Contact first name, type: string, fieldType: text, groupName: dealinformation}}
    - {{name: gomark_product_usage, label: Product usage, type: number, fieldType: number, groupName: dealinformation}}
  cadences:
    - key: upsell
      name: Upsell, gift-wrapped
      steps:
        - {{type: auto_email, delayHours: 0, subject: "A gift for {{{{company}}}}", body: "Hi {{{{firstName}}}}, an upgrade on us."}}
        - {{type: call, delayHours: {call_delay}, instructions: Call about the upgrade}}
  upsellRules:
    - key: default
      cadence: upsell
      minScore: 5
      closedWonDaysAgo: {{min: 7, max: 90}}
      scoring:
        - {{property: amount, op: linear, points: 0.001, maxPoints: 50, why: contract size}}
        - {{property: gomark_product_usage, op: gte, value: 0.8, points: 30, why: heavy usage}}
      guardrails: {{minDaysSinceLastTouch: 14, mailboxDailyCap: 3, companyDailyCap: 3}}
companies:
  acme:
    companyId: "{company}"
"#
    )
}

async fn rollout(api: &Api, body: Value) {
    let started = api.send(Method::POST, "/v1/rollouts", Some(body)).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.body["id"].as_str().expect("id").to_owned();
    let done = eventually("rollout finished", WAIT, || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await.body;
        matches!(r["state"].as_str(), Some("completed" | "failed" | "halted")).then_some(r)
    })
    .await;
    assert_eq!(done["state"], "completed", "{done}");
}

#[tokio::test]
async fn closed_won_deals_enroll_the_right_customers_and_cadences_are_managed_as_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        data_dir: dir.path().to_path_buf(),
        port: 0,
        demo: false,
        // Runs come from deal events here; one debounce window takes the whole burst.
        upsell_engine: gomark_upso_cadence::EngineSettings { interval_secs: 0, debounce_ms: 1500 },
        ..EmbeddedOptions::default()
    };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    upsell_story(&api, &gomark.hubspot_sim, &gomark.upso_sim).await;
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// The whole story, in either run mode.
pub async fn upsell_story(api: &Api, hubspot: &hubspot_sim::HubSpotSim, upso: &upso_sim::UpsoSim) {
    let company = create_company(api, hubspot, "Upsell Co", HUBSPOT_TOKEN, 4242).await;
    upso.register_account(UPSO_TOKEN, "Upsell Co");
    let bad =
        api.send(Method::PUT, &format!("/v1/companies/{company}/upso-account"), Some(json!({"token": "nope"}))).await;
    assert_eq!(bad.problem(400)["errors"][0]["field"], "token", "{}", bad.body);
    // A token no HTTP header can carry is refused up front, not reported as Upso being down.
    for unsendable in ["two words", "line\nbreak", "café", ""] {
        let bad = api
            .send(Method::PUT, &format!("/v1/companies/{company}/upso-account"), Some(json!({"token": unsendable})))
            .await;
        assert_eq!(bad.problem(400)["errors"][0]["field"], "token", "{unsendable:?}: {}", bad.body);
    }
    let account = api
        .send(Method::PUT, &format!("/v1/companies/{company}/upso-account"), Some(json!({"token": UPSO_TOKEN})))
        .await;
    assert_eq!(account.status, 200, "{}", account.body);
    assert!(!account.body.to_string().contains(UPSO_TOKEN), "the token is never returned");

    // The cadence is desired state: planned, then created in Upso by the rollout.
    let revision = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&company, 48), "message": "upsell"})),
        )
        .await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({}))).await;
    assert!(
        plan.body["companies"][0]["text"].as_str().is_some_and(|t| t.contains("+ cadence upsell")),
        "{}",
        plan.body
    );
    rollout(api, json!({})).await;
    let cadences = upso.cadences(UPSO_TOKEN);
    assert_eq!(cadences.len(), 1);
    assert_eq!(cadences[0].definition.name, "Upsell, gift-wrapped");
    let cadence_id = cadences[0].id.clone();

    // Customers: e was emailed two days ago by another cadence, d opted out in Upso.
    let other = upso_client::CadenceInput { name: "Newsletter".into(), ..cadences[0].definition.clone() };
    let newsletter = upso.create_cadence_by_hand(UPSO_TOKEN, other).expect("newsletter");
    upso.enroll_by_hand(UPSO_TOKEN, &newsletter.id, "e@customer.example").expect("touched");
    upso.opt_out(UPSO_TOKEN, "d@customer.example").expect("opted out");
    let now = chrono::Utc::now().timestamp_millis();
    let customers: [(&str, f64, i64, &str); 7] = [
        ("a@customer.example", 40_000.0, 10, "0.9"),  // 70
        ("b@customer.example", 30_000.0, 10, "0.1"),  // 30
        ("c@customer.example", 20_000.0, 20, "0.85"), // 50
        ("d@customer.example", 50_000.0, 10, "0.9"),  // 80, opted out
        ("e@customer.example", 45_000.0, 10, "0.1"),  // 45, touched recently
        ("f@customer.example", 10_000.0, 10, "0.1"),  // 10, over the daily cap
        ("g@customer.example", 90_000.0, 200, "0.9"), // won too long ago
    ];
    let ids = hubspot.create_deals(HUBSPOT_TOKEN, customers.len(), "closedwon", "default");
    for (id, (email, amount, days_ago, usage)) in ids.iter().zip(customers) {
        hubspot
            .update_deal(
                HUBSPOT_TOKEN,
                id,
                [
                    ("amount", amount.to_string()),
                    ("closedate", (now - days_ago * DAY_MS).to_string()),
                    ("gomark_contact_email", email.to_owned()),
                    ("gomark_contact_first_name", email[..1].to_uppercase()),
                    ("gomark_product_usage", usage.to_owned()),
                ],
            )
            .expect("deal updated");
    }

    // The deal events wake the engine: three enrolled, best first, the rest skipped.
    let enrolled = eventually("three upsell enrollments", WAIT, || async {
        let e: Vec<String> = upso
            .enrollments(UPSO_TOKEN)
            .into_iter()
            .filter(|e| e.cadence_id == cadence_id)
            .map(|e| e.contact.email)
            .collect();
        (e.len() >= 3).then_some(e)
    })
    .await;
    assert_eq!(enrolled, ["a@customer.example", "c@customer.example", "b@customer.example"]);
    let sent = upso.sent_emails(UPSO_TOKEN);
    let upsell_mail: Vec<&upso_sim::SentEmail> = sent.iter().filter(|s| s.cadence_id == cadence_id).collect();
    assert_eq!(upsell_mail.len(), 3);
    assert_eq!(upsell_mail[0].body, "Hi A, an upgrade on us.");
    assert!(upsell_mail.iter().all(|s| s.at_ms > 0));

    let decisions = eventually("skips recorded", WAIT, || async {
        let d = api.send(Method::GET, &format!("/v1/companies/{company}/upsell/decisions"), None).await.body;
        let items = d["items"].as_array().cloned().unwrap_or_default();
        (items.iter().filter(|i| i["decision"] == "skip").count() >= 3).then_some(items)
    })
    .await;
    let skip = |email: &str| {
        decisions.iter().find(|d| d["email"] == email).and_then(|d| d["skipReason"].as_str()).map(str::to_owned)
    };
    assert_eq!(skip("d@customer.example").as_deref(), Some("opted_out"));
    assert_eq!(skip("e@customer.example").as_deref(), Some("recently_touched"));
    assert_eq!(skip("f@customer.example").as_deref(), Some("company_cap"));
    let a = decisions.iter().find(|d| d["email"] == "a@customer.example").expect("a");
    assert_eq!(a["score"], 70.0);
    assert!(a["reasons"].to_string().contains("heavy usage"), "{a}");

    // Again, on demand: nobody is enrolled twice; the dry run says why.
    let again = api.send(Method::POST, &format!("/v1/companies/{company}/upsell/runs"), None).await;
    assert_eq!((again.status.as_u16(), again.body["enrolled"].as_u64()), (200, Some(0)), "{}", again.body);
    let dry = api.send(Method::GET, &format!("/v1/companies/{company}/upsell/dry-run"), None).await.body;
    let a_now =
        dry["candidates"].as_array().expect("candidates").iter().find(|c| c["email"] == "a@customer.example").cloned();
    assert_eq!(a_now.expect("a")["skipReason"], "already_enrolled");
    assert_eq!(upso.enrollments(UPSO_TOKEN).iter().filter(|e| e.cadence_id == cadence_id).count(), 3);

    // A change in the desired state shows in the plan and reaches Upso on apply.
    let revision = api
        .send(
            Method::POST,
            "/v1/config/revisions",
            Some(json!({"document": document(&company, 72), "message": "slower"})),
        )
        .await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    let plan = api.send(Method::POST, "/v1/config/plan", Some(json!({}))).await.body;
    let action = plan["companies"][0]["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .find(|a| a["targetKind"] == "cadence")
        .cloned();
    let action = action.expect("a cadence action");
    assert_eq!((action["target"].as_str(), action["op"].as_str()), (Some("upsell"), Some("update")), "{plan}");
    rollout(api, json!({})).await;
    let in_upso = upso.cadences(UPSO_TOKEN).into_iter().find(|c| c.id == cadence_id).expect("cadence");
    assert_eq!((in_upso.version, in_upso.definition.steps[1].delay_hours), (2, 72));

    // Edited by hand in Upso: drift.
    upso.edit_cadence_by_hand(UPSO_TOKEN, &cadence_id, |c| c.steps[1].delay_hours = 1).expect("hand edit");
    let check = api.send(Method::POST, "/v1/drift/check", Some(json!({"companyIds": [company]}))).await.body;
    let drifted = check["drifted"].as_array().expect("drifted");
    assert_eq!(drifted.len(), 1, "{check}");
    assert!(drifted[0]["actions"].to_string().contains("cadence"), "{check}");

    // The previous GoMark's route: a new revision, rolled out, in Upso.
    let legacy = api
        .send(
            Method::PUT,
            &format!("/upso/cadence/modify/{company}"),
            Some(json!({"template": "Hello {{firstName}}, here is your gift.", "delay_hours": 24})),
        )
        .await;
    assert_eq!(legacy.status, 200, "{}", legacy.body);
    assert_eq!(legacy.body["cadenceKey"], Value::Null, "snake_case kept for old callers: {}", legacy.body);
    assert_eq!(legacy.body["cadence_key"], "upsell");
    let rollout_id = legacy.body["rollout_id"].as_str().expect("rollout").to_owned();
    eventually("legacy change rolled out", WAIT, || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{rollout_id}"), None).await.body;
        (r["state"] == "completed").then_some(())
    })
    .await;
    let in_upso = upso.cadences(UPSO_TOKEN).into_iter().find(|c| c.id == cadence_id).expect("cadence");
    let first = &in_upso.definition.steps[0];
    assert_eq!(first.template.as_ref().map(|t| t.body.as_str()), Some("Hello {{firstName}}, here is your gift."));
    assert_eq!(first.delay_hours, 24);
    assert_eq!(in_upso.definition.steps[1].delay_hours, 72, "the hand edit was put back by the rollout");
    let revisions = api.send(Method::GET, "/v1/config/revisions", None).await.body;
    assert!(revisions.to_string().contains("legacy cadence change"), "{revisions}");
}

#[tokio::test]
async fn the_portfolio_suppression_list_is_managed_over_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let api = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("key"));
    let path = "/v1/portfolio/suppressions";

    let added = api
        .send(Method::POST, path, Some(json!({"email": "Ann+x@X.example", "kind": "legal_hold", "reason": "case 7"})))
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(
        (added.body["added"].as_bool(), added.body["suppression"]["person"].as_str()),
        (Some(true), Some("ann@x.example"))
    );
    let again = api.send(Method::POST, path, Some(json!({"email": "ann@x.example", "kind": "opt_out"}))).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["added"], false, "{}", again.body);
    api.send(Method::POST, path, Some(json!({"email": "ann@x.example", "kind": "maybe"}))).await.problem(400);

    let list = api.send(Method::GET, path, None).await;
    assert_eq!(list.body["items"][0]["kind"], "legal_hold", "{}", list.body);
    // Lifting a legal hold is an admin's call: a portfolio operator is refused.
    let minted = api.send(Method::POST, "/v1/api-keys", Some(json!({"name": "ops", "role": "operator"}))).await;
    let operator = api.with_token(minted.body["key"].as_str().expect("an operator key"));
    operator.send(Method::DELETE, &format!("{path}/ann@x.example"), None).await.problem(403);
    let removed = api.send(Method::DELETE, &format!("{path}/ann@x.example"), None).await;
    assert_eq!(removed.body["removed"], true, "{}", removed.body);
    let list = api.send(Method::GET, path, None).await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(0), "{}", list.body);
}
