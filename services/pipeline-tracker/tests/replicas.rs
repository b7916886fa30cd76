//! Two pipeline-tracker services on one Postgres schema, NATS stream and Redis prefix (the
//! distributed mode, `GOMARK_TEST_*`): they share the deal consumers, so each ingests some
//! of the batches, and a `WatchFunnel` stream on either shows every change within moments,
//! not at its poll (set to a minute here, so only the replicas' announcements can do it).

use gomark_events::EventBus;
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_platform::Caller;
use gomark_platform::Shutdown;
use gomark_platform::settings::ServerSettings;
use gomark_proto::events::v1 as ev;
use gomark_proto::pipeline_tracker::v1 as pb;
use gomark_proto::pipeline_tracker::v1::pipeline_tracker_service_client::PipelineTrackerServiceClient;
use gomark_service::{Backends, CommonSettings, RunningService};
use std::net::SocketAddr;
use std::time::Duration;

/// Within this, both watchers show a change; their poll is a minute.
const SHOWN_WITHIN: Duration = Duration::from_secs(3);

async fn replica(common: &CommonSettings, shutdown: &Shutdown) -> RunningService {
    // Nothing listens on port 1: the catalog keeps the stored stages, as when hubspot-sync is down.
    let settings = gomark_pipeline_tracker::Settings {
        common: common.clone(),
        tracker: gomark_pipeline_tracker::TrackerSettings {
            hubspot_sync_url: "http://127.0.0.1:1".into(),
            orchestrator_url: "http://127.0.0.1:1".into(),
            watch_poll_ms: 60_000,
            ..Default::default()
        },
    };
    let backends = Backends::connect(&settings.common).await.expect("backends");
    gomark_pipeline_tracker::start(settings, backends, shutdown.clone()).await.expect("pipeline-tracker starts")
}

async fn watch(addr: SocketAddr) -> tonic::Streaming<pb::Funnel> {
    let channel =
        gomark_platform::grpc_client::channel(&format!("http://{addr}"), Duration::from_secs(10)).expect("channel");
    let request = pb::GetFunnelRequest { company_id: "c1".into(), ..Default::default() };
    let mut client = PipelineTrackerServiceClient::new(channel);
    client.watch_funnel(Caller::system("test").request(request)).await.expect("watch").into_inner()
}

/// Waits until `stream` shows `open` open deals.
async fn shows(stream: &mut tonic::Streaming<pb::Funnel>, open: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + SHOWN_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(funnel))) if funnel.open_count == open => return,
            Ok(Ok(Some(_))) => {}
            Ok(other) => panic!("{what}: stream ended: {other:?}"),
            Err(_) => panic!("{what}: {open} open deals not shown within {SHOWN_WITHIN:?}"),
        }
    }
}

#[tokio::test]
async fn a_watcher_on_either_replica_sees_every_change_whichever_replica_ingests_it() {
    let (true, Some(nats_url), Some(redis_url)) =
        (gomark_testkit::distributed_configured(), gomark_testkit::nats_url(), gomark_testkit::redis_url())
    else {
        gomark_testkit::note_skipped(
            "two pipeline-tracker replicas",
            "GOMARK_TEST_POSTGRES_URL, _NATS_URL, _REDIS_URL",
        );
        return;
    };
    let db = gomark_testkit::TestDatabase::postgres().expect("postgres configured");
    let token = gomark_testkit::unique("ptr");
    let bus = gomark_events::BusSettings {
        kind: gomark_events::bus::BusKind::Nats,
        nats_url,
        stream: token.to_uppercase(),
        subject_prefix: token.clone(),
    };
    let common = CommonSettings {
        server: ServerSettings {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        },
        database: db.settings.clone(),
        bus: bus.clone(),
        cache: gomark_cache::CacheSettings {
            kind: gomark_cache::CacheKind::Redis,
            redis_url,
            key_prefix: token.clone(),
            ..Default::default()
        },
        ..CommonSettings::default()
    };
    let shutdown = Shutdown::new();
    let (a, b) = (replica(&common, &shutdown).await, replica(&common, &shutdown).await);
    let (mut on_a, mut on_b) = (watch(a.grpc_addr).await, watch(b.grpc_addr).await);
    shows(&mut on_a, 0, "replica a at the start").await;
    shows(&mut on_b, 0, "replica b at the start").await;
    let publisher = gomark_events::nats::NatsBus::connect(&bus).await.expect("nats");
    // One new deal at a time: each lands on whichever replica pulls it first, and both
    // watchers must show it.
    for deal in 1..=20u64 {
        let payload = ev::DealUpserted {
            company_id: "c1".into(),
            portal_id: "1".into(),
            deal_id: deal.to_string(),
            name: format!("Deal {deal}"),
            pipeline_id: "default".into(),
            stage_id: "appointmentscheduled".into(),
            ..Default::default()
        }
        .with_times(0, 1_790_000_000_000 + i64::try_from(deal).expect("small"), 1_790_000_000_000);
        publisher.publish(&new_event("c1", event_types::DEAL_UPSERTED, &payload)).await.expect("publish");
        shows(&mut on_a, deal, &format!("replica a, deal {deal}")).await;
        shows(&mut on_b, deal, &format!("replica b, deal {deal}")).await;
    }
    shutdown.trigger();
    a.wait().await.expect("a stops cleanly");
    b.wait().await.expect("b stops cleanly");
    publisher.delete_stream().await.expect("delete test stream");
}
