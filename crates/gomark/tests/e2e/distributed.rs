//! Distributed mode: each service on its own Postgres schema, NATS JetStream and Redis,
//! configured as in production. hubspot-sync runs as a separate process so it can be
//! killed for real.

use crate::scenarios;
use crate::support::{Api, SERVING, eventually, free_port, health};
use gomark_events::bus::{BusKind, BusSettings};
use gomark_platform::Shutdown;
use gomark_platform::settings::{Secret, ServerSettings};
use gomark_service::{Backends, CommonSettings, RunningService};
use gomark_testkit::TestDatabase;
use hubspot_sim::{HubSpotSim, SimConfig};
use reqwest::Method;
use serde_json::json;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

/// A distributed GoMark for one test; its schemas and stream are removed afterwards.
pub(crate) struct Cluster {
    pub(crate) sim: HubSpotSim,
    sim_url: String,
    upso_sim: upso_sim::UpsoSim,
    upso_sim_url: String,
    bus: BusSettings,
    redis_url: String,
    cache_prefix: String,
    databases: Vec<TestDatabase>,
    shutdown: Shutdown,
    services: Vec<RunningService>,
    pub(crate) gateway_url: String,
    pub(crate) admin_key: String,
    credential_keys: String,
    pub(crate) orchestrator_addr: SocketAddr,
    /// Set when the test runs the orchestrator as a process of its own.
    pub(crate) orchestrator_env: Vec<(String, String)>,
    hubspot_sync_addr: SocketAddr,
    pipeline_tracker_addr: SocketAddr,
    /// The first pipeline-tracker's settings, for more replicas on its schema.
    pipeline_tracker_settings: Option<gomark_pipeline_tracker::Settings>,
    /// The in-process orchestrator's settings, for more replicas on its schema.
    orchestrator_settings: Option<gomark_orchestrator::Settings>,
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// None when the distributed backends are not configured (the embedded suite still runs).
    /// A cluster; hubspot-sync and the orchestrator run in this process, or are left for
    /// the test to run as separate (killable) processes.
    async fn start(hubspot_sync_in_process: bool) -> Option<Self> {
        Self::start_with(hubspot_sync_in_process, true).await
    }

    pub(crate) async fn start_with(hubspot_sync_in_process: bool, orchestrator_in_process: bool) -> Option<Self> {
        let engine = gomark_upso_cadence::EngineSettings::default();
        Self::start_full(hubspot_sync_in_process, orchestrator_in_process, Default::default(), engine).await
    }

    /// Everything in process, deals synced every second (this cluster has no webhooks),
    /// and upsell runs batched over three seconds of deal events.
    async fn start_for_upsell() -> Option<Self> {
        let deals = gomark_hubspot_sync::DealSyncSettings { interval_secs: 1, index_lag_secs: 0, ..Default::default() };
        let engine = gomark_upso_cadence::EngineSettings { interval_secs: 0, debounce_ms: 3000 };
        Self::start_full(true, true, deals, engine).await
    }

