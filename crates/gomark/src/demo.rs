//! The demo portfolio an empty embedded GoMark starts with: twenty companies, each with a
//! portal in the HubSpot simulator.

use gomark_proto::common::v1::PageRequest;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::orchestrator::v1::{ApplyPlanRequest, CreateCompanyRequest, ListCompaniesRequest, PlanRequest};
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
    let mut companies = serde_json::Map::new();
    for (i, name) in DEMO_COMPANIES.iter().enumerate() {
        let company = client
            .create_company(loader.request(CreateCompanyRequest {
                name: (*name).to_owned(),
                hubspot_portal_id: (hubspot_sim::FIRST_PORTAL_ID + i as u64).to_string(),
                hubspot_token: demo_token(i),
                ..CreateCompanyRequest::default()
            }))
            .await?
            .into_inner();
        let key = name.to_lowercase().replace(' ', "-");
        companies
            .insert(key, serde_json::json!({"companyId": company.id, "settings": {"rolloutWave": u8::from(i > 0)}}));
    }
    // Every demo company gets the portfolio's customer-tier property, the way any change
    // reaches portals: a document, planned, then applied.
    let document = serde_json::json!({
        "baseline": {
            "dealProperties": [{
                "name": "gomark_customer_tier",
                "label": "Customer tier",
                "type": "enumeration",
                "fieldType": "select",
                "groupName": "dealinformation",
                "description": "Portfolio-wide customer tier, managed by GoMark",
                "options": [
                    {"label": "Gold", "value": "gold"},
                    {"label": "Silver", "value": "silver"},
                    {"label": "Bronze", "value": "bronze"}
                ]
            }]
        },
        "companies": companies,
    });
    let plan = client
        .plan(loader.request(PlanRequest {
            document: document.to_string(),
            message: "demo portfolio: the customer-tier property everywhere".into(),
            ..PlanRequest::default()
        }))
        .await?
        .into_inner();
    client
        .apply_plan(loader.request(ApplyPlanRequest { plan_id: plan.plan_id, ..ApplyPlanRequest::default() }))
        .await?;
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
