//! Upso in embedded mode: the simulator beside the HubSpot one, the key sealing Upso
//! tokens in the data folder, and an Upso account for every demo company.

use crate::demo::DEMO_COMPANIES;
use gomark_platform::Shutdown;
use gomark_proto::common::v1::PageRequest;
use gomark_proto::orchestrator::v1::ListCompaniesRequest;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::upso_cadence::v1::RegisterAccountRequest;
use gomark_proto::upso_cadence::v1::upso_cadence_service_client::UpsoCadenceServiceClient;
use std::net::SocketAddr;
use std::time::Duration;
use upso_sim::UpsoSim;

/// The simulator token of demo company `i`'s Upso account; demo-only, never a real one.
pub fn demo_upso_token(i: usize) -> String {
    format!("demo-upso-token-{i:02}")
}

/// Serves a fresh Upso simulator on `addr` until shutdown.
pub async fn start_sim(
    config: upso_sim::SimConfig,
    addr: SocketAddr,
    shutdown: &Shutdown,
) -> anyhow::Result<(UpsoSim, SocketAddr)> {
    let sim = UpsoSim::new(config);
    let listener = gomark_platform::server::bind(addr, "Upso simulator").await?;
    let bound = listener.local_addr()?;
    let stop = shutdown.clone();
    tokio::spawn(sim.clone().serve(listener, async move { stop.wait().await }));
    Ok((sim, bound))
}

/// The key sealing Upso tokens in this data folder, created on first start, readable by
/// this user only (the same scheme as HubSpot's, its own key).
pub fn credential_key(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let path = data_dir.join("upso-credential.key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    let key = gomark_upso_cadence::credentials::Vault::generate_setting("k1");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, key.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// Gives every demo company an account in the (in-memory, so fresh every start) Upso
/// simulator and registers its token with upso-cadence.
pub async fn seed_demo_accounts(sim: &UpsoSim, orchestrator_url: &str, upso_cadence_url: &str) -> anyhow::Result<()> {
    let loader = gomark_platform::Caller::system("demo");
    let channel = gomark_platform::grpc_client::channel(orchestrator_url, Duration::from_secs(10))?;
    let mut orchestrator = OrchestratorServiceClient::new(channel);
    let channel = gomark_platform::grpc_client::channel(upso_cadence_url, Duration::from_secs(10))?;
    let mut upso = UpsoCadenceServiceClient::new(channel);
    let companies =
        orchestrator
            .list_companies(loader.request(ListCompaniesRequest {
                page: Some(PageRequest { page_size: 500, page_token: String::new() }),
            }))
            .await?
            .into_inner()
            .companies;
    for company in companies {
        let Some(i) = DEMO_COMPANIES.iter().position(|name| *name == company.name) else { continue };
        let token = demo_upso_token(i);
        sim.register_account(&token, &company.name);
        upso.register_account(loader.request(RegisterAccountRequest { company_id: company.id, upso_token: token }))
            .await?;
    }
    Ok(())
}