    async fn start_full(
        hubspot_sync_in_process: bool,
        orchestrator_in_process: bool,
        deal_sync: gomark_hubspot_sync::DealSyncSettings,
        engine: gomark_upso_cadence::EngineSettings,
    ) -> Option<Self> {
        if !gomark_testkit::distributed_configured() {
            gomark_testkit::note_skipped("distributed end-to-end", "GOMARK_TEST_POSTGRES_URL/NATS_URL/REDIS_URL");
            return None;
        }
        let (sim, sim_addr) = hubspot_sim::spawn(SimConfig::default(), loopback(0)).await.expect("sim");
        let (upso_sim, upso_sim_addr) =
            upso_sim::spawn(upso_sim::SimConfig::default(), loopback(0)).await.expect("upso sim");
        let token = gomark_testkit::unique("e2e");
        let bus = BusSettings {
            kind: BusKind::Nats,
            nats_url: gomark_testkit::nats_url().expect("nats"),
            stream: token.to_uppercase(),
            subject_prefix: token.clone(),
        };
        let mut cluster = Cluster {
            sim,
            sim_url: format!("http://{sim_addr}"),
            upso_sim,
            upso_sim_url: format!("http://{upso_sim_addr}"),
            bus,
            redis_url: gomark_testkit::redis_url().expect("redis"),
            cache_prefix: token,
            databases: Vec::new(),
            shutdown: Shutdown::new(),
            services: Vec::new(),
            gateway_url: String::new(),
            admin_key: String::new(),
            credential_keys: gomark_hubspot_sync::credentials::Vault::generate_setting("test"),
            hubspot_sync_addr: loopback(free_port()),
            orchestrator_addr: loopback(free_port()),
            orchestrator_env: Vec::new(),
            pipeline_tracker_addr: loopback(0),
            pipeline_tracker_settings: None,
            orchestrator_settings: None,
        };
        if hubspot_sync_in_process {
            let settings = gomark_hubspot_sync::Settings {
                common: cluster.common(cluster.hubspot_sync_addr),
                hubspot: gomark_hubspot_sync::HubSpotSettings {
                    base_url: cluster.sim_url.clone(),
                    credential_keys: Secret::new(cluster.credential_keys.clone()),
                    ..Default::default()
                },
                deals: deal_sync,
                journal: gomark_hubspot_sync::JournalSettings { poll_ms: 500, ..Default::default() },
            };
            let backends = Backends::connect(&settings.common).await.expect("hubspot-sync backends");
            let service =
                gomark_hubspot_sync::start(settings, backends, cluster.shutdown.clone()).await.expect("hubspot-sync");
            cluster.services.push(service);
        }
        let settings = gomark_upso_cadence::Settings {
            common: cluster.common(loopback(0)),
            upso: gomark_upso_cadence::UpsoSettings {
                base_url: cluster.upso_sim_url.clone(),
                credential_keys: Secret::new(gomark_upso_cadence::credentials::Vault::generate_setting("test")),
                ..Default::default()
            },
            engine,
        };
        let backends = Backends::connect(&settings.common).await.expect("upso-cadence backends");
        let upso =
            gomark_upso_cadence::start(settings, backends, cluster.shutdown.clone()).await.expect("upso-cadence");
        let upso_cadence_url = format!("http://{}", upso.grpc_addr);
        if orchestrator_in_process {
            let settings = gomark_orchestrator::Settings {
                common: cluster.common(cluster.orchestrator_addr),
                orchestrator: gomark_orchestrator::OrchestratorSettings {
                    hubspot_sync_url: format!("http://{}", cluster.hubspot_sync_addr),
                    upso_cadence_url: upso_cadence_url.clone(),
                    ..Default::default()
                },
            };
            cluster.orchestrator_settings = Some(settings.clone());
            let backends =
                Backends::connect(&settings.common).await.expect("orchestrator backends (Postgres, NATS, Redis)");
            let orchestrator =
                gomark_orchestrator::start(settings, backends, cluster.shutdown.clone()).await.expect("orchestrator");
            cluster.services.push(orchestrator);
        } else {
            let hubspot_sync_url = format!("http://{}", cluster.hubspot_sync_addr);
            cluster.orchestrator_env = cluster.child_env(
                cluster.orchestrator_addr,
                vec![
                    ("GOMARK__ORCHESTRATOR__HUBSPOT_SYNC_URL", hubspot_sync_url),
                    ("GOMARK__ORCHESTRATOR__UPSO_CADENCE_URL", upso_cadence_url.clone()),
                ],
            );
        }
        let settings = gomark_pipeline_tracker::Settings {
            common: cluster.common(loopback(0)),
            tracker: gomark_pipeline_tracker::TrackerSettings {
                hubspot_sync_url: format!("http://{}", cluster.hubspot_sync_addr),
                orchestrator_url: format!("http://{}", cluster.orchestrator_addr),
                ..Default::default()
            },
        };
        cluster.pipeline_tracker_settings = Some(settings.clone());
        let backends = Backends::connect(&settings.common).await.expect("pipeline-tracker backends");
        let tracker = gomark_pipeline_tracker::start(settings, backends, cluster.shutdown.clone())
            .await
            .expect("pipeline-tracker");
        cluster.pipeline_tracker_addr = tracker.grpc_addr;
        let gateway_common = cluster.common(loopback(0));
        let gateway_backends = Backends::connect(&gateway_common).await.expect("gateway backends");
        // HubSpot's webhooks reach the gateway as in production, signed for its address.
        let http_listener = tokio::net::TcpListener::bind(loopback(0)).await.expect("bind");
        let webhook_url = format!("http://{}/webhooks/hubspot", http_listener.local_addr().expect("addr"));
        let webhook_secret = gomark_testkit::unique("whsec");
        let gateway = gomark_gateway::start_gateway_on(
            http_listener,
            gomark_gateway::Settings {
                server: server(loopback(0)),
                gateway: gomark_gateway::GatewaySettings {
                    http_addr: loopback(0),
                    orchestrator_url: format!("http://{}", cluster.orchestrator_addr),
                    hubspot_sync_url: format!("http://{}", cluster.hubspot_sync_addr),
                    upso_cadence_url: format!("http://{}", upso.grpc_addr),
                    pipeline_tracker_url: format!("http://{}", cluster.pipeline_tracker_addr),
                    ..Default::default()
                },
                // Tests poll; the per-key limit is not what they exercise.
                auth: gomark_gateway::AuthSettings {
                    rate_limit_per_minute: 1_000_000,
                    hubspot_webhook_secret: Some(Secret::new(webhook_secret.clone())),
                    hubspot_webhook_url: webhook_url.clone(),
                    ..Default::default()
                },
                ..Default::default()
            },
            gateway_backends.db,
            gateway_backends.cache,
            cluster.shutdown.clone(),
        )
        .await
        .expect("gateway");
        cluster.gateway_url = format!("http://{}", gateway.http_addr);
        cluster.admin_key =
            gateway.bootstrap_admin_key.clone().expect("a fresh gateway schema bootstraps an admin key");
        cluster.sim.configure_webhooks(hubspot_sim::WebhookConfig {
            target_url: webhook_url,
            client_secret: webhook_secret,
            ..Default::default()
        });
        cluster.services.extend([upso, tracker, gateway.service]);
        Some(cluster)
    }

