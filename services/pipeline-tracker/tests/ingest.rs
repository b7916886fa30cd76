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
use gomark_pipeline_tracker::tracker::Tracker;
use gomark_proto::events::v1 as ev;
use gomark_storage::Database;
use gomark_testkit::TestDatabase;
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

fn upserted(company: &str, deal: u32, day: i64, stage: &str, amount: f64, created_day: i64) -> EventEnvelope {
    let payload = ev::DealUpserted {
        company_id: company.into(),
        portal_id: "1".into(),
        deal_id: deal.to_string(),
        name: format!("Deal {deal}"),
        pipeline_id: "default".into(),
        stage_id: stage.into(),
        amount: Some(amount),
        owner_id: String::new(),
        ..Default::default()
    }
    .with_times(T0 + (day + 30) * DAY_MS, T0 + day * DAY_MS, T0 + created_day * DAY_MS);
    new_event(company, event_types::DEAL_UPSERTED, &payload)
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
        handler.handle_batch(chunk).await.expect("batch stored");
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
        let w1 = ordered.waterfall("c1", "default", T0 + 10 * DAY_MS, T0 + 40 * DAY_MS).await.expect("waterfall");
        let w2 = shuffled.waterfall("c1", "default", T0 + 10 * DAY_MS, T0 + 40 * DAY_MS).await.expect("waterfall");
        assert_eq!(w1, w2, "{}", a.label);
    }
}

/// `event` as a writer from before the Timestamp fields published it: epoch ms only.
fn as_older_writer(event: &EventEnvelope) -> EventEnvelope {
    use prost::Message;
    let payload = if event.r#type == event_types::DEAL_UPSERTED {
        let mut d = ev::DealUpserted::decode(event.payload.as_slice()).expect("decodes");
        (d.close_date, d.last_modified_at, d.created_at) = (None, None, None);
        d.encode_to_vec()
    } else {
        let mut d = ev::DealDeleted::decode(event.payload.as_slice()).expect("decodes");
        d.deleted_at = None;
        d.encode_to_vec()
    };
    EventEnvelope { payload, ..event.clone() }
}

#[tokio::test]
async fn events_from_an_older_writer_give_the_same_history() {
    // A rolling upgrade: the bus still holds events without the Timestamp fields.
    let mut rng = Rng(0x01d0_2026);
    let new = history("c1", 40, &mut rng);
    let old: Vec<EventEnvelope> = new.iter().map(as_older_writer).collect();
    assert_ne!(new[0].payload, old[0].payload, "the fixture really drops the Timestamps");
    let (a, b) = (TestDatabase::sqlite(), TestDatabase::sqlite());
    let (from_new, from_old) = (tracker(&a).await, tracker(&b).await);
    ingest(&from_new, &new, 10).await;
    ingest(&from_old, &old, 10).await;
    let history = from_new.store().history("c1").await.expect("history");
    assert!(history.iter().any(|d| d.versions.iter().any(|v| v.close_date_ms > 0 && v.created_ms > 0)));
    assert_eq!(history, from_old.store().history("c1").await.expect("history"));
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
        let steps: Vec<(Option<&str>, &str, f64)> =
            log.iter().map(|x| (x.from_stage.as_deref(), x.to_stage.as_str(), x.amount)).collect();
        assert_eq!(steps, [(None, "appointmentscheduled", 100.0), (Some("appointmentscheduled"), "closedwon", 100.0)]);
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
        let p = t.portfolio(&[], 0, "").await.expect("portfolio");
        assert_eq!(p.company_count, 3);
        let totals = p.totals.clone().expect("totals");
        let sum = |f: fn(&gomark_proto::pipeline_tracker::v1::CompanySummary) -> f64| -> f64 {
            p.companies.iter().map(f).sum()
        };
        assert_eq!(totals.open_count, p.companies.iter().map(|c| c.open_count).sum::<u64>(), "{}", tdb.label);
        assert!((totals.open_amount - sum(|c| c.open_amount)).abs() < 1e-6);
        assert!((totals.weighted_forecast - sum(|c| c.weighted_forecast)).abs() < 1e-6);
        assert!((totals.won_amount - sum(|c| c.won_amount)).abs() < 1e-6);
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
        let first = t.portfolio(&[], 2, "").await.expect("page 1");
        assert_eq!(first.companies.len(), 2);
        let second = t.portfolio(&[], 2, &first.next_page_token).await.expect("page 2");
        assert_eq!(second.companies.iter().map(|c| c.company_id.as_str()).collect::<Vec<_>>(), ["c3"]);
        assert!(second.next_page_token.is_empty());
        assert_eq!(second.totals, p.totals);
        // A chosen subset.
        let subset = t.portfolio(&["c2".into(), "c1".into()], 0, "").await.expect("subset");
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
    let err = t.waterfall("c1", "default", 10, 5).await.expect_err("backwards").to_public();
    assert_eq!(err.field.as_deref(), Some("to"), "{err}");
    let err = t.periods("c1", "default", "fortnight", 0, 10).await.expect_err("bad period").to_public();
    assert!(err.to_string().contains("period"), "{err}");
    let err = t.periods("c1", "default", "day", 0, 1_000 * DAY_MS).await.expect_err("too many").to_public();
    assert!(err.to_string().contains("400"), "{err}");
    let err = t.funnel("c1", "nope", 0).await.expect_err("unknown pipeline").to_public();
    assert!(err.to_string().contains("nope"), "{err}");
}
