//! upso-cadence against the Upso simulator, on SQLite (and Postgres when configured):
//! cadences planned, applied and checked for drift; the upsell engine enrolling the right
//! customers, in score order, within the guardrails, never twice.

use gomark_events::consumer::{BatchHandler, EventHandler};
use gomark_events::relay::RelayWaker;
use gomark_proto::events::v1::DealUpserted;
use gomark_storage::Database;
use gomark_upso_cadence::cadences::{CadenceOp, Cadences};
use gomark_upso_cadence::credentials::Vault;
use gomark_upso_cadence::deals::{DealEvents, EngineTriggers};
use gomark_upso_cadence::engine::Engine;
use gomark_upso_cadence::guardrails::SkipReason;
use gomark_upso_cadence::outreach::{OutreachVendor, UpsoVendor};
use gomark_upso_cadence::store::{OutreachConfig, Store};
use std::sync::Arc;
use std::time::Duration;
use upso_client::{ClientConfig, UpsoClient, UpsoToken};
use upso_sim::{SimConfig, UpsoSim};

const TOKEN: &str = "upso-token-acme";
const COMPANY: &str = "c-acme";
const DAY_MS: i64 = 24 * 3600 * 1000;

struct Harness {
    sim: UpsoSim,
    store: Store,
    cadences: Cadences,
    engine: Engine,
    deals: DealEvents,
    _db: gomark_testkit::TestDatabase,
}

