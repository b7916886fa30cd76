//! Portfolio-wide contact rules against the Upso simulator, on SQLite and Postgres: one
//! person who is a customer of three companies gets at most the portfolio cap, and the dry
//! run names the company whose touch caused each skip; an opt-out in one company
//! suppresses the person everywhere; two replicas racing never exceed a cap.

use gomark_events::consumer::BatchHandler;
use gomark_events::relay::RelayWaker;
use gomark_proto::events::v1::DealUpserted;
use gomark_storage::Database;
use gomark_upso_cadence::cadences::Cadences;
use gomark_upso_cadence::credentials::Vault;
use gomark_upso_cadence::deals::{DealEvents, EngineTriggers};
use gomark_upso_cadence::engine::{Engine, RunReport};
use gomark_upso_cadence::guardrails::{self, Calendar, CapCounts, SkipReason};
use gomark_upso_cadence::outreach::{OutreachVendor, UpsoVendor};
use gomark_upso_cadence::portfolio::{Suppression, SuppressionKind};
use gomark_upso_cadence::store::{OutreachConfig, Reservation, Store};
use std::sync::Arc;
use std::time::Duration;
use upso_client::{ClientConfig, UpsoClient, UpsoToken};
use upso_sim::{SimConfig, UpsoSim};

const DAY_MS: i64 = 24 * 3600 * 1000;
const COMPANIES: [&str; 3] = ["c-a", "c-b", "c-c"];

fn token(company: &str) -> String {
    format!("upso-token-{company}")
}

/// One upso-cadence replica: its own connection pool, vendor client and engine.
struct Replica {
    store: Store,
    cadences: Cadences,
    engine: Engine,
}

async fn replica(settings: &gomark_storage::DatabaseSettings, addr: std::net::SocketAddr, keys: &str) -> Replica {
    let db = Database::connect(settings).await.expect("connect");
    db.migrate(&gomark_upso_cadence::MIGRATIONS).await.expect("migrate");
    let store = Store::new(db, Arc::new(Vault::from_setting(keys).expect("vault")));
    let client = UpsoClient::new(ClientConfig {
        base_url: format!("http://{addr}"),
        retry_base_delay: Duration::from_millis(10),
        ..ClientConfig::default()
    })
    .expect("client");
    let vendor: Arc<dyn OutreachVendor> = Arc::new(UpsoVendor::new(client));
    let cadences = Cadences::new(store.clone(), vendor.clone());
    let engine = Engine::new(store.clone(), vendor, cadences.clone(), RelayWaker::default());
    Replica { store, cadences, engine }
}

fn sim_client(addr: std::net::SocketAddr) -> UpsoClient {
    UpsoClient::new(ClientConfig { base_url: format!("http://{addr}"), ..ClientConfig::default() }).expect("client")
}

struct Portfolio {
    sim: UpsoSim,
    replicas: Vec<Replica>,
    _db: gomark_testkit::TestDatabase,
}

impl Portfolio {
    fn one(&self) -> &Replica {
        &self.replicas[0]
    }
}

fn config(portfolio: serde_json::Value, company_cap: u32) -> OutreachConfig {
    let json = serde_json::json!({
        "cadences": [{"key": "upsell", "name": "Upsell", "steps": [
            {"type": "auto_email", "delayHours": 0, "subject": "A gift", "body": "Hi {{firstName}}"}]}],
        "upsellRules": [{
            "key": "default", "cadence": "upsell", "maxPerRun": 100,
            "closedWonDaysAgo": {"min": 1, "max": 90},
            "scoring": [{"property": "amount", "op": "linear", "points": 0.001}],
            "guardrails": {"minDaysSinceLastTouch": 0, "mailboxDailyCap": 100, "companyDailyCap": company_cap}
        }],
        "calendar": {"timeZone": "Europe/Berlin"},
        "portfolioContact": portfolio
    });
    OutreachConfig::parse(&json.to_string()).expect("config")
}

