//! Ingest and read side against real databases (SQLite, and Postgres when configured):
//! any delivery order and any duplicates give the same funnels; the portfolio totals are
//! the sum of the companies; a removed stage keeps its history.

use gomark_events::EventEnvelope;
use gomark_events::consumer::BatchHandler;
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_pipeline_tracker::catalog::Catalog;
use gomark_pipeline_tracker::funnel::{DAY_MS, PipelineInfo, StageInfo, StageKind};
use gomark_pipeline_tracker::ingest::DealEvents;
use gomark_pipeline_tracker::store::Store;
use gomark_pipeline_tracker::tracker::{Currencies, Tracker};
use gomark_proto::events::v1 as ev;
use gomark_proto::money::{Currency, Money};
use gomark_proto::pipeline_tracker::v1 as pb;
use gomark_storage::Database;
use gomark_testkit::TestDatabase;
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

const STAGES: &[&str] = &["appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon", "closedlost"];
const T0: i64 = 1_790_000_000_000;

/// A small deterministic generator, so a failing order can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A deal event as writers send it today: `amount_money` (USD) and the deprecated double.
#[allow(deprecated)]
fn upserted(company: &str, deal: u32, day: i64, stage: &str, amount: f64, created_day: i64) -> EventEnvelope {
    let money = Money::new(Decimal::from_str(&amount.to_string()).expect("decimal"), Currency::USD);
    upserted_with(company, deal, day, stage, Some(amount), Some(money), created_day)
}

#[allow(deprecated)]
fn upserted_with(
    company: &str,
    deal: u32,
    day: i64,
    stage: &str,
    amount: Option<f64>,
    money: Option<Money>,
    created_day: i64,
) -> EventEnvelope {
    let payload = ev::DealUpserted {
        company_id: company.into(),
        portal_id: "1".into(),
        deal_id: deal.to_string(),
        name: format!("Deal {deal}"),
        pipeline_id: "default".into(),
        stage_id: stage.into(),
        amount,
        amount_money: money.map(|m| m.to_proto().expect("fits")),
        owner_id: String::new(),
        ..Default::default()
    }
    .with_times(T0 + (day + 30) * DAY_MS, T0 + day * DAY_MS, T0 + created_day * DAY_MS);
    new_event(company, event_types::DEAL_UPSERTED, &payload)
}

/// The amount of a proto Money (USD asserted), exactly.
fn amount(m: Option<gomark_proto::common::v1::Money>) -> Decimal {
    let m = Money::try_from(m.expect("amount")).expect("valid");
    assert_eq!(m.currency, Currency::USD);
    m.amount
}

fn deleted(company: &str, deal: u32, day: i64) -> EventEnvelope {
    let payload = ev::DealDeleted {
        company_id: company.into(),
        portal_id: "1".into(),
        deal_id: deal.to_string(),
        ..Default::default()
    }
    .with_deleted_at(T0 + day * DAY_MS);
    new_event(company, event_types::DEAL_DELETED, &payload)
}

/// Deals moving forward through the stages over 60 days, some amounts changing, a few
/// deals deleted: the in-order stream.
fn history(company: &str, deals: u32, rng: &mut Rng) -> Vec<EventEnvelope> {
    let mut events = Vec::new();
    for deal in 0..deals {
        let created = rng.below(20) as i64;
        let mut day = created;
        let mut amount = (1 + rng.below(50)) as f64 * 1_000.0;
        let steps = 1 + rng.below(4) as usize;
        for step in 0..steps {
            let stage =
                if step + 1 == steps && steps == 4 { STAGES[3 + rng.below(2) as usize] } else { STAGES[step.min(2)] };
            if rng.below(4) == 0 {
                amount += 500.0;
            }
            events.push(upserted(company, deal, day, stage, amount, created));
            day += 1 + rng.below(9) as i64;
        }
        if rng.below(10) == 0 {
            events.push(deleted(company, deal, day));
        }
    }
    events.sort_by_key(|e| e.occurred_at.map(|t| (t.seconds, t.nanos)));
    events
}

async fn tracker(tdb: &TestDatabase) -> Arc<Tracker> {
    let db = Database::connect(&tdb.settings).await.expect("connect");
    db.migrate(&gomark_pipeline_tracker::MIGRATIONS).await.expect("migrate");
    let store = Store::new(db);
    let catalog = Catalog::new(store.clone(), None, Duration::from_secs(60));
    let pipeline = PipelineInfo {
        id: "default".into(),
        label: "Sales".into(),
        stages: STAGES
            .iter()
            .enumerate()
            .map(|(i, id)| StageInfo {
                id: (*id).into(),
                label: id.to_uppercase(),
                probability: [0.2, 0.4, 0.9, 1.0, 0.0][i],
                kind: [StageKind::Open, StageKind::Open, StageKind::Open, StageKind::Won, StageKind::Lost][i],
                display_order: i as i32,
                removed: false,
            })
            .collect(),
    };
    for company in ["c1", "c2", "c3"] {
        store.replace_stages(company, std::slice::from_ref(&pipeline)).await.expect("stages");
    }
    let cache = Arc::new(gomark_cache::MemoryCache::new(&gomark_testkit::unique("pt")));
    Arc::new(Tracker::new(store, catalog, cache, Duration::from_secs(60)))
}

async fn ingest(tracker: &Arc<Tracker>, events: &[EventEnvelope], batch: usize) {
    let handler = DealEvents { tracker: tracker.clone() };
    for chunk in events.chunks(batch) {
        handler.handle_batch(chunk).await.expect("batch stored").run().await;
    }
}

#[tokio::test]
async fn any_order_and_duplicates_give_the_in_order_funnels() {
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let in_order = history("c1", 120, &mut rng);
    // Shuffled, with a third of the events delivered twice (one of them much later).
    let mut scrambled = in_order.clone();
    for i in 0..in_order.len() / 3 {
        scrambled.push(in_order[(i * 7) % in_order.len()].clone());
    }
    for i in (1..scrambled.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        scrambled.swap(i, j);
    }
    for (a, b) in [(TestDatabase::sqlite(), TestDatabase::sqlite())]
        .into_iter()
        .chain(TestDatabase::postgres().zip(TestDatabase::postgres()))
    {
        let ordered = tracker(&a).await;
        let shuffled = tracker(&b).await;
        ingest(&ordered, &in_order, 1).await;
        ingest(&shuffled, &scrambled, 17).await;
        // And once more, entirely: redelivery of everything changes nothing.
        ingest(&shuffled, &scrambled, 500).await;

        assert_eq!(
            ordered.store().history("c1").await.expect("history"),
            shuffled.store().history("c1").await.expect("history"),
            "{}",
            a.label
        );
        for day in [0, 5, 12, 30, 45, 90] {
            let at = T0 + day * DAY_MS;
            let want = ordered.funnel("c1", "default", at).await.expect("funnel");
            let got = shuffled.funnel("c1", "default", at).await.expect("funnel");
            assert_eq!(want, got, "{}: funnel at day {day}", a.label);
        }
        let want = ordered.funnel("c1", "default", 0).await.expect("now");
        let got = shuffled.funnel("c1", "default", 0).await.expect("now");
        assert_eq!((want.stages, want.open_count), (got.stages.clone(), got.open_count), "{}", a.label);
        assert!(got.open_count + got.won_count + got.lost_count > 50, "{}: the fixture has deals", a.label);
        let w1 = ordered.waterfall("c1", "default", T0 + 10 * DAY_MS, T0 + 40 * DAY_MS, 0).await.expect("waterfall");
        let w2 = shuffled.waterfall("c1", "default", T0 + 10 * DAY_MS, T0 + 40 * DAY_MS, 0).await.expect("waterfall");
        assert_eq!(w1, w2, "{}", a.label);
    }
}