    /// Starts one more pipeline-tracker replica, on the first one's schema; its gRPC address.
    async fn add_pipeline_tracker(&mut self) -> SocketAddr {
        let settings = self.pipeline_tracker_settings.clone().expect("the cluster has a pipeline-tracker");
        let backends = Backends::connect(&settings.common).await.expect("pipeline-tracker backends");
        let tracker =
            gomark_pipeline_tracker::start(settings, backends, self.shutdown.clone()).await.expect("pipeline-tracker");
        let addr = tracker.grpc_addr;
        self.services.push(tracker);
        addr
    }

    /// Starts one more orchestrator replica, on the first one's schema; its gRPC address.
    async fn add_orchestrator(&mut self) -> SocketAddr {
        let mut settings = self.orchestrator_settings.clone().expect("the cluster's orchestrator runs in process");
        settings.common.server = server(loopback(0));
        let backends = Backends::connect(&settings.common).await.expect("orchestrator backends");
        let orchestrator =
            gomark_orchestrator::start(settings, backends, self.shutdown.clone()).await.expect("orchestrator");
        let addr = orchestrator.grpc_addr;
        self.services.push(orchestrator);
        addr
    }

    /// Settings for one more service: its own fresh schema, the shared stream and Redis.
    fn common(&mut self, grpc: SocketAddr) -> CommonSettings {
        let database = TestDatabase::postgres().expect("postgres configured");
        let settings = CommonSettings {
            server: server(grpc),
            database: database.settings.clone(),
            bus: self.bus.clone(),
            cache: gomark_cache::CacheSettings {
                kind: gomark_cache::CacheKind::Redis,
                redis_url: self.redis_url.clone(),
                key_prefix: self.cache_prefix.clone(),
                ..Default::default()
            },
            ..CommonSettings::default()
        };
        self.databases.push(database);
        settings
    }