/// Three companies, each with its own Upso account, on one database; `replicas` engines.
async fn portfolio(tdb: gomark_testkit::TestDatabase, replicas: usize, config: &OutreachConfig) -> Portfolio {
    let (sim, addr) = upso_sim::spawn(SimConfig::default(), "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    let keys = Vault::generate_setting("t");
    let mut all = Vec::new();
    for _ in 0..replicas {
        all.push(replica(&tdb.settings, addr, &keys).await);
    }
    let first = &all[0];
    let vendor = UpsoVendor::new(sim_client(addr));
    for company in COMPANIES {
        sim.register_account(&token(company), company);
        let t = UpsoToken::new(token(company));
        let account = vendor.account_id(&t).await.expect("account");
        first.store.save_account(company, &account, &t).await.expect("register");
        first.cadences.apply(company, config, 1, None).await.expect("apply");
    }
    Portfolio { sim, replicas: all, _db: tdb }
}

async fn feed(store: &Store, company: &str, id: &str, email: &str, amount: f64) {
    feed_with(store, company, id, email, amount, &[]).await;
}

async fn feed_with(store: &Store, company: &str, id: &str, email: &str, amount: f64, props: &[(&str, &str)]) {
    let mut properties = std::collections::HashMap::from([("gomark_contact_email".to_owned(), email.to_owned())]);
    properties.extend(props.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let now = gomark_storage::now_ms();
    let d = DealUpserted {
        company_id: company.into(),
        portal_id: "1".into(),
        deal_id: id.into(),
        name: format!("Deal {id}"),
        pipeline_id: "default".into(),
        stage_id: "closedwon".into(),
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
    .with_times(now - 10 * DAY_MS, now, now - 100 * DAY_MS);
    let event = gomark_events::envelope::new_event(company, gomark_events::event_types::DEAL_UPSERTED, &d);
    let handler = DealEvents { store: store.clone(), triggers: Arc::new(EngineTriggers::default()) };
    handler.handle_batch(std::slice::from_ref(&event)).await.expect("handled").run().await;
}

fn of<'a>(report: &'a RunReport, email: &str) -> &'a gomark_upso_cadence::engine::CandidateReport {
    report.candidates.iter().find(|c| c.email == email).unwrap_or_else(|| panic!("{email} in {report:?}"))
}

fn enrolled(sim: &UpsoSim, company: &str) -> Vec<String> {
    sim.enrollments(&token(company)).into_iter().map(|e| e.contact.email).collect()
}

#[tokio::test]
async fn a_customer_of_three_companies_gets_at_most_the_portfolio_cap_and_the_dry_run_names_who_caused_it() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let cfg = config(serde_json::json!({"maxTouches": 2, "windowDays": 7}), 10);
        let p = portfolio(tdb, 1, &cfg).await;
        let r = p.one();
        // Ann is a customer of all three (C knows her as Ann+c@…, the same person).
        for (company, email) in [("c-a", "ann@x.example"), ("c-b", "ann@x.example"), ("c-c", "ann+c@x.example")] {
            feed(&r.store, company, &format!("{company}-1"), email, 50_000.0).await;
            feed(&r.store, company, &format!("{company}-2"), &format!("only-{company}@x.example"), 10_000.0).await;
        }
        let now = gomark_storage::now_ms();
        let a = r.engine.run("c-a", false, now).await.expect("run a");
        assert_eq!(of(&a, "ann@x.example").skip, None, "{label}: {a:?}");
        let b = r.engine.run("c-b", false, now + 1000).await.expect("run b");
        assert_eq!(of(&b, "ann@x.example").skip, None, "{label}: {b:?}");

        let dry = r.engine.run("c-c", true, now + 2000).await.expect("dry run c");
        let ann = of(&dry, "ann+c@x.example");
        assert_eq!(ann.skip, Some(SkipReason::PortfolioCap), "{label}: {dry:?}");
        assert_eq!(ann.caused_by, "c-b", "{label}: the latest touch");
        assert!(ann.detail.contains("c-a at") && ann.detail.contains("c-b at"), "{label}: {}", ann.detail);
        assert!(ann.detail.contains("the portfolio cap is 2"), "{label}: {}", ann.detail);
        assert_eq!(of(&dry, "only-c-c@x.example").skip, None, "{label}: others are not affected");

        let c = r.engine.run("c-c", false, now + 3000).await.expect("run c");
        assert_eq!(of(&c, "ann+c@x.example").skip, Some(SkipReason::PortfolioCap), "{label}");
        assert_eq!(enrolled(&p.sim, "c-c"), ["only-c-c@x.example"], "{label}");
        let total: usize = COMPANIES
            .iter()
            .map(|co| {
                enrolled(&p.sim, co).iter().filter(|e| e.trim_start_matches("ann").starts_with(['@', '+'])).count()
            })
            .sum();
        assert_eq!(total, 2, "{label}: Ann was enrolled by two companies, the cap");
    }
}