#[tokio::test]
async fn a_cached_funnel_moves_with_the_next_event() {
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        ingest(&t, &[upserted("c1", 1, 0, "appointmentscheduled", 100.0, 0)], 1).await;
        assert_eq!(t.funnel("c1", "", 0).await.expect("funnel").open_count, 1, "{}", tdb.label);
        ingest(&t, &[upserted("c1", 1, 1, "closedwon", 100.0, 0)], 1).await;
        let f = t.funnel("c1", "", 0).await.expect("funnel");
        assert_eq!((f.open_count, f.won_count, f.win_rate), (0, 1, 1.0), "{}: cache invalidated", tdb.label);
        // An older version arriving late does not move it back.
        ingest(&t, &[upserted("c1", 1, 0, "appointmentscheduled", 100.0, 0)], 1).await;
        assert_eq!(t.funnel("c1", "", 0).await.expect("funnel").won_count, 1, "{}", tdb.label);
        // An amount change in the same stage is no transition.
        ingest(&t, &[upserted("c1", 1, 2, "closedwon", 150.0, 0)], 1).await;
        let log = t.store().transitions("c1", "1").await.expect("transitions");
        let steps: Vec<(Option<&str>, &str, Decimal)> =
            log.iter().map(|x| (x.from_stage.as_deref(), x.to_stage.as_str(), x.amount)).collect();
        let hundred = Decimal::ONE_HUNDRED;
        assert_eq!(
            steps,
            [(None, "appointmentscheduled", hundred), (Some("appointmentscheduled"), "closedwon", hundred)]
        );
        let usage = t.store().stage_usage("c1").await.expect("usage");
        assert_eq!(usage, [("default".to_owned(), "closedwon".to_owned(), 1)], "{}", tdb.label);
    }
}

#[tokio::test]
async fn portfolio_totals_are_the_sum_of_the_companies() {
    let mut rng = Rng(7);
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        for (company, deals) in [("c1", 30), ("c2", 45), ("c3", 12)] {
            ingest(&t, &history(company, deals, &mut rng), 50).await;
            t.store().record_company(company, &format!("Company {company}")).await.expect("name");
        }
        let p = t.portfolio(&[], 0, "", 0).await.expect("portfolio");
        assert_eq!(p.company_count, 3);
        let totals = p.totals.clone().expect("totals");
        let sum = |f: fn(&pb::CompanySummary) -> Option<gomark_proto::common::v1::Money>| -> Decimal {
            p.companies.iter().map(|c| amount(f(c))).sum()
        };
        assert_eq!(totals.open_count, p.companies.iter().map(|c| c.open_count).sum::<u64>(), "{}", tdb.label);
        // Exactly: decimals, no floating-point drift.
        assert_eq!(amount(totals.open_amount_money.clone()), sum(|c| c.open_amount_money.clone()));
        assert_eq!(amount(totals.weighted_forecast_money.clone()), sum(|c| c.weighted_forecast_money.clone()));
        assert_eq!(amount(totals.won_amount_money.clone()), sum(|c| c.won_amount_money.clone()));
        assert!(amount(totals.open_amount_money.clone()) > Decimal::ZERO);
        for (i, stage) in totals.stages.iter().enumerate() {
            let companies: u64 = p.companies.iter().map(|c| c.stages[i].deal_count).sum();
            assert_eq!(stage.deal_count, companies, "{}: stage {}", tdb.label, stage.stage_id);
        }
        // Each company's summary equals its own funnel.
        for c in &p.companies {
            let f = t.funnel(&c.company_id, "default", 0).await.expect("funnel");
            assert_eq!((c.open_count, c.won_count, c.lost_count), (f.open_count, f.won_count, f.lost_count));
            assert_eq!(c.company_name, format!("Company {}", c.company_id));
        }
        // Pages cover the companies once; the totals stay whole on every page.
        let first = t.portfolio(&[], 2, "", 0).await.expect("page 1");
        assert_eq!(first.companies.len(), 2);
        let second = t.portfolio(&[], 2, &first.next_page_token, 0).await.expect("page 2");
        assert_eq!(second.companies.iter().map(|c| c.company_id.as_str()).collect::<Vec<_>>(), ["c3"]);
        assert!(second.next_page_token.is_empty());
        assert_eq!(second.totals, p.totals);
        // A chosen subset.
        let subset = t.portfolio(&["c2".into(), "c1".into()], 0, "", 0).await.expect("subset");
        assert_eq!(subset.company_count, 2);
        assert_eq!(
            subset.totals.expect("totals").open_count,
            p.companies.iter().filter(|c| c.company_id != "c3").map(|c| c.open_count).sum::<u64>()
        );
    }
}

#[tokio::test]
async fn a_renamed_or_removed_stage_keeps_its_history() {
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        ingest(&t, &[upserted("c1", 1, 0, "qualifiedtobuy", 10.0, 0)], 1).await;
        let renamed = PipelineInfo {
            id: "default".into(),
            label: "Sales".into(),
            stages: vec![StageInfo {
                id: "appointmentscheduled".into(),
                label: "Discovery".into(),
                probability: 0.2,
                kind: StageKind::Open,
                display_order: 0,
                removed: false,
            }],
        };
        t.store().replace_stages("c1", &[renamed]).await.expect("stages");
        t.changed(&["c1".into()]).await;
        let f = t.funnel("c1", "default", 0).await.expect("funnel");
        let first = f.stages.iter().find(|s| s.stage_id == "appointmentscheduled").expect("kept");
        assert_eq!(first.label, "Discovery", "{}", tdb.label);
        let gone = f.stages.iter().find(|s| s.stage_id == "qualifiedtobuy").expect("removed stage kept");
        assert_eq!((gone.label.as_str(), gone.removed, gone.deal_count), ("QUALIFIEDTOBUY", true, 1), "{}", tdb.label);
    }
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let tdb = TestDatabase::sqlite();
    let t = tracker(&tdb).await;
    let err = t.waterfall("c1", "default", 10, 5, 0).await.expect_err("backwards").to_public();
    assert_eq!(err.field.as_deref(), Some("to"), "{err}");
    let err = t.periods("c1", "default", "fortnight", 0, 10).await.expect_err("bad period").to_public();
    assert!(err.to_string().contains("period"), "{err}");
    let err = t.periods("c1", "default", "day", 0, 1_000 * DAY_MS).await.expect_err("too many").to_public();
    assert!(err.to_string().contains("400"), "{err}");
    let err = t.funnel("c1", "nope", 0).await.expect_err("unknown pipeline").to_public();
    assert!(err.to_string().contains("nope"), "{err}");
}