async fn harness(tdb: gomark_testkit::TestDatabase) -> Harness {
    let (sim, addr) = upso_sim::spawn(SimConfig::default(), "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    sim.register_account(TOKEN, "Acme");
    sim.add_mailbox(TOKEN, "success@acme.example", 200).expect("second mailbox");
    let db = Database::connect(&tdb.settings).await.expect("connect");
    db.migrate(&gomark_upso_cadence::MIGRATIONS).await.expect("migrate");
    let vault = Arc::new(Vault::from_setting(&Vault::generate_setting("t")).expect("vault"));
    let store = Store::new(db, vault);
    let client = UpsoClient::new(ClientConfig {
        base_url: format!("http://{addr}"),
        retry_base_delay: Duration::from_millis(10),
        ..ClientConfig::default()
    })
    .expect("client");
    let vendor: Arc<dyn OutreachVendor> = Arc::new(UpsoVendor::new(client));
    let token = UpsoToken::new(TOKEN);
    let account = vendor.account_id(&token).await.expect("account");
    store.save_account(COMPANY, &account, &token).await.expect("register");
    let cadences = Cadences::new(store.clone(), vendor.clone());
    let engine = Engine::new(store.clone(), vendor, cadences.clone(), RelayWaker::default());
    let deals = DealEvents { store: store.clone(), triggers: Arc::new(EngineTriggers::default()) };
    Harness { sim, store, cadences, engine, deals, _db: tdb }
}

fn config(yaml_cadence_delay: u32) -> OutreachConfig {
    let json = serde_json::json!({
        "cadences": [{
            "key": "upsell",
            "name": "Upsell, gift-wrapped",
            "tags": ["upsell"],
            "steps": [
                {"type": "auto_email", "delayHours": 0, "subject": "A gift for {{company}}", "body": "Hi {{firstName}}, your {{seats}} seats earn you a free upgrade."},
                {"type": "call", "delayHours": yaml_cadence_delay, "instructions": "Call about the upgrade"}
            ]
        }],
        "upsellRules": [{
            "key": "default",
            "cadence": "upsell",
            "minScore": 5,
            "closedWonDaysAgo": {"min": 7, "max": 90},
            "scoring": [
                {"property": "amount", "op": "linear", "points": 0.001, "maxPoints": 50, "why": "contract size"},
                {"property": "gomark_product_usage", "op": "gte", "value": 0.8, "points": 30, "why": "heavy usage"}
            ],
            "guardrails": {"minDaysSinceLastTouch": 14, "mailboxDailyCap": 2, "companyDailyCap": 3}
        }],
        "suppressionList": ["@competitor.example"]
    });
    OutreachConfig::parse(&json.to_string()).expect("config")
}

fn deal(id: &str, email: &str, stage: &str, amount: f64, closed_days_ago: i64, usage: Option<&str>) -> DealUpserted {
    let now = gomark_storage::now_ms();
    let mut properties = std::collections::HashMap::from([
        ("gomark_contact_email".to_owned(), email.to_owned()),
        ("gomark_contact_first_name".to_owned(), email.split('@').next().unwrap_or_default().to_owned()),
        ("gomark_seats".to_owned(), "25".to_owned()),
    ]);
    if let Some(u) = usage {
        properties.insert("gomark_product_usage".into(), u.into());
    }
    DealUpserted {
        company_id: COMPANY.into(),
        portal_id: "1".into(),
        deal_id: id.into(),
        name: format!("Deal {id}"),
        pipeline_id: "default".into(),
        stage_id: stage.into(),
        amount_money: gomark_proto::money::Money::new(
            std::str::FromStr::from_str(&amount.to_string()).expect("decimal"),
            gomark_proto::money::Currency::USD,
        )
        .to_proto()
        .ok(),
        owner_id: "7".into(),
        properties,
        ..DealUpserted::default()
    }
    .with_times(now - closed_days_ago * DAY_MS, now, now - 100 * DAY_MS)
}

async fn feed(h: &Harness, d: DealUpserted) {
    let event = gomark_events::envelope::new_event(COMPANY, gomark_events::event_types::DEAL_UPSERTED, &d);
    h.deals.handle_batch(std::slice::from_ref(&event)).await.expect("handled").run().await;
    h.deals.handle_batch(std::slice::from_ref(&event)).await.expect("redelivery is harmless").run().await;
}

#[tokio::test]
async fn closed_won_customers_are_enrolled_in_score_order_within_caps_and_never_twice() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let h = harness(tdb).await;
        h.cadences.apply(COMPANY, &config(48), 1, None).await.expect("apply");
        // e was emailed by another cadence two days ago; d opted out in Upso.
        let newsletter = h.sim.cadences(TOKEN).into_iter().next().expect("upsell cadence").definition;
        let other = upso_client::CadenceInput { name: "Newsletter".into(), tags: vec![], ..newsletter };
        let now = gomark_storage::now_ms();
        h.sim.set_now(now - 2 * DAY_MS);
        // Created in Upso by a person, outside GoMark.
        let account_cadence = h.sim.create_cadence_by_hand(TOKEN, other).expect("newsletter").id;
        h.sim.enroll_by_hand(TOKEN, &account_cadence, "e@customer.example").expect("touched");
        h.sim.set_now(now);
        h.sim.opt_out(TOKEN, "d@customer.example").expect("opt out");

        for d in [
            deal("1", "a@customer.example", "closedwon", 40_000.0, 10, Some("0.9")), // 40 + 30 = 70
            deal("2", "b@customer.example", "closedwon", 30_000.0, 10, None),        // 30
            deal("3", "c@customer.example", "closedwon", 20_000.0, 20, Some("0.85")), // 50
            deal("4", "d@customer.example", "closedwon", 50_000.0, 10, Some("0.9")), // 80, opted out
            deal("5", "e@customer.example", "closedwon", 45_000.0, 10, None),        // 45, touched
            deal("6", "f@customer.example", "closedwon", 10_000.0, 10, None),        // 10, over the cap
            deal("7", "g@customer.example", "closedwon", 90_000.0, 200, None),       // won too long ago
            deal("8", "h@customer.example", "closedwon", 35_000.0, 10, None),        // has an open deal
            deal("9", "h@customer.example", "appointmentscheduled", 5_000.0, 0, None),
            deal("10", "x@competitor.example", "closedwon", 60_000.0, 10, None), // suppressed
        ] {
            feed(&h, d).await;
        }

        let dry = h.engine.run(COMPANY, true, now).await.expect("dry run");
        assert_eq!(dry.enrolled, 3, "{label}: {dry:?}");
        assert!(
            h.sim.enrollments(TOKEN).iter().all(|e| e.contact.email == "e@customer.example"),
            "{label}: dry run sends nothing"
        );

        let report = h.engine.run(COMPANY, false, now).await.expect("run");
        let enrolled: Vec<&str> =
            report.candidates.iter().filter(|c| c.skip.is_none()).map(|c| c.email.as_str()).collect();
        assert_eq!(enrolled, ["a@customer.example", "c@customer.example", "b@customer.example"], "{label}");
        let reason = |email: &str| report.candidates.iter().find(|c| c.email == email).and_then(|c| c.skip);
        assert_eq!(reason("d@customer.example"), Some(SkipReason::OptedOut), "{label}");
        assert_eq!(reason("e@customer.example"), Some(SkipReason::RecentlyTouched), "{label}");
        assert_eq!(reason("f@customer.example"), Some(SkipReason::CompanyCap), "{label}");
        assert_eq!(reason("g@customer.example"), Some(SkipReason::OutsideTriggerWindow), "{label}");
        assert_eq!(reason("h@customer.example"), Some(SkipReason::OpenDeal), "{label}");
        assert_eq!(reason("x@competitor.example"), Some(SkipReason::Suppressed), "{label}");
        let a = report.candidates.iter().find(|c| c.email == "a@customer.example").expect("a");
        assert_eq!(a.score, 70.0);
        assert!(
            a.reasons.iter().any(|(why, p)| why.starts_with("heavy usage") && *p == 30.0),
            "{label}: {:?}",
            a.reasons
        );

        // What Upso "emailed", and when: the three winners, in score order, one mailbox
        // holding two (its cap) and the second the third.
        let sent: Vec<String> =
            h.sim.sent_emails(TOKEN).into_iter().filter(|s| s.to != "e@customer.example").map(|s| s.to).collect();
        assert_eq!(sent, ["a@customer.example", "c@customer.example", "b@customer.example"], "{label}");
        let first = &h.sim.sent_emails(TOKEN)[1];
        assert_eq!(first.subject, "A gift for Deal 1", "{label}");
        assert_eq!(first.body, "Hi a, your 25 seats earn you a free upgrade.", "{label}");

        // Recorded with reasons, audited.
        let decisions = h.store.list_decisions(COMPANY, 100).await.expect("decisions");
        let skip_of = |email: &str| decisions.iter().find(|d| d.email == email).map(|d| d.skip_reason.clone());
        assert_eq!(skip_of("d@customer.example").as_deref(), Some("opted_out"), "{label}");
        assert_eq!(skip_of("e@customer.example").as_deref(), Some("recently_touched"), "{label}");
        assert_eq!(decisions.iter().filter(|d| d.decision == "enroll").count(), 3, "{label}");
        assert!(skip_of("g@customer.example").is_none(), "{label}: non-candidates are not decisions");
        let audit = h.store.audit_actions(COMPANY).await.expect("audit");
        assert_eq!(audit.iter().filter(|a| *a == "upsell.enrolled").count(), 3, "{label}");

        // Twice: nobody is enrolled again, and unchanged skips are not recorded again.
        let again = h.engine.run(COMPANY, false, now + 1000).await.expect("run again");
        assert_eq!(again.enrolled, 0, "{label}: {again:?}");
        assert_eq!(h.sim.enrollments(TOKEN).len(), 4, "{label}: three upsells and the newsletter");
        let after = h.store.list_decisions(COMPANY, 100).await.expect("decisions");
        assert_eq!(after.iter().filter(|d| d.decision == "enroll").count(), 3, "{label}");
        assert_eq!(after.iter().filter(|d| d.skip_reason == "opted_out").count(), 1, "{label}");

        // A deal deleted in HubSpot takes its customer out of the next run.
        let deleted = gomark_proto::events::v1::DealDeleted {
            company_id: COMPANY.into(),
            portal_id: "1".into(),
            deal_id: "6".into(),
            ..Default::default()
        }
        .with_deleted_at(now);
        let event = gomark_events::envelope::new_event(COMPANY, gomark_events::event_types::DEAL_DELETED, &deleted);
        let deletions = gomark_upso_cadence::deals::DealDeletions { store: h.store.clone() };
        deletions.handle(&event).await.expect("deleted");
        let dry = h.engine.run(COMPANY, true, now).await.expect("dry run");
        assert!(dry.candidates.iter().all(|c| c.email != "f@customer.example"), "{label}: {dry:?}");
    }
}

