//! Readiness tells the truth: while a dependency is unreachable the service answers
//! NOT_SERVING on gRPC health and 503 on `/readyz`, and SERVING / 200 once it is back,
//! without a restart. (`/healthz`, liveness, stays 200 throughout.)

use async_trait::async_trait;
use gomark_events::{ConsumerSpec, EventBus, EventEnvelope, EventError, EventStream};
use gomark_platform::Shutdown;
use gomark_platform::server::{HealthNames, serve_grpc};
use gomark_service::{Dependency, RunningService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;

/// A bus that can be switched off.
struct FlakyBus(AtomicBool);

#[async_trait]
impl EventBus for FlakyBus {
    async fn publish(&self, _: &EventEnvelope) -> gomark_events::Result<()> {
        Ok(())
    }

    async fn subscribe(&self, _: &ConsumerSpec) -> gomark_events::Result<Box<dyn EventStream>> {
        Err(EventError::Unavailable("test bus".into()))
    }

    async fn ping(&self) -> gomark_events::Result<()> {
        if self.0.load(Ordering::SeqCst) { Ok(()) } else { Err(EventError::Unavailable("switched off".into())) }
    }
}

async fn grpc_status(addr: SocketAddr) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect");
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: "test.Service".into() };
    client.check(request).await.expect("health").into_inner().status
}

async fn http_status(url: &str) -> u16 {
    reqwest::get(url).await.expect("admin answers").status().as_u16()
}

/// Polls until the service reports `ready` both ways (the probe runs every 2 s).
async fn wait_for(grpc: SocketAddr, admin: SocketAddr, ready: bool) {
    let (want_grpc, want_http) =
        if ready { (ServingStatus::Serving as i32, 200) } else { (ServingStatus::NotServing as i32, 503) };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = (grpc_status(grpc).await, http_status(&format!("http://{admin}/readyz")).await);
        if now == (want_grpc, want_http) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {now:?}, want ready={ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn health_follows_the_dependencies() {
    let shutdown = Shutdown::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc = listener.local_addr().expect("addr");
    let mut service = RunningService::new("test", grpc, shutdown.clone());
    let bus = Arc::new(FlakyBus(AtomicBool::new(true)));
    service.watch_dependencies(vec![Dependency::Bus(bus.clone())]);
    let (readiness, sd) = (service.readiness(), shutdown.clone());
    service.spawn("grpc", async move {
        let routes = tonic::service::Routes::default();
        Ok(serve_grpc(listener, routes, HealthNames(vec!["test.Service"]), readiness, sd, Duration::from_secs(1), true)
            .await?)
    });
    let service = service.with_admin("127.0.0.1:0".parse().expect("addr")).await.expect("admin");
    let admin = service.admin_addr.expect("admin addr");

    wait_for(grpc, admin, true).await;
    bus.0.store(false, Ordering::SeqCst);
    wait_for(grpc, admin, false).await;
    assert_eq!(http_status(&format!("http://{admin}/healthz")).await, 200, "alive all the same");
    bus.0.store(true, Ordering::SeqCst);
    wait_for(grpc, admin, true).await;

    shutdown.trigger();
    service.wait().await.expect("stops cleanly");
}
