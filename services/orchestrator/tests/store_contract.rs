//! The orchestrator's store behaves the same on SQLite and Postgres.

use gomark_orchestrator::store::{AuditFilter, AuditRecord, CompanyRow, PlanRow};
use gomark_orchestrator::{MIGRATIONS, Store};
use gomark_platform::ErrorKind;
use gomark_storage::Database;

fn company(id: &str, name: &str) -> CompanyRow {
    CompanyRow { id: id.into(), name: name.into(), hubspot_portal_id: "1".into(), created_at: 1 }
}

fn plan(id: &str) -> PlanRow {
    PlanRow {
        id: id.into(),
        revision: 0,
        base_revision: 3,
        document: Some("{}".into()),
        message: "m".into(),
        rolled_back_to: Some(1),
        created_by: "tester".into(),
        created_at: 5,
        body: vec![1, 2, 0, 255],
        rollout_id: None,
    }
}

fn kind(err: gomark_orchestrator::Error) -> ErrorKind {
    err.to_public().kind
}

#[tokio::test]
async fn store_contract() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let db = Database::connect(&tdb.settings).await.expect("connect");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        db.migrate(&MIGRATIONS).await.expect("migrating twice is a no-op");
        let store = Store::new(db.clone());
        let mut conn = db.pool().acquire().await.expect("conn");

        for (id, name) in [("c1", "One"), ("c2", "Two"), ("c3", "Three")] {
            store.insert_company(&mut conn, &company(id, name)).await.expect("insert");
        }
        let dup = store.insert_company(&mut conn, &company("c9", "One")).await.expect_err("duplicate name");
        assert_eq!(kind(dup), ErrorKind::AlreadyExists, "{label}");
        let first = store.list_companies(None, 2).await.expect("page 1");
        assert_eq!(first.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c1", "c2"], "{label}");
        let second = store.list_companies(Some("c2"), 2).await.expect("page 2");
        assert_eq!(second.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c3"], "{label}");
        assert_eq!(store.get_company("c2").await.expect("get"), Some(company("c2", "Two")), "{label}");
        assert_eq!(store.get_company("nope").await.expect("get"), None, "{label}");

        store.insert_plan(&plan("p1")).await.expect("plan");
        assert_eq!(store.get_plan("p1").await.expect("get"), Some(plan("p1")), "{label}: bytes and nulls survive");
        assert!(store.mark_plan_applied(&mut conn, "p1", "r1").await.expect("apply"), "{label}");
        assert!(!store.mark_plan_applied(&mut conn, "p1", "r2").await.expect("again"), "{label}: a plan applies once");
        let applied = store.get_plan("p1").await.expect("get").expect("exists");
        assert_eq!(applied.rollout_id.as_deref(), Some("r1"), "{label}");
        assert_eq!(store.get_plan("nope").await.expect("get"), None, "{label}");

        store.set_applied_revision(&mut conn, "c1", 2).await.expect("applied");
        store.set_applied_revision(&mut conn, "c1", 3).await.expect("applied again");
        store.set_applied_revision(&mut conn, "c2", 1).await.expect("applied");
        let revisions: Vec<(String, i64)> =
            store.applied_revisions().await.expect("list").into_iter().map(|(c, r, _)| (c, r)).collect();
        assert_eq!(revisions, [("c1".to_owned(), 3), ("c2".to_owned(), 1)], "{label}");
        assert_eq!(store.applied_revision("c3").await.expect("none"), None, "{label}");

        for action in ["a", "b", "c"] {
            let record = AuditRecord {
                company_id: "c1".into(),
                actor: "tester".into(),
                action: action.into(),
                resource: "r".into(),
                before: None,
                after: Some(serde_json::json!({"k": action})),
            };
            store.append_audit(&mut conn, &record).await.expect("audit");
        }
        let newest = store.list_audit("c1", &AuditFilter::default(), None, 2).await.expect("audit page");
        assert_eq!(newest.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["c", "b"], "{label}");
        let older = store.list_audit("c1", &AuditFilter::default(), Some(newest[1].id), 2).await.expect("audit page 2");
        assert_eq!(older.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["a"], "{label}");
        assert_eq!(
            (&older[0].before, &older[0].after),
            (&None, &Some(serde_json::json!({"k": "a"}))),
            "{label}: before and after come back as written"
        );
        assert!(
            store.list_audit("c2", &AuditFilter::default(), None, 10).await.expect("other company").is_empty(),
            "{label}: scoped by company"
        );
        let other = AuditRecord {
            company_id: "c1".into(),
            actor: "someone-else".into(),
            action: "d".into(),
            resource: "rollout/1".into(),
            before: None,
            after: None,
        };
        store.append_audit(&mut conn, &other).await.expect("audit");
        let by = |filter: AuditFilter| {
            let store = store.clone();
            async move { store.list_audit("c1", &filter, None, 50).await.expect("filtered").len() }
        };
        assert_eq!(
            by(AuditFilter { actor: "someone-else".into(), ..Default::default() }).await,
            1,
            "{label}: by actor"
        );
        assert_eq!(
            by(AuditFilter { resource_prefix: "rollout/".into(), ..Default::default() }).await,
            1,
            "{label}: by resource"
        );
        assert_eq!(
            by(AuditFilter { resource_prefix: "r".into(), ..Default::default() }).await,
            4,
            "{label}: a prefix, not a match"
        );
        assert_eq!(by(AuditFilter { action: "b".into(), ..Default::default() }).await, 1, "{label}: by action");
        assert_eq!(
            by(AuditFilter { action: "d".into(), actor: "tester".into(), ..Default::default() }).await,
            0,
            "{label}: filters combine"
        );
        assert_eq!(
            by(AuditFilter { action: "rollout".into(), ..Default::default() }).await,
            0,
            "{label}: exact action"
        );
        let future = gomark_storage::now_ms() + 60_000;
        assert_eq!(by(AuditFilter { from_ms: future, ..Default::default() }).await, 0, "{label}: from");
        assert_eq!(by(AuditFilter { to_ms: future, ..Default::default() }).await, 4, "{label}: to");
        assert_eq!(by(AuditFilter { to_ms: 1, ..Default::default() }).await, 0, "{label}: to, in the past");
        drop(conn);
        db.close().await;
    }
}