#[tokio::test]
async fn cadences_are_planned_applied_and_hand_edits_show_as_drift() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let h = harness(tdb).await;
        let plan = h.cadences.plan(COMPANY, &config(48)).await.expect("plan");
        assert_eq!(plan.iter().map(|a| a.op).collect::<Vec<_>>(), [CadenceOp::Create], "{label}");
        h.cadences.apply(COMPANY, &config(48), 1, None).await.expect("apply");
        assert!(h.cadences.plan(COMPANY, &config(48)).await.expect("plan").is_empty(), "{label}: converged");
        let in_upso = h.sim.cadences(TOKEN);
        assert_eq!(in_upso.len(), 1);
        assert_eq!(in_upso[0].definition.tags, ["gomark", "gomark:upsell", "upsell"], "{label}");

        // Desired state changes: plan shows it, apply writes it.
        let plan = h.cadences.plan(COMPANY, &config(72)).await.expect("plan");
        assert_eq!(plan.len(), 1);
        assert_eq!(
            (plan[0].op, plan[0].fields.clone(), plan[0].edited_in_upso),
            (CadenceOp::Update, vec!["steps"], false)
        );
        let applied = h.cadences.apply(COMPANY, &config(72), 2, None).await.expect("apply");
        assert_eq!(applied.updated, 1, "{label}");
        let cadence = &h.sim.cadences(TOKEN)[0];
        assert_eq!((cadence.version, cadence.definition.steps[1].delay_hours), (2, 72), "{label}");

        // Somebody edits it in Upso: drift, flagged as a hand edit.
        h.sim
            .edit_cadence_by_hand(TOKEN, &cadence.id, |c| {
                if let Some(t) = c.steps[0].template.as_mut() {
                    t.subject = "Buy more".into();
                }
            })
            .expect("edit");
        let drift = h.cadences.plan(COMPANY, &config(72)).await.expect("plan");
        assert_eq!(drift.len(), 1, "{label}");
        assert!(drift[0].edited_in_upso, "{label}");
        assert_eq!(drift[0].to_string(), "~ cadence upsell (steps) [edited in Upso]");
        h.cadences.apply(COMPANY, &config(72), 3, None).await.expect("enforce");
        assert_eq!(
            h.sim.cadences(TOKEN)[0].definition.steps[0].template.as_ref().map(|t| t.subject.as_str()),
            Some("A gift for {{company}}")
        );

        // Removed from the desired state: archived in Upso.
        let empty = OutreachConfig::default();
        assert_eq!(h.cadences.plan(COMPANY, &empty).await.expect("plan")[0].op, CadenceOp::Archive, "{label}");
        h.cadences.apply(COMPANY, &empty, 4, None).await.expect("archive");
        assert_eq!(h.sim.cadences(TOKEN)[0].state, upso_client::CadenceState::Archived, "{label}");
        assert!(h.cadences.plan(COMPANY, &empty).await.expect("plan").is_empty(), "{label}");
    }
}