fn money(amount: &str, currency: &str) -> Money {
    Money::new(Decimal::from_str(amount).expect("decimal"), currency.parse().expect("currency"))
}

fn dec(x: &str) -> Decimal {
    Decimal::from_str(x).expect("decimal")
}

/// The amount and currency code of a proto Money.
fn parts(m: &Option<gomark_proto::common::v1::Money>) -> (Decimal, String) {
    let m = Money::try_from(m.clone().expect("amount")).expect("valid");
    (m.amount, m.currency.to_string())
}

fn rate(date: &str, from: &str, to: &str, rate: &str) -> gomark_pipeline_tracker::store::FxRate {
    gomark_pipeline_tracker::store::FxRate {
        date: date.into(),
        from: from.parse().expect("currency"),
        to: to.parse().expect("currency"),
        rate: dec(rate),
    }
}

fn ms(date: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .expect("date")
        .and_hms_opt(12, 0, 0)
        .expect("time")
        .and_utc()
        .timestamp_millis()
}

#[tokio::test]
async fn a_mixed_currency_portfolio_converts_at_the_rate_of_its_date() {
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        let open = "appointmentscheduled";
        // Currencies are declared in the configuration (the company without one gets the
        // baseline's, USD by default).
        t.set_currencies(declared_currencies(None)).await;
        for (company, currency, amount) in
            [("usd", "USD", "1000.10"), ("eur", "EUR", "2000.05"), ("gbp", "GBP", "300.33")]
        {
            t.store().record_company(company, company).await.expect("company");
            let event = upserted_with(company, 1, 0, open, None, Some(money(amount, currency)), 0);
            ingest(&t, &[event], 1).await;
        }
        t.store()
            .put_fx_rates(&[
                rate("2026-01-01", "EUR", "USD", "1.10"),
                rate("2026-02-01", "EUR", "USD", "1.20"),
                rate("2026-01-15", "GBP", "USD", "1.25"),
                // The other direction is another rate, never used for EUR → USD.
                rate("2026-01-01", "USD", "EUR", "0.5"),
            ])
            .await
            .expect("rates");
        t.changed(&["usd".into(), "eur".into(), "gbp".into()]).await;

        // Each company's row stays in its own currency.
        let p = t.portfolio(&[], 0, "", ms("2026-02-10")).await.expect("portfolio");
        let row = |id: &str| p.companies.iter().find(|c| c.company_id == id).expect("row").clone();
        assert_eq!(parts(&row("eur").open_amount_money), (dec("2000.05"), "EUR".into()), "{}", tdb.label);
        assert_eq!(parts(&row("gbp").open_amount_money), (dec("300.33"), "GBP".into()));
        // 1000.10 + 2000.05 × 1.20 + 300.33 × 1.25 = 1000.10 + 2400.06 + 375.4125
        let totals = p.totals.clone().expect("totals");
        assert_eq!(parts(&totals.open_amount_money), (dec("3775.5725"), "USD".into()), "{}", tdb.label);
        assert_eq!(p.reporting_currency_code, "USD");
        let eur_rate = row("eur").fx_rate.expect("rate shown");
        assert_eq!((eur_rate.date.as_str(), eur_rate.rate.as_str()), ("2026-02-01", "1.20"));
        assert!(row("usd").fx_rate.is_none() && !row("usd").fx_rate_missing);
        assert!(p.unconverted_company_ids.is_empty());

        // An earlier date takes the earlier EUR rate.
        let p = t.portfolio(&[], 0, "", ms("2026-01-20")).await.expect("portfolio");
        assert_eq!(parts(&p.totals.expect("totals").open_amount_money).0, dec("3575.5675"), "{}", tdb.label);

        // Before any GBP rate: the GBP company is flagged and left out, not taken 1:1.
        let p = t.portfolio(&[], 0, "", ms("2026-01-10")).await.expect("portfolio");
        let gbp = p.companies.iter().find(|c| c.company_id == "gbp").expect("row");
        assert!(gbp.fx_rate_missing && gbp.fx_rate.is_none(), "{}", tdb.label);
        assert_eq!(p.unconverted_company_ids, ["gbp"]);
        // 1000.10 + 2000.05 × 1.10
        assert_eq!(parts(&p.totals.expect("totals").open_amount_money).0, dec("3200.155"), "{}", tdb.label);

        // A new revision reports in EUR: USD converts with its own rate, GBP has none.
        t.set_currencies(declared_currencies(Some("EUR"))).await;
        let p = t.portfolio(&[], 0, "", ms("2026-02-10")).await.expect("portfolio");
        assert_eq!(p.reporting_currency_code, "EUR");
        assert_eq!(p.unconverted_company_ids, ["gbp"]);
        // 1000.10 × 0.5 + 2000.05
        assert_eq!(
            parts(&p.totals.expect("totals").open_amount_money),
            (dec("2500.10"), "EUR".into()),
            "{}",
            tdb.label
        );
    }
}

/// The currencies of a configuration with companies `usd`, `eur` and `gbp`.
fn declared_currencies(reporting: Option<&str>) -> Currencies {
    let reporting = reporting.map(|c| format!("reportingCurrency: {c}")).unwrap_or_default();
    let doc = gtm_config::Document::from_yaml(&format!(
        "baseline: {{{reporting}}}\ncompanies:\n  usd-co: {{companyId: usd}}\n  eur-co: {{companyId: eur, currency: EUR}}\n  gbp-co: {{companyId: gbp, currency: GBP}}\n"
    ))
    .expect("yaml");
    doc.validate().expect("valid");
    gomark_pipeline_tracker::stage_config::currencies(&doc)
}

#[tokio::test]
async fn decimals_round_trip_exactly_through_the_database() {
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        let open = "appointmentscheduled";
        let events = [
            upserted_with("c1", 1, 0, open, None, Some(money("0.1", "USD")), 0),
            upserted_with("c1", 2, 0, open, None, Some(money("0.2", "USD")), 0),
            upserted_with("c1", 3, 0, open, None, Some(money("12345678901.123456789", "USD")), 0),
        ];
        ingest(&t, &events, 3).await;
        let history = t.store().history("c1").await.expect("history");
        let stored: Vec<Decimal> = history.iter().map(|d| d.versions[0].amount.expect("amount")).collect();
        assert_eq!(stored, [dec("0.1"), dec("0.2"), dec("12345678901.123456789")], "{}", tdb.label);
        let f = t.funnel("c1", "", 0).await.expect("funnel");
        // 0.1 + 0.2 is 0.3, exactly.
        assert_eq!(parts(&f.open_amount_money), (dec("12345678901.423456789"), "USD".into()), "{}", tdb.label);
    }
}

