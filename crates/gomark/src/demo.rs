//! The demo portfolio an empty embedded GoMark starts with: twenty companies, each with a
//! portal in the HubSpot simulator.

use gomark_proto::common::v1::{DealPropertySpec, PageRequest, PropertyOption};
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::orchestrator::v1::{CreateCompanyRequest, CreateDealPropertyRequest, ListCompaniesRequest};
use hubspot_sim::HubSpotSim;
use std::time::Duration;

pub const DEMO_COMPANIES: &[&str] = &[
    "Acme Analytics",
    "Brightlane CRM",
    "Cobalt Payroll",
    "Driftwood Docs",
    "Evergreen Billing",
    "Foxglove Security",
    "Granite Scheduling",
    "Harbor Logistics",
    "Ironbark HR",
    "Juniper Forms",
    "Kestrel Monitoring",
    "Lumen Learning",
    "Maple Dental",
    "Northwind Fleet",
    "Orchid Events",
    "Pinecone Legal",
    "Quartz Inventory",
    "Redwood Clinics",
    "Sierra Field Service",
    "Tidewater Marinas",
];

/// The simulator token of demo company `i`; demo-only, never a real credential.
pub fn demo_token(i: usize) -> String {
    format!("demo-portal-token-{i:02}")
}

/// Creates the demo companies (through the orchestrator, as any client would) unless the
/// installation already has companies.
pub async fn seed_demo_portfolio(sim: &HubSpotSim, orchestrator_url: &str) -> anyhow::Result<()> {
    let channel = gomark_platform::grpc_client::channel(orchestrator_url, Duration::from_secs(10))?;
    let mut client = OrchestratorServiceClient::new(channel);
    let loader = gomark_platform::Caller::system("demo");
    let existing = client
        .list_companies(
            loader
                .request(ListCompaniesRequest { page: Some(PageRequest { page_size: 1, page_token: String::new() }) }),
        )
        .await?
        .into_inner();
    for (i, _) in DEMO_COMPANIES.iter().enumerate() {
        sim.register_portal(&demo_token(i), hubspot_sim::FIRST_PORTAL_ID + i as u64);
    }
    if !existing.companies.is_empty() {
        return Ok(());
    }
    for (i, name) in DEMO_COMPANIES.iter().enumerate() {
        let company = client
            .create_company(loader.request(CreateCompanyRequest {
                name: (*name).to_owned(),
                hubspot_portal_id: (hubspot_sim::FIRST_PORTAL_ID + i as u64).to_string(),
                hubspot_token: demo_token(i),
            }))
            .await?
            .into_inner();
        // Every demo company declares the portfolio's customer-tier property.
        let spec = DealPropertySpec {
            name: "gomark_customer_tier".into(),
            label: "Customer tier".into(),
            r#type: "enumeration".into(),
            field_type: "select".into(),
            group_name: "dealinformation".into(),
            description: "Portfolio-wide customer tier, managed by GoMark".into(),
            options: ["Gold", "Silver", "Bronze"]
                .iter()
                .enumerate()
                .map(|(order, label)| PropertyOption {
                    label: (*label).into(),
                    value: label.to_lowercase(),
                    display_order: order as i32,
                    ..PropertyOption::default()
                })
                .collect(),
        };
        client
            .create_deal_property(
                loader.request(CreateDealPropertyRequest { company_id: company.id, spec: Some(spec) }),
            )
            .await?;
    }
    tracing::info!(companies = DEMO_COMPANIES.len(), "demo portfolio loaded");
    Ok(())
}

/// HubSpot's default open stages, in order; a deal past the last one is won.
const DEMO_STAGES: &[&str] =
    &["appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin", "contractsent"];

/// Sales activity in the demo portals, so the funnels have something to show: each tick
/// one demo company creates a deal, moves one a stage forward, wins or loses one.
pub async fn run_demo_activity(sim: HubSpotSim, every: Duration, shutdown: gomark_platform::Shutdown) {
    use rand::Rng as _;
    // (token, open deals with their stage index), per company: those a restarted demo left
    // in the (restored) portals, so the same deals move on.
    let mut open: Vec<(String, Vec<(String, usize)>)> = (0..DEMO_COMPANIES.len())
        .map(|i| {
            let token = demo_token(i);
            let deals = sim
                .deal_stages(&token)
                .into_iter()
                .filter_map(|(id, stage)| Some((id, DEMO_STAGES.iter().position(|s| *s == stage)?)))
                .collect();
            (token, deals)
        })
        .collect();
    let create = |token: &str, stage: usize| -> Option<(String, usize)> {
        let mut rng = rand::rng();
        let id = sim.create_deals(token, 1, DEMO_STAGES[stage], "default").pop()?;
        let amount = (rng.random_range(5..=80) * 1_000).to_string();
        let close = (gomark_storage::now_ms() + rng.random_range(7..=90) * 86_400_000).to_string();
        sim.update_deal(token, &id, [("amount", amount), ("closedate", close)]).ok()?;
        Some((id, stage))
    };
    // A starting book of business, for portals that have none yet.
    for (token, deals) in open.iter_mut().filter(|(_, deals)| deals.is_empty()) {
        for _ in 0..6 {
            let stage = rand::rng().random_range(0..DEMO_STAGES.len());
            deals.extend(create(token, stage));
        }
    }
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(every) => {}
        }
        let (company, roll, pick) = {
            let mut rng = rand::rng();
            (rng.random_range(0..open.len()), rng.random_range(0..100u32), rng.random_range(0..usize::MAX))
        };
        let (token, deals) = &mut open[company];
        if deals.len() < 4 || roll < 30 {
            deals.extend(create(token, 0));
            continue;
        }
        let (id, stage) = deals.swap_remove(pick % deals.len());
        let next = if roll < 42 {
            "closedlost"
        } else if stage + 1 == DEMO_STAGES.len() {
            "closedwon"
        } else {
            DEMO_STAGES[stage + 1]
        };
        if let Err(err) = sim.update_deal(token, &id, [("dealstage", next)]) {
            tracing::debug!(error = %err, "demo activity skipped a deal");
            continue;
        }
        if !next.starts_with("closed") {
            deals.push((id, stage + 1));
        }
    }
}