/// A batch of deal events is stored in one transaction with the same outcome as one event
/// at a time: versions in any order, a deal losing its contact, an unreadable event
/// skipped, and the whole batch delivered again changing nothing.
#[tokio::test]
async fn a_batch_of_deal_events_keeps_each_deals_newest_version() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let h = harness(tdb).await;
        let at = |d: DealUpserted, modified: i64| {
            let d = d.with_times(0, modified, 0);
            gomark_events::envelope::new_event(COMPANY, gomark_events::event_types::DEAL_UPSERTED, &d)
        };
        let no_contact = {
            let mut d = deal("d2", "", "closedwon", 1.0, 10, None);
            d.properties.remove("gomark_contact_email");
            d
        };
        let mut unreadable = at(deal("d9", "z@acme.example", "closedwon", 1.0, 10, None), 1_000);
        unreadable.payload = vec![0xff; 7];
        let batch = [
            at(deal("d1", "new@acme.example", "closedwon", 2.0, 10, None), 2_000),
            at(deal("d1", "old@acme.example", "closedwon", 1.0, 10, None), 1_000),
            at(deal("d2", "c@acme.example", "closedwon", 1.0, 10, None), 1_000),
            unreadable,
            at(no_contact, 2_000),
            at(deal("d3", "e@acme.example", "contractsent", 3.0, 10, None), 1_000),
        ];
        h.deals.handle_batch(&batch).await.expect("handled").run().await;
        let stored = |h: &Harness| {
            let store = h.store.clone();
            async move {
                let deals = store.customer_deals(COMPANY).await.expect("deals");
                deals.into_iter().map(|d| (d.deal_id, d.email)).collect::<Vec<_>>()
            }
        };
        let want =
            vec![("d1".to_owned(), "new@acme.example".to_owned()), ("d3".to_owned(), "e@acme.example".to_owned())];
        assert_eq!(stored(&h).await, want, "{label}");
        assert_eq!(h.deals.triggers.take().into_iter().collect::<Vec<_>>(), [COMPANY], "{label}: engine woken");
        h.deals.handle_batch(&batch).await.expect("redelivery is harmless").run().await;
        assert_eq!(stored(&h).await, want, "{label}: redelivered");
        assert!(h.deals.triggers.take().is_empty(), "{label}: a redelivered batch wakes nothing");
    }
}