    /// The environment that configures a separate hubspot-sync process like this cluster.
    fn hubspot_sync_env(&mut self) -> Vec<(String, String)> {
        let extra = vec![
            ("GOMARK__HUBSPOT__BASE_URL", self.sim_url.clone()),
            ("GOMARK__HUBSPOT__CREDENTIAL_KEYS", self.credential_keys.clone()),
        ];
        self.child_env(self.hubspot_sync_addr, extra)
    }

    /// The environment that configures a separate service process like this cluster, on
    /// a fresh schema of its own.
    fn child_env(&mut self, addr: SocketAddr, extra: Vec<(&'static str, String)>) -> Vec<(String, String)> {
        let common = self.common(addr);
        let mut env = vec![
            ("GOMARK__SERVER__GRPC_ADDR", common.server.grpc_addr.to_string()),
            ("GOMARK__SERVER__ADMIN_ADDR", "127.0.0.1:0".to_owned()),
            ("GOMARK__DATABASE__URL", common.database.url.expose().to_owned()),
            ("GOMARK__DATABASE__SCHEMA", common.database.schema.clone()),
            ("GOMARK__BUS__KIND", "nats".to_owned()),
            ("GOMARK__BUS__NATS_URL", self.bus.nats_url.clone()),
            ("GOMARK__BUS__STREAM", self.bus.stream.clone()),
            ("GOMARK__BUS__SUBJECT_PREFIX", self.bus.subject_prefix.clone()),
            ("GOMARK__CACHE__KIND", "redis".to_owned()),
            ("GOMARK__CACHE__REDIS_URL", self.redis_url.clone()),
            ("GOMARK__CACHE__KEY_PREFIX", self.cache_prefix.clone()),
            ("GOMARK__TELEMETRY__LOG_LEVEL", "warn".to_owned()),
            // The key this test process (and its in-process services) signs with.
            (
                "GOMARK__SERVER__ASSERTION_KEYS",
                gomark_platform::assertion::process_keys().setting().expose().to_owned(),
            ),
        ];
        env.extend(extra);
        env.sort();
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    pub(crate) async fn stop(self) {
        self.shutdown.trigger();
        for service in self.services {
            tokio::time::timeout(Duration::from_secs(15), service.wait()).await.expect("drains").expect("clean stop");
        }
        let nats = gomark_events::nats::NatsBus::connect(&self.bus).await.expect("nats");
        nats.delete_stream().await.expect("delete stream");
        drop(self.databases);
    }
}

fn server(grpc: SocketAddr) -> ServerSettings {
    ServerSettings { grpc_addr: grpc, admin_addr: loopback(0), shutdown_grace_secs: 10, ..Default::default() }
}

#[tokio::test]
async fn distributed_deal_properties_end_to_end() {
    let Some(cluster) = Cluster::start(true).await else { return };
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    scenarios::property_lifecycle(&api, &cluster.sim, "dist-lifecycle", 911).await;
    scenarios::bad_input(&api, &cluster.sim, "dist-validation", 912).await;
    scenarios::legacy_routes(&api, &cluster.sim, "dist-legacy", 913).await;
    crate::rollouts::burst_of_edits(&api, &cluster.sim, "dist-burst", 915).await;
    crate::funnels::funnel_follows_deals(&api, &cluster.sim, cluster.pipeline_tracker_addr, "dist-funnel", 914).await;
    for service in &cluster.services {
        assert_eq!(health(service.grpc_addr).await, Some(SERVING), "{} is SERVING", service.name);
    }
    cluster.stop().await;
}

#[tokio::test]
async fn distributed_plan_equals_apply() {
    let Some(cluster) = Cluster::start(true).await else { return };
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    use crate::plan_apply as p;
    p::rollback_archives_exactly_what_the_plan_shows(&api, &cluster.sim, 3600).await;
    p::rest_edits_and_rollouts_agree(&api, &cluster.sim, 3700).await;
    p::pipelines_without_display_order_do_not_drift(&api, &cluster.sim, 3800).await;
    p::a_stale_plan_writes_nothing(&api, &cluster.sim, &cluster.sim_url, 3900).await;
    p::a_declined_apply_stores_nothing(&api, &cluster.sim, 4000).await;
    p::a_streamed_plan_counts_companies_then_is_the_plan(&api, &cluster.sim, 4050).await;
    p::a_streamed_import_counts_portals_then_is_the_import(&api, &cluster.sim, 4060).await;
    cluster.stop().await;
}

#[tokio::test]
async fn distributed_journal_only_portals_are_counted_exactly() {
    let Some(cluster) = Cluster::start(true).await else { return };
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    crate::journal::journal_only_portals_are_counted_exactly(&api, &cluster.sim, &SimConfig::default(), 4100).await;
    assert_eq!(cluster.sim.webhook_stats().events_sent, 0, "service-key portals get no push webhooks");
    cluster.stop().await;
}

pub(crate) struct Child(tokio::process::Child);

impl Child {
    async fn spawn(env: &[(String, String)], addr: SocketAddr) -> Self {
        Self::spawn_service("hubspot-sync", env, addr).await
    }

    pub(crate) async fn spawn_service(service: &str, env: &[(String, String)], addr: SocketAddr) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gomark"))
            .args(["run", service])
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn hubspot-sync");
        eventually("the service process SERVING", Duration::from_secs(30), || async {
            (health(addr).await == Some(SERVING)).then_some(())
        })
        .await;
        Self(child)
    }

    /// SIGKILL: no draining, no goodbye.
    pub(crate) async fn kill(mut self) {
        self.0.kill().await.expect("kill");
    }
}

#[tokio::test]
async fn killing_hubspot_sync_between_write_and_apply_still_applies_exactly_once() {
    let Some(mut cluster) = Cluster::start(false).await else { return };
    let env = cluster.hubspot_sync_env();
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    let token = "dist-crash";

    let child = Child::spawn(&env, cluster.hubspot_sync_addr).await;
    let company = scenarios::create_company(&api, &cluster.sim, "Crash Co", token, 921).await;
    child.kill().await;

    let created = api
        .send(
            Method::POST,
            &format!("/v1/companies/{company}/deal-properties"),
            Some(json!({"name": "gomark_crash_test", "label": "Crash test", "type": "number", "fieldType": "number", "groupName": "dealinformation"})),
        )
        .await;
    assert_eq!(created.status, 201, "the orchestrator accepts the change while hubspot-sync is down");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(cluster.sim.property(token, "gomark_crash_test").is_none(), "nothing applied while hubspot-sync is dead");
    let pending =
        api.send(Method::GET, &format!("/v1/companies/{company}/deal-properties/gomark_crash_test"), None).await;
    assert_eq!(pending.body["sync"]["state"], "pending");

    let child = Child::spawn(&env, cluster.hubspot_sync_addr).await;
    scenarios::wait_synced(&api, &company, "gomark_crash_test", None).await;
    assert_eq!(cluster.sim.property(token, "gomark_crash_test").expect("applied")["label"], "Crash test");

    // Give any duplicate delivery time to show itself, then count the writes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let portal = cluster.sim.portal_id(token);
    let creates = cluster
        .sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.portal_id == portal
                && r.method == "POST"
                && crate::support::v3_path(&r.path).contains("/properties/deals")
        })
        .count();
    assert_eq!(creates, 1, "exactly one create reached HubSpot");
    child.kill().await;
    cluster.stop().await;
}