#[tokio::test]
async fn events_without_amount_money_fall_back_to_the_double_in_the_company_currency() {
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        let doc = gtm_config::Document::from_yaml("companies:\n  c1: {companyId: c1, currency: EUR}\n").expect("yaml");
        t.set_currencies(gomark_pipeline_tracker::stage_config::currencies(&doc)).await;
        t.store().record_company("c1", "C1").await.expect("company");
        // Written before `amount_money` existed: the double only.
        let old = upserted_with("c1", 1, 0, "appointmentscheduled", Some(1234.5), None, 0);
        ingest(&t, &[old], 1).await;
        let f = t.funnel("c1", "", 0).await.expect("funnel");
        assert_eq!(parts(&f.open_amount_money), (dec("1234.5"), "EUR".into()), "{}", tdb.label);
        // A deal in another currency than the company's converts at the rate of the day.
        t.store().put_fx_rates(&[rate("2020-01-01", "USD", "EUR", "0.9")]).await.expect("rates");
        let usd = upserted_with("c1", 2, 0, "appointmentscheduled", Some(1.0), Some(money("100", "USD")), 0);
        ingest(&t, &[usd], 1).await;
        let f = t.funnel("c1", "", 0).await.expect("funnel");
        assert_eq!(parts(&f.open_amount_money), (dec("1324.5"), "EUR".into()), "{}", tdb.label);
    }
}

/// Days since T0 of the real now, so windows (which end now) hold what the test says.
fn today() -> i64 {
    (gomark_storage::now_ms() - T0) / DAY_MS
}

fn definitions(yaml: &str, revision: i64) -> gomark_pipeline_tracker::kpi::Definitions {
    let doc = gtm_config::Document::from_yaml(yaml).expect("parses");
    doc.validate().expect("valid");
    gomark_pipeline_tracker::kpi::definitions(&doc, revision)
}

#[tokio::test]
async fn a_definition_change_recomputes_and_old_figures_keep_their_revision() {
    let tdb = TestDatabase::sqlite();
    let tracker = tracker(&tdb).await;
    let t = today();
    let events = [
        // Won long ago (outside a 90-day window), lost and won recently, one still open.
        upserted("c1", 1, t - 200, "appointmentscheduled", 100.0, t - 200),
        upserted("c1", 1, t - 190, "closedwon", 100.0, t - 200),
        upserted("c1", 2, t - 20, "appointmentscheduled", 100.0, t - 20),
        upserted("c1", 2, t - 10, "closedlost", 100.0, t - 20),
        upserted("c1", 3, t - 30, "appointmentscheduled", 100.0, t - 30),
        upserted("c1", 3, t - 5, "closedwon", 100.0, t - 30),
        upserted("c1", 4, t - 3, "qualifiedtobuy", 100.0, t - 3),
    ];
    ingest(&tracker, &events, 10).await;
    tracker.set_definitions(definitions("baseline: {}\n", 1)).await;
    let before = tracker.company_funnels("c1").await.expect("funnels").summary.expect("summary");
    assert_eq!((before.definition_revision, before.win_rate), (1, 2.0 / 3.0));
    // Cached: the same figures, the same revision.
    assert_eq!(tracker.company_funnels("c1").await.expect("cached").summary.as_ref(), Some(&before));

    let yaml = "baseline:\n  metrics:\n    winRate: {windowDays: 90}\n    minimumSample: {deals: 2}\n";
    tracker.set_definitions(definitions(yaml, 2)).await;
    let after = tracker.company_funnels("c1").await.expect("funnels");
    let summary = after.summary.expect("summary");
    assert_eq!((summary.definition_revision, summary.win_rate), (2, 0.5));
    let win = summary.metrics.and_then(|m| m.win_rate).expect("win rate");
    assert_eq!((win.value, win.sample_size, win.not_enough_data), (0.5, 2, false));
    assert!(after.funnels.iter().all(|f| f.definition_revision == 2 && f.win_rate == 0.5));
    // The figure computed before still says what it was computed with.
    assert_eq!((before.definition_revision, before.win_rate), (1, 2.0 / 3.0));
    // A past date is computed under the definitions in force, and says so.
    let past = tracker.funnel("c1", "default", T0 + (t - 1) * DAY_MS).await.expect("past");
    assert_eq!(past.definition_revision, 2);
    let defs = tracker.definitions_proto();
    assert_eq!((defs.revision, defs.win_rate_window.map(|d| d.seconds)), (2, Some(90 * 86_400)));

    // Three deals needed: the same window gives "not enough data" rather than 0.5.
    let yaml = "baseline:\n  metrics:\n    winRate: {windowDays: 90}\n    minimumSample: {deals: 3}\n";
    tracker.set_definitions(definitions(yaml, 3)).await;
    let summary = tracker.company_funnels("c1").await.expect("funnels").summary.expect("summary");
    let win = summary.metrics.and_then(|m| m.win_rate).expect("win rate");
    assert_eq!((summary.definition_revision, win.not_enough_data, win.sample_size), (3, true, 2));
}

#[tokio::test]
async fn benchmarks_rank_companies_within_their_tag_group() {
    let tdb = TestDatabase::sqlite();
    let tracker = tracker(&tdb).await;
    let t = today();
    // c1 wins 1 of 4, c2 2 of 4, c3 3 of 4.
    let mut events = Vec::new();
    for (company, wins) in [("c1", 1), ("c2", 2), ("c3", 3)] {
        for deal in 0..4u32 {
            let stage = if deal < wins { "closedwon" } else { "closedlost" };
            events.push(upserted(company, deal, t - 20, "appointmentscheduled", 10.0, t - 20));
            events.push(upserted(company, deal, t - 10, stage, 10.0, t - 20));
        }
    }
    ingest(&tracker, &events, 50).await;
    let yaml = r#"
baseline:
  metrics: {minimumSample: {deals: 4, companies: 2}}
companies:
  one: {companyId: c1, tags: {salesMotion: plg}}
  two: {companyId: c2, tags: {salesMotion: plg}}
  three: {companyId: c3, tags: {salesMotion: enterprise}}
"#;
    tracker.set_definitions(definitions(yaml, 7)).await;
    let b = tracker.benchmarks("winRate", "salesMotion", &[]).await.expect("benchmarks");
    assert_eq!((b.definition_revision, b.metrics.len()), (7, 1));
    let groups = &b.metrics[0].groups;
    let tags: Vec<&str> = groups.iter().map(|g| g.tag_value.as_str()).collect();
    assert_eq!(tags, ["enterprise", "plg"]);
    // One enterprise company: below the minimum of two, no percentiles.
    assert!(groups[0].not_enough_data && groups[0].companies[0].value.as_ref().is_some_and(|v| v.value == 0.75));
    // plg: 0.25 and 0.5 → p25 0.3125, p50 0.375, p75 0.4375; ranks 25 and 75.
    let plg = &groups[1];
    assert!(!plg.not_enough_data);
    assert_eq!((plg.p25, plg.p50, plg.p75, plg.sample_size), (0.3125, 0.375, 0.4375, 2));
    let ranks: Vec<(&str, f64)> = plg.companies.iter().map(|c| (c.company_id.as_str(), c.percentile_rank)).collect();
    assert_eq!(ranks, [("c1", 25.0), ("c2", 75.0)]);
    // Ungrouped: one group of three; an unknown metric is refused.
    let all = tracker.benchmarks("winRate", "", &[]).await.expect("benchmarks");
    assert_eq!((all.metrics[0].groups.len(), all.metrics[0].groups[0].p50), (1, 0.5));
    assert!(tracker.benchmarks("nope", "", &[]).await.is_err());
}