#[tokio::test]
async fn the_portfolio_gap_and_cadence_exclusivity_name_the_other_company() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let cfg = config(serde_json::json!({"minHoursBetweenTouches": 48}), 10);
        let p = portfolio(tdb, 1, &cfg).await;
        let r = p.one();
        feed(&r.store, "c-a", "a1", "bo@x.example", 5_000.0).await;
        feed(&r.store, "c-b", "b1", "bo@x.example", 5_000.0).await;
        let now = gomark_storage::now_ms();
        r.engine.run("c-a", false, now).await.expect("run a");
        let dry = r.engine.run("c-b", true, now + 3600 * 1000).await.expect("dry b");
        let bo = of(&dry, "bo@x.example");
        assert_eq!((bo.skip, bo.caused_by.as_str()), (Some(SkipReason::PortfolioGap), "c-a"), "{label}: {dry:?}");

        // Exclusive cadences: even after the gap, B leaves Bo to A's running cadence.
        let cfg = config(serde_json::json!({"exclusiveCadences": true}), 10);
        let mut tx = r.store.db().begin().await.expect("tx");
        r.store.save_config(&mut tx, "c-b", 2, &cfg).await.expect("config");
        tx.commit().await.expect("commit");
        let dry = r.engine.run("c-b", true, now + 3 * DAY_MS).await.expect("dry b");
        let bo = of(&dry, "bo@x.example");
        assert_eq!((bo.skip, bo.caused_by.as_str()), (Some(SkipReason::PortfolioExclusive), "c-a"), "{label}");
        assert!(bo.detail.contains("running in cadence upsell of c-a"), "{label}: {}", bo.detail);
    }
}

#[tokio::test]
async fn an_opt_out_in_one_company_suppresses_the_person_everywhere() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let cfg = config(serde_json::json!({}), 10);
        let p = portfolio(tdb, 1, &cfg).await;
        let r = p.one();
        for company in COMPANIES {
            feed(&r.store, company, &format!("{company}-1"), "Cy@X.example", 5_000.0).await;
        }
        p.sim.opt_out(&token("c-a"), "cy@x.example").expect("opt out");
        let now = gomark_storage::now_ms();
        let a = r.engine.run("c-a", false, now).await.expect("run a");
        assert_eq!(of(&a, "cy@x.example").skip, Some(SkipReason::OptedOut), "{label}: {a:?}");
        let suppressed = r.store.suppressions().await.expect("list");
        let cy = suppressed.get("cy@x.example").expect("on the portfolio list");
        assert_eq!((cy.kind, cy.source_company_id.as_str()), (SuppressionKind::OptOut, "c-a"), "{label}");

        for company in ["c-b", "c-c"] {
            let report = r.engine.run(company, false, now + 1000).await.expect("run");
            let cy = of(&report, "cy@x.example");
            assert_eq!((cy.skip, cy.caused_by.as_str()), (Some(SkipReason::PortfolioSuppressed), "c-a"), "{label}");
            assert!(cy.detail.contains("opt_out, via c-a"), "{label}: {}", cy.detail);
            assert!(enrolled(&p.sim, company).is_empty(), "{label}: {company} emailed nobody");
        }

        // Managed by hand too (do-not-contact, legal hold), and audited both ways.
        let hold = Suppression {
            person: "dee@x.example".into(),
            kind: SuppressionKind::LegalHold,
            source_company_id: String::new(),
            reason: "litigation".into(),
            actor: "apikey:legal".into(),
            created_at: now,
        };
        assert!(r.store.suppress(&hold).await.expect("suppress"), "{label}");
        assert!(!r.store.suppress(&hold).await.expect("again"), "{label}: already on the list");
        assert!(r.store.unsuppress("dee@x.example", "apikey:legal").await.expect("lift"), "{label}");
        let audit = r.store.audit_actions("portfolio").await.expect("audit");
        assert_eq!(audit, ["portfolio.suppressed", "portfolio.suppressed", "portfolio.unsuppressed"], "{label}");
    }
}