/// A batch is claimed and its deletions written in one statement each, yet it ends as its
/// events in order would: a deal that names a contact, drops it and names another keeps the
/// last; one that drops its contact last is gone; redelivering the batch changes nothing.
#[tokio::test]
async fn a_batch_of_deal_events_ends_as_its_events_in_order() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let h = harness(tdb).await;
        let nobody = |id: &str| {
            let mut d = deal(id, "x@example.com", "closedwon", 1000.0, 10, None);
            d.properties.remove("gomark_contact_email");
            d
        };
        let batch: Vec<_> = [
            deal("d1", "a@example.com", "closedwon", 1000.0, 10, None),
            nobody("d1"),
            deal("d1", "b@example.com", "closedwon", 1000.0, 10, None),
            deal("d2", "c@example.com", "closedwon", 1000.0, 10, None),
            nobody("d2"),
            deal("d3", "e@example.com", "closedwon", 1000.0, 10, None),
            nobody("d4"),
        ]
        .iter()
        .map(|d| gomark_events::envelope::new_event(COMPANY, gomark_events::event_types::DEAL_UPSERTED, d))
        .collect();
        let emails = || async {
            let rows = h.store.customer_deals(COMPANY).await.expect("customers");
            rows.into_iter().map(|r| (r.deal_id, r.email)).collect::<Vec<_>>()
        };
        let want = vec![("d1".to_owned(), "b@example.com".to_owned()), ("d3".to_owned(), "e@example.com".to_owned())];
        h.deals.handle_batch(&batch).await.expect("handled").run().await;
        assert_eq!(emails().await, want, "{label}: the end state of the events in order");
        h.deals.handle_batch(&batch).await.expect("redelivered").run().await;
        assert_eq!(emails().await, want, "{label}: a redelivered batch changes nothing");
        let dropped =
            gomark_events::envelope::new_event(COMPANY, gomark_events::event_types::DEAL_UPSERTED, &nobody("d3"));
        h.deals.handle_batch(std::slice::from_ref(&dropped)).await.expect("handled").run().await;
        assert_eq!(emails().await, want[..1].to_vec(), "{label}: a dropped contact is nobody's");
    }
}