#[tokio::test]
async fn portfolio_periods_are_the_sum_of_the_companies() {
    let mut rng = Rng(0x09e7_10d5);
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        let mut events = history("c1", 40, &mut rng);
        events.extend(history("c2", 30, &mut rng));
        ingest(&t, &events, 25).await;
        let (from, to) = (T0, T0 + 60 * DAY_MS);
        for period in ["day", "week"] {
            let c1 = t.periods("c1", "default", period, from, to).await.expect("c1").periods;
            let c2 = t.periods("c2", "default", period, from, to).await.expect("c2").periods;
            let all = t.portfolio_periods(&[], period, from, to).await.expect("portfolio").periods;
            assert_eq!(all.len(), c1.len(), "{}: one row per {period}", tdb.label);
            for ((a, b), sum) in c1.iter().zip(&c2).zip(&all) {
                assert_eq!(a.start, sum.start, "{}", tdb.label);
                assert_eq!(
                    (a.created + b.created, a.won + b.won, a.lost + b.lost),
                    (sum.created, sum.won, sum.lost),
                    "{}: {period} {:?}",
                    tdb.label,
                    sum.start
                );
                assert!(sum.won_amount_money.is_none(), "no sum of amounts across currencies");
            }
            assert!(all.iter().map(|p| p.created).sum::<u64>() > 30, "{}: the deals created in range", tdb.label);
            // A selection counts only its companies.
            let only = t.portfolio_periods(&["c2".to_owned()], period, from, to).await.expect("c2 only").periods;
            let counts = |s: &[pb::PeriodCount]| s.iter().map(|p| (p.created, p.won, p.lost)).collect::<Vec<_>>();
            assert_eq!(counts(&only), counts(&c2), "{}", tdb.label);
        }
        let err = t.portfolio_periods(&[], "fortnight", from, to).await.expect_err("bad period").to_public();
        assert!(err.to_string().contains("period"), "{err}");
    }
}

/// `f` without the instant it was computed at.
fn without_instant(mut f: pb::CompanyFunnels) -> pb::CompanyFunnels {
    for funnel in &mut f.funnels {
        funnel.as_of = None;
    }
    f
}

/// The company's funnels now, without the instant they were computed at.
async fn funnels_now(t: &Tracker, company: &str) -> pb::CompanyFunnels {
    without_instant(t.company_funnels(company).await.expect("funnels"))
}

/// A replica with nothing kept or cached: it computes from the whole history.
fn recomputing(store: &Store) -> Tracker {
    let catalog = Catalog::new(store.clone(), None, Duration::from_secs(60));
    let cache = Arc::new(gomark_cache::MemoryCache::new(&gomark_testkit::unique("pt-fresh")));
    Tracker::new(store.clone(), catalog, cache, Duration::from_secs(60))
}

/// A replica on `store` and `cache` that announces on `bus` and applies what the others
/// announce there, until `shutdown`.
fn listening_replica(
    store: &Store,
    cache: Arc<gomark_cache::MemoryCache>,
    bus: &Arc<dyn gomark_events::EventBus>,
    shutdown: &gomark_platform::Shutdown,
) -> Arc<Tracker> {
    use gomark_pipeline_tracker::replicas::{self, Replicas};
    let catalog = Catalog::new(store.clone(), None, Duration::from_secs(60));
    let t =
        Tracker::new(store.clone(), catalog, cache, Duration::from_secs(60)).with_replicas(Replicas::new(bus.clone()));
    let t = Arc::new(t);
    tokio::spawn(replicas::listen(t.clone(), shutdown.clone()));
    t
}

#[tokio::test]
async fn kept_sums_follow_changes_on_either_replica_and_equal_a_full_recompute() {
    for tdb in TestDatabase::all() {
        // Two replicas on one database and one cache; each keeps its own sums.
        tracker(&tdb).await;
        let store = Store::new(Database::connect(&tdb.settings).await.expect("connect"));
        let replica = |cache: Arc<gomark_cache::MemoryCache>| {
            let catalog = Catalog::new(store.clone(), None, Duration::from_secs(60));
            Arc::new(Tracker::new(store.clone(), catalog, cache, Duration::from_secs(60)))
        };
        let cache = Arc::new(gomark_cache::MemoryCache::new(&gomark_testkit::unique("pt")));
        let (a, b) = (replica(cache.clone()), replica(cache));
        let mut rng = Rng(0x0dd5_eed5_0000_0017);
        let events = history("c1", 60, &mut rng);
        let (head, tail) = events.split_at(events.len() / 2);
        ingest(&a, head, 50).await;
        for (i, chunk) in tail.chunks(3).enumerate() {
            // Both replicas hold sums before the change; one of them ingests it.
            funnels_now(&a, "c1").await;
            funnels_now(&b, "c1").await;
            ingest(if i % 3 == 0 { &b } else { &a }, chunk, 3).await;
            // A replica with no sums recomputes from the whole history.
            let want = funnels_now(&recomputing(&store), "c1").await;
            assert_eq!(funnels_now(&a, "c1").await, want, "{}: replica a after change {i}", tdb.label);
            assert_eq!(funnels_now(&b, "c1").await, want, "{}: replica b after change {i}", tdb.label);
        }
        let last = funnels_now(&a, "c1").await.summary.expect("summary");
        assert!(last.open_count + last.won_count + last.lost_count > 20, "{}: the fixture has deals", tdb.label);
    }
}