/// Two replicas claiming due drift checks at once never get the same company, and every
/// due company is claimed; a trigger pulls a check in, but not inside the cooldown.
#[tokio::test]
async fn drift_checks_are_claimed_once_across_replicas() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let db = Database::connect(&tdb.settings).await.expect("connect");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        let store = Store::new(db.clone());
        let mut conn = db.pool().acquire().await.expect("conn");
        for i in 0..40 {
            store.set_applied_revision(&mut conn, &format!("c{i:02}"), 1).await.expect("applied");
        }
        let now = 1_000_000;
        assert_eq!(store.schedule_new_drift_checks(now, 10_000).await.expect("schedule"), 40, "{label}");
        assert_eq!(store.schedule_new_drift_checks(now, 10_000).await.expect("again"), 0, "{label}: once");
        let later = now + 10_000;
        let (a, b) =
            tokio::join!(store.claim_drift_checks(later, 10_000, 100), store.claim_drift_checks(later, 10_000, 100));
        let (a, b) = (a.expect("a"), b.expect("b"));
        let all: std::collections::BTreeSet<&String> = a.iter().chain(&b).collect();
        assert_eq!(a.len() + b.len(), 40, "{label}: no company claimed twice");
        assert_eq!(all.len(), 40, "{label}: every due company claimed");
        assert!(store.claim_drift_checks(later, 10_000, 100).await.expect("none").is_empty(), "{label}");
        // Activity right after a check waits for the cooldown; later activity pulls it in.
        // (the cooldown ends after the next scheduled check: nothing moves)
        assert!(!store.request_drift_checks(&["c00"], later + 2_000, 60_000).await.expect("trigger"), "{label}");
        assert!(store.claim_drift_checks(later + 5_000, 10_000, 100).await.expect("cooldown").is_empty(), "{label}");
        assert_eq!(store.next_drift_check_at().await.expect("next"), Some(later + 10_000), "{label}");
        let (c, d) = (later + 70_000, later + 75_000);
        let due = store.claim_drift_checks(c, 100_000, 100).await.expect("due");
        assert_eq!(due.len(), 40, "{label}: the interval passed for all");
        let companies = ["c05", "c06", "unknown"];
        assert!(store.request_drift_checks(&companies, d, 60_000).await.expect("triggers in cooldown"), "{label}");
        assert!(!store.request_drift_checks(&companies, d + 1, 60_000).await.expect("again"), "{label}: no move");
        assert_eq!(
            store.next_drift_check_at().await.expect("next"),
            Some(c + 60_000),
            "{label}: due when the cooldown ends"
        );
        let mut pulled = store.claim_drift_checks(c + 60_000, 100_000, 100).await.expect("pulled in");
        pulled.sort();
        assert_eq!(pulled, ["c05", "c06"], "{label}: each company asked for, none other");
        drop(conn);
        db.close().await;
    }
}