#[tokio::test]
async fn two_replicas_never_exceed_a_cap() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let cfg = config(serde_json::json!({"maxTouches": 1}), 3);
        let p = portfolio(tdb, 2, &cfg).await;
        let r = p.one();
        // Ten customers of A, the same ten of B.
        for i in 0..10 {
            for company in ["c-a", "c-b"] {
                feed(&r.store, company, &format!("{company}-{i}"), &format!("p{i}@x.example"), 1000.0 * f64::from(i))
                    .await;
            }
        }
        let now = gomark_storage::now_ms();
        let (one, two) = (&p.replicas[0].engine, &p.replicas[1].engine);
        // Both replicas run both companies at once, from the same snapshot.
        let (a1, a2, b1, b2) = tokio::join!(
            one.run("c-a", false, now),
            two.run("c-a", false, now),
            one.run("c-b", false, now),
            two.run("c-b", false, now)
        );
        for report in [a1, a2, b1, b2] {
            report.expect("run");
        }
        let (a, b) = (enrolled(&p.sim, "c-a"), enrolled(&p.sim, "c-b"));
        assert!(a.len() <= 3 && b.len() <= 3, "{label}: the company cap is 3: {a:?} {b:?}");
        assert!(a.len() + b.len() >= 3, "{label}: {a:?} {b:?}");
        assert!(a.iter().all(|e| !b.contains(e)), "{label}: the portfolio cap is 1, across replicas: {a:?} {b:?}");
        for enrolled in [&a, &b] {
            let once: std::collections::HashSet<&String> = enrolled.iter().collect();
            assert_eq!(once.len(), enrolled.len(), "{label}: nobody enrolled twice: {enrolled:?}");
        }
        // A company whose reserved candidates went to the other in the race (the reservation
        // refuses; the run does not re-rank) fills its cap on its next run.
        two.run("c-a", false, now + 1000).await.expect("run");
        one.run("c-b", false, now + 1000).await.expect("run");
        let (a, b) = (enrolled(&p.sim, "c-a"), enrolled(&p.sim, "c-b"));
        assert_eq!((a.len(), b.len()), (3, 3), "{label}: {a:?} {b:?}");
        assert!(a.iter().all(|e| !b.contains(e)), "{label}: {a:?} {b:?}");

        // The reservation itself: twenty people racing for company C's cap of 3 from two
        // replicas, each of them seeing nothing reserved yet.
        let rule = &cfg.upsell_rules[0];
        let mut racing = Vec::new();
        for i in 0..20 {
            let store = p.replicas[i % 2].store.clone();
            let (rule, portfolio) = (rule.clone(), cfg.portfolio_contact.clone());
            racing.push(tokio::spawn(async move {
                let (id, who) = (format!("race-{i}"), format!("racer{i}@x.example"));
                let reservation = Reservation {
                    id: &id,
                    person: &who,
                    email: &who,
                    company_id: "c-c",
                    cadence_key: "upsell",
                    mailbox_id: "mbx",
                    now_ms: now,
                    day_start_ms: now - 1000,
                    rolling_hours: vec![],
                    person_since_ms: now - 7 * DAY_MS,
                };
                let check = |c: &CapCounts| guardrails::recheck(&rule, &portfolio, "c-c", c, now);
                store.reserve(&reservation, check).await.expect("reserve").is_none()
            }));
        }
        let mut reserved = 0;
        for r in racing {
            reserved += usize::from(r.await.expect("joined"));
        }
        assert_eq!(reserved, 3, "{label}: exactly the cap");
    }
}

fn at(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().expect("instant").as_millisecond()
}

/// Reserves one enrollment of `who` by `company` at `now_ms` the way the engine does (the
/// company's calendar day, the rule's rolling windows); `None` when reserved.
async fn reserve_at(
    store: &Store,
    cfg: &OutreachConfig,
    calendar: &Calendar,
    company: &str,
    who: &str,
    now_ms: i64,
) -> Option<(SkipReason, String)> {
    let rule = &cfg.upsell_rules[0];
    let id = format!("{company}-{who}");
    let reservation = Reservation {
        id: &id,
        person: who,
        email: who,
        company_id: company,
        cadence_key: "upsell",
        mailbox_id: "mbx",
        now_ms,
        day_start_ms: calendar.day_start_ms(now_ms),
        rolling_hours: rule.guardrails.rolling_caps.iter().map(|c| c.hours).collect(),
        person_since_ms: now_ms - 7 * DAY_MS,
    };
    let check = |c: &CapCounts| guardrails::recheck(rule, &cfg.portfolio_contact, company, c, now_ms);
    store.reserve(&reservation, check).await.expect("reserve").map(|s| (s.reason, s.detail))
}

