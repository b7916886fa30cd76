//! Rollouts under faults (issue 14, items 1–2), in distributed mode with the orchestrator
//! as separate processes: replicas killed and restarted mid-rollout, and the orchestrator's
//! Postgres stopped mid-rollout. Each HubSpot write reaches the simulator once and the
//! rollout completes with no failed step, without restarting anything.
//!
//! The normal suite runs small versions; `just chaos` runs the full ones (`--ignored`).

use crate::distributed::{Child, Cluster, loopback};
use crate::scenarios;
use crate::support::{Api, free_port};
use hubspot_sim::HubSpotSim;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Creates `n` companies and a revision giving each one new property; returns its number.
async fn portfolio(api: &Api, sim: &HubSpotSim, n: u64, base_portal: u64) -> i64 {
    let mut doc = String::from(
        "baseline:\n  dealProperties:\n    - {name: gomark_chaos, label: Chaos, type: string, fieldType: text, groupName: dealinformation}\ncompanies:\n",
    );
    for i in 0..n {
        let token = format!("chaos-{base_portal}-{i}");
        let id = scenarios::create_company(api, sim, &format!("Chaos {i}"), &token, base_portal + i).await;
        doc.push_str(&format!("  c{i}:\n    companyId: \"{id}\"\n"));
    }
    let revision =
        api.send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "chaos"}))).await;
    assert_eq!(revision.status, 201, "{}", revision.body);
    revision.body["number"].as_i64().expect("number")
}

async fn progress(api: &Api, id: &str) -> Option<Value> {
    let r = api.send(Method::GET, &format!("/v1/rollouts/{id}"), None).await;
    r.status.is_success().then_some(r.body)
}

/// Polls until `ready` holds for the rollout's progress (an unreachable gateway or
/// orchestrator is just polled again).
async fn wait_for(api: &Api, id: &str, what: &str, limit: Duration, ready: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        if let Some(body) = progress(api, id).await
            && ready(&body)
        {
            return body;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every portal received the property create exactly once.
fn assert_each_write_once(sim: &HubSpotSim, portals: u64) {
    let mut creates: HashMap<u64, u32> = HashMap::new();
    for r in sim.requests() {
        let creates_property = {
            let path = crate::support::v3_path(&r.path);
            path.ends_with("/properties/deals") || path.ends_with("/properties/deals/batch/create")
        };
        if r.method != "GET"
            && (creates_property || crate::support::v3_path(&r.path).contains("/properties/deals/"))
            && let Some(portal) = r.portal_id
        {
            *creates.entry(portal).or_default() += 1;
        }
    }
    assert_eq!(creates.len() as u64, portals, "every portal got the property");
    let repeated: Vec<_> = creates.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "a write was repeated: {repeated:?}");
}

fn completed_without_failures(r: &Value, total: u64) {
    assert_eq!(
        (r["state"].as_str(), r["done"].as_u64(), r["failed"].as_u64()),
        (Some("completed"), Some(total), Some(0)),
        "{r}"
    );
}

/// Three orchestrator replicas on one database; one is SIGKILLed and restarted `kills`
/// times during the rollout.
async fn replicas_killed_mid_rollout(companies: u64, kills: u32) {
    let Some(mut cluster) = Cluster::start_with(true, false).await else { return };
    let env = std::mem::take(&mut cluster.orchestrator_env);
    // Each replica: its process, and how to start it again (same address, same database).
    let mut replicas = Vec::new();
    for i in 0..3 {
        let addr = if i == 0 { cluster.orchestrator_addr } else { loopback(free_port()) };
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.clone(), if k == "GOMARK__SERVER__GRPC_ADDR" { addr.to_string() } else { v.clone() }))
            .collect();
        replicas.push((Child::spawn_service("orchestrator", &env, addr).await, env, addr));
    }
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    let revision = portfolio(&api, &cluster.sim, companies, 40_000).await;
    // Slow HubSpot down so that kills land mid-rollout, with steps in flight.
    cluster.sim.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    let reply = api.send(Method::POST, "/v1/rollouts", Some(json!({"revision": revision, "concurrency": 6}))).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.body["id"].as_str().expect("id").to_owned();

    let step = companies / (u64::from(kills) + 2);
    let mut killed_at = Vec::new();
    for k in 1..=u64::from(kills) {
        let at = wait_for(&api, &id, "progress before a kill", Duration::from_secs(120), |r| {
            r["done"].as_u64().unwrap_or(0) >= k * step
        })
        .await;
        killed_at.push(at["done"].as_u64().unwrap_or(0));
        // Each replica in turn, so that kills hit replicas running steps.
        let (child, env, addr) = replicas.remove((k % 3) as usize);
        child.kill().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let child = Child::spawn_service("orchestrator", &env, addr).await;
        replicas.insert((k % 3) as usize, (child, env, addr));
    }
    // A killed replica's steps are taken over when their leases (30 s) run out.
    let limit = Duration::from_secs(120 + 35 * u64::from(kills));
    let done = wait_for(&api, &id, "the rollout to finish", limit, |r| r["state"] != "running").await;
    let elapsed = started.elapsed();
    completed_without_failures(&done, companies);
    assert!(killed_at.iter().all(|d| *d < companies), "every kill landed mid-rollout: {killed_at:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_each_write_once(&cluster.sim, companies);
    println!(
        "chaos: 3 orchestrator replicas, {kills} kill -9 + restart at {killed_at:?} of {companies} done: completed in {elapsed:.1?}, 0 failed, each write once"
    );
    for (child, _, _) in replicas {
        child.kill().await;
    }
    cluster.stop().await;
}