#[tokio::test]
async fn killing_the_orchestrator_mid_rollout_resumes_and_writes_each_portal_once() {
    let Some(mut cluster) = Cluster::start_with(true, false).await else { return };
    let env = std::mem::take(&mut cluster.orchestrator_env);
    let orchestrator = Child::spawn_service("orchestrator", &env, cluster.orchestrator_addr).await;
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    const COMPANIES: u64 = 200;
    let mut doc = String::from(
        "baseline:\n  dealProperties:\n    - {name: gomark_resilient, label: Resilient, type: string, fieldType: text, groupName: dealinformation}\ncompanies:\n",
    );
    for i in 0..COMPANIES {
        let id =
            scenarios::create_company(&api, &cluster.sim, &format!("Kill {i}"), &format!("kill-{i}"), 30_000 + i).await;
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n"));
    }
    let revision =
        api.send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "resilience"}))).await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    // Slow HubSpot down so the rollout is still running when the orchestrator dies.
    cluster.sim.set_latency(Duration::from_millis(15));
    let started = api.send(Method::POST, "/v1/rollouts", Some(json!({"concurrency": 4}))).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.body["id"].as_str().expect("id").to_owned();

    let progress = eventually("some steps done", Duration::from_secs(60), || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
        (r.body["done"].as_u64().unwrap_or(0) >= 20).then_some(r.body)
    })
    .await;
    orchestrator.kill().await;
    let done_at_kill = progress["done"].as_u64().unwrap_or(0);
    assert!(done_at_kill < COMPANIES, "killed mid-rollout ({done_at_kill} of {COMPANIES} done)");

    let orchestrator = Child::spawn_service("orchestrator", &env, cluster.orchestrator_addr).await;
    let finished = eventually("the rollout to complete after the restart", Duration::from_secs(120), || async {
        let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
        (r.body["state"] == "completed").then_some(r.body)
    })
    .await;
    assert_eq!(finished["done"].as_u64(), Some(COMPANIES), "{finished}");

    let mut creates: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    for r in cluster.sim.requests() {
        let creates_property = {
            let path = crate::support::v3_path(&r.path);
            path.ends_with("/properties/deals") || path.ends_with("/properties/deals/batch/create")
        };
        if r.method == "POST"
            && creates_property
            && let Some(portal) = r.portal_id
        {
            *creates.entry(portal).or_default() += 1;
        }
    }
    assert_eq!(creates.len() as u64, COMPANIES, "every portal got the property");
    let twice: Vec<_> = creates.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "a write was repeated: {twice:?}");
    orchestrator.kill().await;
    cluster.stop().await;
}