#[tokio::test]
async fn daily_caps_count_the_companys_own_day_across_daylight_saving_and_rolling_caps_any_window() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let daily = config(serde_json::json!({}), 1);
        let p = portfolio(tdb, 1, &daily).await;
        let store = &p.one().store;

        // A Berlin company with a daily cap of 1, around Europe's spring change (Sunday
        // 2026-03-29 has 23 hours: it starts at 23:00 UTC the day before, ends at 22:00 UTC).
        let berlin = Calendar::from_config(&gtm_config::CompanyCalendar {
            time_zone: Some("Europe/Berlin".into()),
            holidays: vec![],
        })
        .expect("calendar");
        let cap = |r: Option<(SkipReason, String)>| r.map(|(reason, _)| reason);
        // 23:30 on Saturday in Berlin.
        assert_eq!(
            cap(reserve_at(store, &daily, &berlin, "c-a", "d0@x.example", at("2026-03-28T22:30:00Z")).await),
            None,
            "{label}"
        );
        // 00:30 on Sunday in Berlin (still Saturday in UTC): a new day, room again.
        assert_eq!(
            cap(reserve_at(store, &daily, &berlin, "c-a", "d1@x.example", at("2026-03-28T23:30:00Z")).await),
            None,
            "{label}"
        );
        // 23:50 on Sunday (CEST): the same Berlin day as the last one, so the cap is full
        // (a UTC day would have room).
        assert_eq!(
            cap(reserve_at(store, &daily, &berlin, "c-a", "d2@x.example", at("2026-03-29T21:50:00Z")).await),
            Some(SkipReason::CompanyCap),
            "{label}"
        );
        // 00:10 on Monday in Berlin, after the change: a new day (at a fixed +01:00 it would
        // still be 23:10 on Sunday, and refused).
        assert_eq!(
            cap(reserve_at(store, &daily, &berlin, "c-a", "d3@x.example", at("2026-03-29T22:10:00Z")).await),
            None,
            "{label}"
        );

        // Rolling caps: at most 1 in any hour and 2 in any 24 hours, whatever the calendar
        // day (the daily cap, 100, never binds).
        let mut rolling = config(serde_json::json!({}), 100);
        rolling.upsell_rules[0].guardrails.rolling_caps =
            vec![gtm_config::RollingCap { hours: 1, max: 1 }, gtm_config::RollingCap { hours: 24, max: 2 }];
        let utc = Calendar::default();
        let t0 = at("2026-11-23T23:00:00Z");
        let min = 60 * 1000;
        let r = |who: &'static str, t: i64| {
            let (rolling, utc) = (&rolling, &utc);
            async move { reserve_at(store, rolling, utc, "c-b", who, t).await }
        };
        assert_eq!(r("r1@x.example", t0).await, None, "{label}");
        let hourly = r("r2@x.example", t0 + 30 * min).await.expect("the hourly cap");
        assert_eq!(hourly.0, SkipReason::RollingCap, "{label}");
        assert!(hourly.1.contains("1 enrollments in any 1 hours"), "{label}: {}", hourly.1);
        // The next hour, and the next calendar day.
        assert_eq!(r("r3@x.example", t0 + 61 * min).await, None, "{label}");
        // Only one enrollment today, but two in the last 24 hours.
        let day = r("r4@x.example", t0 + 180 * min).await.expect("the 24-hour cap");
        assert_eq!(day.0, SkipReason::RollingCap, "{label}");
        assert!(day.1.contains("2 enrollments in any 24 hours"), "{label}: {}", day.1);
        // Once the first is more than 24 hours old, there is room again.
        assert_eq!(r("r5@x.example", t0 + 24 * 60 * min + 1).await, None, "{label}");
    }
}

#[tokio::test]
async fn an_unknown_contact_zone_is_not_passed_to_upso_and_the_enrollment_says_so() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let cfg = config(serde_json::json!({}), 10);
        let p = portfolio(tdb, 1, &cfg).await;
        let r = p.one();
        let zone = "gomark_contact_time_zone";
        feed_with(&r.store, "c-a", "a1", "gus@x.example", 5_000.0, &[(zone, "America/Gotham")]).await;
        feed_with(&r.store, "c-a", "a2", "nia@x.example", 4_000.0, &[(zone, "America/New_York")]).await;
        let now = gomark_storage::now_ms();

        let dry = r.engine.run("c-a", true, now).await.expect("dry run");
        let gus = of(&dry, "gus@x.example");
        assert_eq!(gus.skip, None, "{label}: {dry:?}");
        assert!(gus.detail.contains("\"America/Gotham\" is unknown"), "{label}: {}", gus.detail);
        assert!(!of(&dry, "nia@x.example").detail.contains("unknown"), "{label}");

        r.engine.run("c-a", false, now).await.expect("run");
        let sent: std::collections::HashMap<String, Option<String>> =
            p.sim.enrollments(&token("c-a")).into_iter().map(|e| (e.contact.email, e.contact.time_zone)).collect();
        // Upso would read a name it does not know as UTC: GoMark leaves it out, so the
        // cadence's send window is read in its own zone.
        assert_eq!(sent.get("gus@x.example"), Some(&None), "{label}: {sent:?}");
        assert_eq!(sent.get("nia@x.example"), Some(&Some("America/New_York".to_owned())), "{label}: {sent:?}");
        let decisions = r.store.list_decisions("c-a", 10).await.expect("decisions");
        let recorded = decisions.iter().find(|d| d.email == "gus@x.example").expect("recorded");
        assert_eq!(recorded.decision, "enroll", "{label}");
        assert!(recorded.detail.contains("is unknown"), "{label}: {}", recorded.detail);
    }
}