/// `just chaos` (`.ci/chaos-rollouts`) sets this to run the fault tests at full size.
fn heavy() -> bool {
    std::env::var_os("GOMARK_CHAOS_HEAVY").is_some()
}

/// 30 companies and 2 kills; under `just chaos`, 200 companies and 6 kills.
#[tokio::test]
async fn killed_orchestrator_replicas_write_each_portal_once() {
    if heavy() { replicas_killed_mid_rollout(200, 6).await } else { replicas_killed_mid_rollout(30, 2).await }
}

/// A Postgres cluster of the test's own (the shared one cannot be stopped), which it stops
/// and starts; removed afterwards.
struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// initdb refuses root: then every command runs as the `postgres` user.
    as_postgres: bool,
}

impl OwnPostgres {
    /// None (and a note) when PostgreSQL's server binaries are not installed.
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists() && b.join("pg_ctl").exists());
        let Some(bin) = bin else {
            gomark_testkit::note_skipped("Postgres outage", "PostgreSQL server binaries (initdb, pg_ctl)");
            return None;
        };
        let as_postgres = Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false);
        let dir = std::env::temp_dir().join(gomark_testkit::unique("gomark-pg"));
        std::fs::create_dir_all(&dir).expect("postgres dir");
        let pg = Self { bin, dir, port: free_port(), as_postgres };
        if as_postgres {
            pg.run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&pg.dir));
        }
        let data = pg.dir.join("data");
        pg.run(pg.command("initdb").arg("-D").arg(&data).args(["-U", "postgres", "--auth", "trust"]));
        pg.up();
        Some(pg)
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, command: &mut Command) {
        let out = command.output().expect("run a postgres tool");
        assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        self.run(self.command("pg_ctl").arg("-D").arg(&data).args(args));
    }

    fn up(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        let log = self.dir.join("log");
        self.pg_ctl(&["-w", "-l", &log.display().to_string(), "-o", &options, "start"]);
    }

    fn down(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.command("pg_ctl").arg("-D").arg(&data).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(self.path());
    }
}

/// The orchestrator's Postgres is stopped for `outage` mid-rollout, then started again.
async fn database_outage_mid_rollout(companies: u64, outage: Duration) {
    let Some(mut cluster) = Cluster::start_with(true, false).await else { return };
    let Some(pg) = OwnPostgres::start() else { return };
    let env: Vec<(String, String)> = std::mem::take(&mut cluster.orchestrator_env)
        .into_iter()
        .map(|(k, v)| if k == "GOMARK__DATABASE__URL" { (k, pg.url()) } else { (k, v) })
        .collect();
    let orchestrator = Child::spawn_service("orchestrator", &env, cluster.orchestrator_addr).await;
    let api = Api::new(&cluster.gateway_url, &cluster.admin_key);
    let revision = portfolio(&api, &cluster.sim, companies, 50_000).await;
    cluster.sim.set_latency(Duration::from_millis(100));
    let started = Instant::now();
    let reply = api.send(Method::POST, "/v1/rollouts", Some(json!({"revision": revision, "concurrency": 4}))).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.body["id"].as_str().expect("id").to_owned();
    let before = wait_for(&api, &id, "some steps done", Duration::from_secs(60), |r| {
        r["done"].as_u64().unwrap_or(0) >= companies / 5
    })
    .await;
    pg.down();
    tokio::time::sleep(outage).await;
    pg.up();
    let done_before = before["done"].as_u64().unwrap_or(0);
    assert!(done_before < companies, "the outage landed mid-rollout ({done_before} of {companies} done)");
    let done = wait_for(&api, &id, "the rollout to finish after the outage", Duration::from_secs(150), |r| {
        r["state"] != "running"
    })
    .await;
    let elapsed = started.elapsed();
    completed_without_failures(&done, companies);
    assert!(done["steps"].as_array().expect("steps").iter().all(|s| s["state"] == "done"), "{done}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_each_write_once(&cluster.sim, companies);
    println!(
        "chaos: orchestrator Postgres stopped {outage:?} at {done_before} of {companies} done: completed in {elapsed:.1?} without a restart, 0 failed, each write once"
    );
    orchestrator.kill().await;
    cluster.stop().await;
}

/// 5 s with 30 companies; under `just chaos`, 15 s with 60.
#[tokio::test]
async fn a_short_database_outage_mid_rollout_heals_by_itself() {
    if heavy() {
        database_outage_mid_rollout(60, Duration::from_secs(15)).await
    } else {
        database_outage_mid_rollout(30, Duration::from_secs(5)).await
    }
}