#[tokio::test]
async fn distributed_upsell_outreach_end_to_end() {
    let Some(cluster) = Cluster::start_for_upsell().await else { return };
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    crate::upsell::upsell_story(&api, &cluster.sim, &cluster.upso_sim).await;
    cluster.stop().await;
}

#[tokio::test]
async fn a_new_revision_reaches_every_pipeline_tracker_replica_at_once() {
    use gomark_proto::pipeline_tracker::v1 as pb;
    use pb::pipeline_tracker_service_client::PipelineTrackerServiceClient;
    let Some(mut cluster) = Cluster::start(true).await else { return };
    // Two replicas share the `revision.created` consumer: one of them gets the event.
    let second = cluster.add_pipeline_tracker().await;
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    let document = "baseline:\n  metrics:\n    winRate: {windowDays: 10}\n";
    let created =
        api.send(Method::POST, "/v1/config/revisions", Some(json!({"document": document, "message": "windows"}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let number = created.body["number"].as_i64().expect("a revision number");
    for (label, addr) in [("first", cluster.pipeline_tracker_addr), ("second", second)] {
        let channel =
            gomark_platform::grpc_client::channel(&format!("http://{addr}"), Duration::from_secs(10)).expect("channel");
        let client = PipelineTrackerServiceClient::new(channel);
        // Well before the slow check (`tracker.config_refresh_secs`, 300 s).
        eventually(&format!("revision {number} on the {label} replica"), Duration::from_secs(15), || {
            let mut client = client.clone();
            async move {
                let request = gomark_platform::Caller::system("test").request(pb::GetMetricDefinitionsRequest {});
                let defs = client.get_metric_definitions(request).await.ok()?.into_inner();
                (defs.revision == number).then_some(())
            }
        })
        .await;
    }
    cluster.stop().await;
}

/// Two orchestrator replicas take a burst of edits of one company at the same instant:
/// starts are serialised across replicas, so the company is never in two running
/// rollouts, an edit's rollout that starts behind a newer one is superseded whichever
/// order they arrive in, and each property is written to the portal exactly once.
#[tokio::test]
async fn two_orchestrator_replicas_taking_edits_of_one_company_at_once() {
    use gomark_proto::config::v1::DealProperty;
    use gomark_proto::orchestrator::v1 as pb;
    use pb::orchestrator_service_client::OrchestratorServiceClient;
    let Some(mut cluster) = Cluster::start(true).await else { return };
    let second = cluster.add_orchestrator().await;
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    let token = "dist-race";
    let company = scenarios::create_company(&api, &cluster.sim, "Race", token, 916).await;

    // The portal is down while the edits arrive, so nothing finishes in between.
    cluster.sim.fail_next(token, 100_000, 503);
    let replicas = [cluster.orchestrator_addr, second].map(|addr| {
        let channel =
            gomark_platform::grpc_client::channel(&format!("http://{addr}"), Duration::from_secs(10)).expect("channel");
        OrchestratorServiceClient::new(channel)
    });
    const EDITS: usize = 12;
    let edits = (0..EDITS).map(|i| {
        let mut client = replicas[i % 2].clone();
        let spec = DealProperty {
            name: format!("gomark_race_{i}"),
            label: format!("Race {i}"),
            r#type: "string".into(),
            field_type: "text".into(),
            group_name: "dealinformation".into(),
            ..Default::default()
        };
        let request = gomark_platform::Caller::system("test")
            .request(pb::CreateDealPropertyRequest { company_id: company.clone(), spec: Some(spec) });
        async move { client.create_deal_property(request).await.map(|r| r.into_inner().rollout_id) }
    });
    let rollouts: Vec<String> =
        futures::future::join_all(edits).await.into_iter().map(|r| r.expect("each edit is taken")).collect();

    let states = |ids: Vec<String>| {
        let api = &api;
        async move {
            let mut by_state = std::collections::BTreeMap::<String, Vec<serde_json::Value>>::new();
            for id in ids {
                let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
                by_state.entry(r.body["state"].as_str().unwrap_or("?").to_owned()).or_default().push(r.body);
            }
            by_state
        }
    };
    let during = states(rollouts.clone()).await;
    let count = |state: &str| during.get(state).map_or(0, Vec::len);
    assert_eq!(count("running"), 1, "one rollout runs the company: {during:?}");
    assert!(count("queued") <= 1, "at most one waits behind it: {during:?}");
    assert_eq!(count("running") + count("queued") + count("superseded"), EDITS, "{during:?}");
    let newest = during.values().flatten().map(|r| r["revision"].as_i64().unwrap_or(0)).max().unwrap_or(0);
    let waiting: Vec<i64> = ["running", "queued"]
        .iter()
        .flat_map(|s| during.get(*s).into_iter().flatten())
        .filter_map(|r| r["revision"].as_i64())
        .collect();
    assert!(waiting.contains(&newest), "the newest revision ({newest}) is still to be applied: {during:?}");
    for superseded in during.get("superseded").into_iter().flatten() {
        assert!(superseded["revision"].as_i64() < Some(newest), "only older revisions are superseded: {superseded}");
        assert_eq!(superseded["steps"][0]["attempts"], 0, "never ran: {superseded}");
    }

    // The portal comes back: everything finishes, the newest revision last.
    cluster.sim.fail_next(token, 0, 503);
    let after = eventually("every rollout to finish", Duration::from_secs(60), || {
        let ids = rollouts.clone();
        let states = &states;
        async move {
            let by_state = states(ids).await;
            by_state.keys().all(|s| s == "completed" || s == "superseded").then_some(by_state)
        }
    })
    .await;
    assert!(after.get("completed").is_some_and(|c| c.iter().any(|r| r["revision"] == newest)), "{after:?}");
    for i in 0..EDITS {
        scenarios::wait_synced(&api, &company, &format!("gomark_race_{i}"), None).await;
    }
    for i in 0..EDITS {
        let created = scenarios::property_creates(&cluster.sim, token, &format!("gomark_race_{i}"));
        assert_eq!(created, 1, "gomark_race_{i} created once");
    }
    cluster.stop().await;
}