/// When Upso will send a contact's next email, and whether it already sent one.
fn upso_schedule(sim: &UpsoSim, company: &str) -> std::collections::HashMap<String, (Option<i64>, usize)> {
    let sent = sim.sent_emails(&token(company));
    sim.enrollments(&token(company))
        .into_iter()
        .map(|e| {
            let next = e.next_step_at.as_deref().map(at);
            let n = sent.iter().filter(|s| s.to == e.contact.email).count();
            (e.contact.email, (next, n))
        })
        .collect()
}

#[tokio::test]
async fn a_send_window_applied_by_gomark_holds_across_daylight_saving_in_two_zones() {
    let mut cfg = config(serde_json::json!({}), 100);
    // Who finished a cadence rests, so each phase enrolls only its own two contacts.
    cfg.upsell_rules[0].guardrails.min_days_since_last_touch = 14;
    // 09:00–17:00 in New York; contacts who live elsewhere get it in their own zone.
    cfg.cadences[0].send_window = Some(gtm_config::SendWindow {
        time_zone: "America/New_York".into(),
        start: "09:00".into(),
        end: "17:00".into(),
        weekdays: ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec(),
    });
    let p = portfolio(gomark_testkit::TestDatabase::sqlite(), 1, &cfg).await;
    let r = p.one();
    let berlin = [("gomark_contact_time_zone", "Europe/Berlin")];
    // Enrolls the two contacts of one phase with Upso's clock at `now`, then lets Upso run.
    let phase = |n: u32, now: i64| {
        let (r, sim, berlin) = (r, &p.sim, &berlin);
        async move {
            feed(&r.store, "c-a", &format!("ny{n}"), &format!("ny{n}@x.example"), 1000.0).await;
            feed_with(&r.store, "c-a", &format!("de{n}"), &format!("de{n}@x.example"), 1000.0, berlin).await;
            sim.set_now(now);
            let report = r.engine.run("c-a", false, gomark_storage::now_ms()).await.expect("run");
            assert_eq!(report.enrolled, 2, "{report:?}");
            sim.run_due();
            upso_schedule(sim, "c-a")
        }
    };
    // Friday 2026-03-06, both on standard time: 13:30 UTC is 08:30 in New York (waits for
    // 09:00 EST = 14:00 UTC) and 14:30 in Berlin (sent now).
    let s = phase(1, at("2026-03-06T13:30:00Z")).await;
    assert_eq!(s["ny1@x.example"], (Some(at("2026-03-06T14:00:00Z")), 0), "{s:?}");
    assert_eq!(s["de1@x.example"].1, 1, "{s:?}");
    // Monday 03-09, after the US change only: 12:30 UTC is 08:30 EDT (waits for 09:00 EDT =
    // 13:00 UTC, an hour earlier than last week) and 13:30 in Berlin (sent now).
    let s = phase(2, at("2026-03-09T12:30:00Z")).await;
    assert_eq!(s["ny2@x.example"], (Some(at("2026-03-09T13:00:00Z")), 0), "{s:?}");
    assert_eq!(s["de2@x.example"].1, 1, "{s:?}");
    // Monday 03-30, after Europe's change too: 15:30 UTC is 17:30 CEST in Berlin (closed:
    // waits for 09:00 CEST = 07:00 UTC on Tuesday) and 11:30 EDT in New York (sent now).
    let s = phase(3, at("2026-03-30T15:30:00Z")).await;
    assert_eq!(s["de3@x.example"], (Some(at("2026-03-31T07:00:00Z")), 0), "{s:?}");
    assert_eq!(s["ny3@x.example"].1, 1, "{s:?}");
}