#[tokio::test]
async fn a_batch_hands_each_watched_company_its_new_figures_equal_to_a_full_recompute() {
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        let mut rng = Rng(0x0f1e_5400_0000_0017);
        let (c1, c2, c3) = (history("c1", 30, &mut rng), history("c2", 30, &mut rng), history("c3", 10, &mut rng));
        for events in [&c1, &c2, &c3] {
            ingest(&t, &events[..events.len() / 2], 50).await;
        }
        // c1 and c2 hold sums and are watched; c3 holds sums but nobody watches it.
        for c in ["c1", "c2", "c3"] {
            funnels_now(&t, c).await;
        }
        let (mut w1, mut w2) = (t.changes.subscribe_company("c1"), t.changes.subscribe_company("c2"));
        // One batch over the three companies.
        let mut batch: Vec<EventEnvelope> = Vec::new();
        for events in [&c1, &c2, &c3] {
            batch.extend_from_slice(&events[events.len() / 2..]);
        }
        ingest(&t, &batch, batch.len()).await;
        let fresh_replica = recomputing(t.store());
        for (c, w) in [("c1", &mut w1), ("c2", &mut w2)] {
            let change = w.borrow_and_update().clone();
            let fresh = change.fresh.unwrap_or_else(|| panic!("{}: {c}'s figures handed over", tdb.label));
            assert_eq!(fresh.version, t.store().company_version(c).await.expect("version"), "{}", tdb.label);
            let got = without_instant((*fresh.funnels).clone());
            assert_eq!(got, funnels_now(&fresh_replica, c).await, "{}: {c} equals a full recompute", tdb.label);
        }
    }
}

/// A deal version with every date chosen: modified on `day`, closing on `close_day`.
#[allow(deprecated)]
fn deal_at(
    deal: &str,
    name: &str,
    day: i64,
    stage: &str,
    amount: u32,
    close_day: i64,
    created_day: i64,
) -> EventEnvelope {
    let money = Money::new(Decimal::from(amount), Currency::USD);
    let payload = ev::DealUpserted {
        company_id: "c1".into(),
        portal_id: "1".into(),
        deal_id: deal.into(),
        name: name.into(),
        pipeline_id: "default".into(),
        stage_id: stage.into(),
        amount: Some(f64::from(amount)),
        amount_money: Some(money.to_proto().expect("fits")),
        ..Default::default()
    }
    .with_times(T0 + close_day * DAY_MS, T0 + day * DAY_MS, T0 + created_day * DAY_MS);
    new_event("c1", event_types::DEAL_UPSERTED, &payload)
}

/// One listed deal, readably: `id "name" amount: before -> after`, each state as
/// `stage amount close-day` (or `-` when the deal was not in the pipeline then).
fn listed(d: &pb::WaterfallDeal) -> String {
    let state = |s: &Option<pb::WaterfallDealState>| match s {
        None => "-".to_owned(),
        Some(s) => {
            let close = s.close_date.as_ref().map_or(0, |t| (t.seconds * 1000 - T0) / DAY_MS);
            format!("{} {} d{close}", s.stage_id, amount(s.amount.clone()))
        }
    };
    format!("{} {:?} {}: {} -> {}", d.deal_id, d.name, amount(d.amount.clone()), state(&d.before), state(&d.after))
}

/// A movement as `(count, amount, its deals listed)`.
fn bar(m: &Option<pb::Movement>) -> (u64, Decimal, Vec<String>, bool) {
    let m = m.clone().expect("movement");
    let deals = m.deals.iter().map(listed).collect();
    (m.count, amount(m.amount_money), deals, m.deals_truncated)
}

