//! Two edits of one company whose rollouts start out of revision order (two requests at
//! once, on one replica or two): the older revision never runs after the newer one.

use gomark_events::relay::RelayWaker;
use gomark_orchestrator::revisions::Revisions;
use gomark_orchestrator::rollout::{Rollouts, StartRequest};
use gomark_orchestrator::{Actor, MIGRATIONS, Store};
use gomark_storage::Database;
use gtm_config::Document;
use std::sync::Arc;
use std::time::Duration;

fn document(companies: &[&str], label: &str) -> Document {
    let mut yaml = format!(
        "baseline:\n  dealProperties:\n    - {{name: gomark_seats, label: {label}, type: number, fieldType: number, \
         groupName: dealinformation}}\ncompanies:\n"
    );
    for (i, id) in companies.iter().enumerate() {
        yaml.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n"));
    }
    Document::from_yaml(&yaml).expect("document")
}

fn edit(revision: i64, companies: &[&str]) -> StartRequest {
    StartRequest {
        revision,
        company_ids: companies.iter().map(|c| (*c).to_owned()).collect(),
        queue_if_busy: true,
        ..StartRequest::default()
    }
}

#[tokio::test]
async fn an_edit_whose_rollout_starts_after_a_newer_one_is_superseded_on_arrival() {
    for tdb in gomark_testkit::TestDatabase::all() {
        let label = tdb.label;
        let db = Database::connect(&tdb.settings).await.expect("connect");
        db.migrate(&MIGRATIONS).await.expect("migrate");
        let store = Store::new(db.clone());
        let revisions = Arc::new(Revisions::new(store.clone(), RelayWaker::default()));
        // Nothing runs the steps here (no runner): what is checked is how each start lands.
        let nowhere =
            gomark_platform::grpc_client::channel("http://127.0.0.1:9", Duration::from_secs(1)).expect("channel");
        let rollouts = Rollouts::new(store, revisions.clone(), nowhere, None, Duration::from_secs(1));
        let actor = Actor("test".into());
        let create = |doc: Document, base: Option<i64>| {
            let (revisions, actor) = (revisions.clone(), actor.clone());
            async move { revisions.create(&actor, &doc, "edit", base, None).await.expect("revision").number }
        };
        let older = create(document(&["a", "b"], "Seats"), None).await;
        let newer = create(document(&["a", "b"], "Licensed seats"), Some(older)).await;

        // The newer edit's rollout starts first; the older one's arrives after it.
        let first = rollouts.start(&actor, edit(newer, &["a"])).await.expect("newer");
        assert_eq!(first.state, "running", "{label}");
        let late = rollouts.start(&actor, edit(older, &["a"])).await.expect("older");
        assert_eq!(late.state, "superseded", "{label}: it would take company a back to revision {older}");
        assert!(late.reason.contains(&first.id), "{label}: names the rollout that applies it: {}", late.reason);
        assert!(late.finished_at.is_some(), "{label}");
        assert!(late.steps.iter().all(|s| s.state == "cancelled" && s.attempts == 0), "{label}: {:?}", late.steps);

        // Not moot: the older edit also covers company b, which the newer rollout does not.
        let wider = rollouts.start(&actor, edit(older, &["a", "b"])).await.expect("wider");
        assert_eq!(wider.state, "queued", "{label}");
        // An explicit start (not an edit's) is refused as before, naming the rollout in the way.
        let explicit = StartRequest { queue_if_busy: false, ..edit(older, &["a"]) };
        let refused = rollouts.start(&actor, explicit).await.expect_err("busy");
        assert!(refused.to_public().message.contains(&first.id), "{label}: {}", refused.to_public().message);
        // Before the schema is dropped: the refused start's rollback is flushed as its
        // connection goes back to the pool.
        db.close().await;
    }
}