/// The issue's "a waterfall between two dates checked against the deals": a dozen deals
/// whose every move is chosen, and every bar's count, amount and deal list worked out by
/// hand, on SQLite and (when configured) Postgres.
#[tokio::test]
async fn a_waterfall_between_two_dates_checked_against_the_deals() {
    const OPEN: &str = "appointmentscheduled";
    const WON: &str = "closedwon";
    const LOST: &str = "closedlost";
    // (deal, name, day, stage, amount, close day, created day); the waterfall runs from
    // day 10 to day 20.
    let versions: &[(&str, &str, i64, &str, u32, i64, i64)] = &[
        // Open throughout; close date pushed from day 30 to day 45.
        ("pushed", "Pushed Ltd", 1, OPEN, 1000, 30, 1),
        ("pushed", "Pushed Ltd", 12, OPEN, 1000, 45, 1),
        // Open throughout; close date pulled in from day 40 to day 25.
        ("pulled", "Pulled plc", 2, OPEN, 2000, 40, 2),
        ("pulled", "Pulled plc", 14, OPEN, 2000, 25, 2),
        // Open throughout; amount 500 -> 800.
        ("grown", "Grown GmbH", 3, OPEN, 500, 30, 3),
        ("grown", "Grown GmbH", 15, OPEN, 800, 30, 3),
        // Open at the start, won (at a larger amount) in the window: counted at 3000.
        ("won", "Won SA", 4, OPEN, 3000, 30, 4),
        ("won", "Won SA", 16, WON, 3500, 16, 4),
        // Open at the start, lost in the window.
        ("lost", "Lost Inc", 5, OPEN, 700, 30, 5),
        ("lost", "Lost Inc", 17, LOST, 700, 17, 5),
        // Created in the window, still open.
        ("new", "New Co", 12, OPEN, 400, 30, 12),
        // Created and won in the window; no name known.
        ("newwon", "", 13, OPEN, 600, 30, 13),
        ("newwon", "", 18, WON, 600, 18, 13),
        // Won before the window, created after it: in no bar.
        ("oldwon", "Old Won", 1, OPEN, 5000, 30, 1),
        ("oldwon", "Old Won", 5, WON, 5000, 5, 1),
        ("future", "Future", 25, OPEN, 9000, 30, 25),
        // Open at the start, deleted in the window (below).
        ("deleted", "Deleted BV", 6, OPEN, 250, 30, 6),
        // Lost before the window, reopened in it.
        ("reopened", "Reopened AB", 2, OPEN, 900, 30, 2),
        ("reopened", "Reopened AB", 6, LOST, 900, 6, 2),
        ("reopened", "Reopened AB", 11, OPEN, 900, 30, 2),
        // Open throughout; pushed (30 -> 35) and grown (100 -> 150) at once.
        ("both", "Both Oy", 7, OPEN, 100, 30, 7),
        ("both", "Both Oy", 13, OPEN, 150, 35, 7),
    ];
    let mut events: Vec<EventEnvelope> = versions
        .iter()
        .map(|&(id, name, day, stage, amt, close, created)| deal_at(id, name, day, stage, amt, close, created))
        .collect();
    events.push({
        let payload = ev::DealDeleted {
            company_id: "c1".into(),
            portal_id: "1".into(),
            deal_id: "deleted".into(),
            ..Default::default()
        }
        .with_deleted_at(T0 + 19 * DAY_MS);
        new_event("c1", event_types::DEAL_DELETED, &payload)
    });
    let s = |x: &[&str]| x.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let d = |x: &str| Decimal::from_str(x).expect("decimal");

    for db in [TestDatabase::sqlite()].into_iter().chain(TestDatabase::postgres()) {
        let t = tracker(&db).await;
        ingest(&t, &events, 5).await;
        let (from, to) = (T0 + 10 * DAY_MS, T0 + 20 * DAY_MS);
        let w = t.waterfall("c1", "default", from, to, 0).await.expect("waterfall");
        let label = &db.label;
        assert_eq!(
            bar(&w.start),
            (
                7,
                d("7550"),
                s(&[
                    "won \"Won SA\" 3000: appointmentscheduled 3000 d30 -> closedwon 3500 d16",
                    "pulled \"Pulled plc\" 2000: appointmentscheduled 2000 d40 -> appointmentscheduled 2000 d25",
                    "pushed \"Pushed Ltd\" 1000: appointmentscheduled 1000 d30 -> appointmentscheduled 1000 d45",
                    "lost \"Lost Inc\" 700: appointmentscheduled 700 d30 -> closedlost 700 d17",
                    "grown \"Grown GmbH\" 500: appointmentscheduled 500 d30 -> appointmentscheduled 800 d30",
                    "deleted \"Deleted BV\" 250: appointmentscheduled 250 d30 -> -",
                    "both \"Both Oy\" 100: appointmentscheduled 100 d30 -> appointmentscheduled 150 d35",
                ]),
                false
            ),
            "{label}: start"
        );
        assert_eq!(
            bar(&w.created),
            (
                2,
                d("1000"),
                s(&[
                    "newwon \"\" 600: - -> closedwon 600 d18",
                    "new \"New Co\" 400: - -> appointmentscheduled 400 d30",
                ]),
                false
            ),
            "{label}: created"
        );
        assert_eq!(
            bar(&w.reopened),
            (
                1,
                d("900"),
                s(&["reopened \"Reopened AB\" 900: closedlost 900 d6 -> appointmentscheduled 900 d30"]),
                false
            ),
            "{label}: reopened"
        );
        assert_eq!(
            bar(&w.won),
            (
                2,
                d("3600"),
                s(&[
                    "won \"Won SA\" 3000: appointmentscheduled 3000 d30 -> closedwon 3500 d16",
                    "newwon \"\" 600: - -> closedwon 600 d18",
                ]),
                false
            ),
            "{label}: won"
        );
        assert_eq!(
            bar(&w.lost),
            (1, d("700"), s(&["lost \"Lost Inc\" 700: appointmentscheduled 700 d30 -> closedlost 700 d17"]), false),
            "{label}: lost"
        );
        assert_eq!(
            bar(&w.removed),
            (1, d("250"), s(&["deleted \"Deleted BV\" 250: appointmentscheduled 250 d30 -> -"]), false),
            "{label}: removed"
        );
        assert_eq!(
            bar(&w.pulled_in),
            (
                1,
                d("2000"),
                s(&["pulled \"Pulled plc\" 2000: appointmentscheduled 2000 d40 -> appointmentscheduled 2000 d25"]),
                false
            ),
            "{label}: pulled in"
        );
        assert_eq!(
            bar(&w.pushed_out),
            (
                2,
                d("1150"),
                s(&[
                    "pushed \"Pushed Ltd\" 1000: appointmentscheduled 1000 d30 -> appointmentscheduled 1000 d45",
                    "both \"Both Oy\" 150: appointmentscheduled 100 d30 -> appointmentscheduled 150 d35",
                ]),
                false
            ),
            "{label}: pushed out"
        );
        assert_eq!(
            bar(&w.amount_changes),
            (
                2,
                d("350"),
                s(&[
                    "grown \"Grown GmbH\" 300: appointmentscheduled 500 d30 -> appointmentscheduled 800 d30",
                    "both \"Both Oy\" 50: appointmentscheduled 100 d30 -> appointmentscheduled 150 d35",
                ]),
                false
            ),
            "{label}: amount changes"
        );
        assert_eq!(amount(w.amount_changed_money), d("350"), "{label}");
        assert_eq!(
            bar(&w.end),
            (
                6,
                d("5250"),
                s(&[
                    "pulled \"Pulled plc\" 2000: appointmentscheduled 2000 d40 -> appointmentscheduled 2000 d25",
                    "pushed \"Pushed Ltd\" 1000: appointmentscheduled 1000 d30 -> appointmentscheduled 1000 d45",
                    "reopened \"Reopened AB\" 900: closedlost 900 d6 -> appointmentscheduled 900 d30",
                    "grown \"Grown GmbH\" 800: appointmentscheduled 500 d30 -> appointmentscheduled 800 d30",
                    "new \"New Co\" 400: - -> appointmentscheduled 400 d30",
                    "both \"Both Oy\" 150: appointmentscheduled 100 d30 -> appointmentscheduled 150 d35",
                ]),
                false
            ),
            "{label}: end"
        );
        // start + created + reopened - won - lost - removed + amount changes = end.
        assert_eq!(d("7550") + d("1000") + d("900") - d("3600") - d("700") - d("250") + d("350"), d("5250"));

        // Bounded: two deals a bar at most, the largest first, the counts and amounts whole.
        let w = t.waterfall("c1", "default", from, to, 2).await.expect("bounded");
        let (count, total, deals, truncated) = bar(&w.start);
        assert_eq!((count, total, deals.len(), truncated), (7, d("7550"), 2, true), "{label}");
        assert!(deals[0].starts_with("won ") && deals[1].starts_with("pulled "), "{label}: {deals:?}");
        assert!(!bar(&w.won).3, "{label}: a bar within the limit is whole");
        let err = t.waterfall("c1", "default", from, to, 201).await.expect_err("too many").to_public();
        assert_eq!(err.field.as_deref(), Some("deal_limit"), "{label}: {err}");
    }
}

/// Text that array literals and multi-row statements could mangle: separators, braces,
/// quotes, backslashes, the word NULL, empty strings and non-ASCII.
#[tokio::test]
async fn any_text_in_a_batch_is_stored_as_itself() {
    use gomark_pipeline_tracker::funnel::Version;
    use gomark_pipeline_tracker::store::Incoming;
    let awkward = ["c,{1}", "d\"1\\", "NULL", "", " spaced ", "{\"a\",b}", "naïve ✓", "\\\\\"\""];
    for tdb in TestDatabase::all() {
        let t = tracker(&tdb).await;
        let company = "co \"x\", {y} \\z";
        let batch: Vec<Incoming> = awkward
            .iter()
            .enumerate()
            .map(|(n, text)| Incoming {
                company_id: company.into(),
                deal_id: format!("{text}#{n}"),
                version: Version {
                    modified_ms: T0 + n as i64,
                    pipeline_id: format!("p{text}"),
                    stage_id: (*text).into(),
                    amount: Some(Decimal::from_str("1234.5678").expect("decimal") * Decimal::from(n)),
                    currency: (n % 2 == 0).then(|| Currency::from_str("EUR").expect("currency")),
                    close_date_ms: -(n as i64),
                    created_ms: T0,
                    deleted: n == 3,
                },
                name: (*text).into(),
                owner_id: format!("o{text}"),
            })
            .collect();
        let touched = t.store().ingest_counted(&batch).await.expect("ingest");
        assert_eq!(touched, [(company.to_owned(), 1)], "{}", tdb.label);
        let stored = t.store().history(company).await.expect("history");
        let mut want: Vec<(String, Vec<Version>)> =
            batch.iter().map(|i| (i.deal_id.clone(), vec![i.version.clone()])).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let mut got: Vec<(String, Vec<Version>)> = stored.into_iter().map(|h| (h.deal_id, h.versions)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "{}", tdb.label);
        let ids: Vec<&str> = batch.iter().map(|i| i.deal_id.as_str()).collect();
        let names = t.store().deal_names(company, &ids).await.expect("names");
        for i in batch.iter().filter(|i| !i.name.is_empty()) {
            assert_eq!(names.get(&i.deal_id), Some(&i.name), "{}: name of {:?}", tdb.label, i.deal_id);
        }
        // The same batch again changes nothing but the counter.
        let again = t.store().ingest_counted(&batch).await.expect("ingest");
        assert_eq!(again, [(company.to_owned(), 2)], "{}", tdb.label);
        assert_eq!(t.store().history(company).await.expect("history").len(), batch.len(), "{}", tdb.label);
    }
}

/// What a watcher of `company` on `t` shows once woken for the store's counter (waiting up
/// to `within`), as the gRPC watch does: the figures handed over, or else the company's
/// figures read anew. Also whether they were handed over. Fails when it is never woken.
async fn watched(
    t: &Tracker,
    watcher: &mut tokio::sync::watch::Receiver<gomark_pipeline_tracker::live::CompanyChange>,
    company: &str,
    within: Duration,
    what: &str,
) -> (pb::CompanyFunnels, bool) {
    let want = t.store().company_version(company).await.expect("version");
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if tokio::time::timeout_at(deadline, watcher.changed()).await.is_err() {
            panic!("{what}: not woken for counter {want} within {within:?}");
        }
        let change = watcher.borrow_and_update().clone();
        match change.fresh {
            Some(fresh) if fresh.version == want => return (without_instant((*fresh.funnels).clone()), true),
            // Figures of an earlier counter: the next wake brings newer ones.
            Some(_) => {}
            None => return (funnels_now(t, company).await, false),
        }
    }
}

#[tokio::test]
async fn watchers_on_every_replica_get_each_change_whichever_replica_ingests_it() {
    for tdb in TestDatabase::all() {
        // Two replicas on one database, cache and bus, each listening to the other.
        tracker(&tdb).await;
        let store = Store::new(Database::connect(&tdb.settings).await.expect("connect"));
        let bus: Arc<dyn gomark_events::EventBus> = Arc::new(gomark_events::memory::MemoryBus::new());
        let cache = Arc::new(gomark_cache::MemoryCache::new(&gomark_testkit::unique("pt")));
        let shutdown = gomark_platform::Shutdown::new();
        let replica = || listening_replica(&store, cache.clone(), &bus, &shutdown);
        let (a, b) = (replica(), replica());
        // Both listen before anything is announced.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut rng = Rng(0x2e91_1ca5_0000_0017);
        let events = history("c1", 60, &mut rng);
        let (head, tail) = events.split_at(events.len() / 2);
        ingest(&a, head, 50).await;
        // Both hold sums and are watched.
        funnels_now(&a, "c1").await;
        funnels_now(&b, "c1").await;
        let (mut wa, mut wb) = (a.changes.subscribe_company("c1"), b.changes.subscribe_company("c1"));
        for (i, chunk) in tail.chunks(4).enumerate() {
            let on_a = rng.below(2) == 0;
            ingest(if on_a { &a } else { &b }, chunk, 4).await;
            let want = funnels_now(&recomputing(&store), "c1").await;
            // Well within the watchers' poll: woken by the announcement, from kept sums.
            let within = Duration::from_millis(500);
            let label = |r: &str| {
                format!("{}: change {i} (ingested on {}), watcher on {r}", tdb.label, if on_a { "a" } else { "b" })
            };
            for (r, t, w) in [("a", &a, &mut wa), ("b", &b, &mut wb)] {
                let (got, handed) = watched(t, w, "c1", within, &label(r)).await;
                assert_eq!(got, want, "{}", label(r));
                // Once a replica holds sums (the first change read them anew on b, where the
                // cache had a's figures) they take every change, whoever ingests it.
                assert!(handed || (i == 0 && r == "b"), "{}: figures handed over", label(r));
            }
        }
        shutdown.trigger();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stored_at_once_on_two_replicas_leave_both_kept_sums_equal_to_a_full_recompute() {
    for tdb in TestDatabase::all() {
        tracker(&tdb).await;
        let store = Store::new(Database::connect(&tdb.settings).await.expect("connect"));
        let bus: Arc<dyn gomark_events::EventBus> = Arc::new(gomark_events::memory::MemoryBus::new());
        let shutdown = gomark_platform::Shutdown::new();
        // Each with its own cache, so each builds its own sums.
        let replica = || {
            let cache = Arc::new(gomark_cache::MemoryCache::new(&gomark_testkit::unique("pt")));
            listening_replica(&store, cache, &bus, &shutdown)
        };
        let (a, b) = (replica(), replica());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut rng = Rng(0x7a3e_0c0c_0000_0017);
        let events = history("c1", 80, &mut rng);
        let (head, tail) = events.split_at(events.len() / 3);
        ingest(&a, head, 50).await;
        funnels_now(&a, "c1").await;
        funnels_now(&b, "c1").await;
        let (mut wa, mut wb) = (a.changes.subscribe_company("c1"), b.changes.subscribe_company("c1"));
        // Small batches on both replicas at once: their counters interleave, and each
        // replica hears of the other's batches in any order relative to its own.
        let chunks: Vec<&[EventEnvelope]> = tail.chunks(2).collect();
        let (on_a, on_b): (Vec<_>, Vec<_>) = chunks.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let run = |t: Arc<Tracker>, mine: Vec<(usize, &&[EventEnvelope])>| {
            let mine: Vec<Vec<EventEnvelope>> = mine.into_iter().map(|(_, c)| c.to_vec()).collect();
            tokio::spawn(async move {
                for chunk in mine {
                    ingest(&t, &chunk, 2).await;
                }
            })
        };
        let (ra, rb) = (run(a.clone(), on_a), run(b.clone(), on_b));
        ra.await.expect("a ingests");
        rb.await.expect("b ingests");
        let want = funnels_now(&recomputing(&store), "c1").await;
        let version = store.company_version("c1").await.expect("version");
        for (r, w) in [("a", &mut wa), ("b", &mut wb)] {
            // The last hand-over reaches the final counter from the kept sums.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            let got = loop {
                let change = w.borrow_and_update().clone();
                if let Some(f) = change.fresh.filter(|f| f.version == version) {
                    break without_instant((*f.funnels).clone());
                }
                if tokio::time::timeout_at(deadline, w.changed()).await.is_err() {
                    panic!("{}: replica {r} handed over no figures at counter {version}", tdb.label);
                }
            };
            assert_eq!(got, want, "{}: replica {r}'s kept sums equal a full recompute", tdb.label);
        }
        shutdown.trigger();
    }
}
