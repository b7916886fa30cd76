//! The demo portfolio an empty embedded GoMark starts with: twenty companies, each with a
//! portal in the HubSpot simulator, and then, in the background, everything GoMark does
//! to look at: the portals imported as revision 1, a revision declaring deal properties,
//! an Upso cadence and an upsell rule, its finished rollout, upsell-ready customers (won
//! deals with contact emails and past close dates) and one drift (a hand edit in a portal).

use gomark_platform::grpc_client::TracedChannel as Channel;
use gomark_proto::common::v1::PageRequest;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::orchestrator::v1::{
    ApplyPlanRequest, CheckDriftRequest, CreateCompanyRequest, GetRevisionRequest, GetRolloutRequest, ImportRequest,
    ListCompaniesRequest, ListRevisionsRequest, PlanRequest,
};
use hubspot_sim::HubSpotSim;
use serde_json::{Value, json};
use std::time::Duration;
use tracing::Instrument as _;

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

/// The demo company whose portal gets a hand edit once the demo is staged: the drift to
/// look at. Its drift policy is `adopt`, so the edit becomes a revision and plans stay empty.
pub const DRIFTED_COMPANY: usize = DEMO_COMPANIES.len() - 1;
/// The customer-tier label a person "typed" into that portal's HubSpot UI.
pub const DRIFTED_LABEL: &str = "Customer tier (edited in HubSpot)";
/// Won deals with a contact each demo company gets: its upsell-ready customers.
pub const UPSELL_CUSTOMERS_PER_COMPANY: usize = 4;

/// How far the background part of the demo got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoState {
    /// Still importing, rolling out or seeding.
    Staging,
    /// Everything is there to look at.
    Ready,
    /// It stopped; the reason is logged.
    Failed,
}

/// The document key of a demo company (`Acme Analytics` → `acme-analytics`).
pub fn company_key(name: &str) -> String {
    name.to_lowercase().replace(' ', "-")
}

async fn orchestrator(url: &str) -> anyhow::Result<OrchestratorServiceClient<Channel>> {
    let channel = gomark_platform::grpc_client::channel(url, Duration::from_secs(10))?;
    Ok(OrchestratorServiceClient::new(channel))
}

/// Creates the demo companies (through the orchestrator, as any client would) unless the
/// installation already has companies. Fast: the rest is [`stage_demo`]'s, in the background.
pub async fn seed_demo_portfolio(sim: &HubSpotSim, orchestrator_url: &str) -> anyhow::Result<()> {
    let mut client = orchestrator(orchestrator_url).await?;
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
        client
            .create_company(loader.request(CreateCompanyRequest {
                name: (*name).to_owned(),
                hubspot_portal_id: (hubspot_sim::FIRST_PORTAL_ID + i as u64).to_string(),
                hubspot_token: demo_token(i),
                ..CreateCompanyRequest::default()
            }))
            .await?;
    }
    tracing::info!(companies = DEMO_COMPANIES.len(), "demo companies created; staging the rest of the demo");
    Ok(())
}

/// The rest of the demo, after `serve` is up; says in the log (and in `ready`) when it is
/// done. A data folder that already has a revision is left as it is.
pub async fn stage_demo(
    sim: HubSpotSim,
    hubspot_sim_url: String,
    orchestrator_url: String,
    ready: tokio::sync::watch::Sender<DemoState>,
) {
    let started = std::time::Instant::now();
    // Staging is one trace: its calls to the services are children of it.
    let span = gomark_platform::telemetry::root_span("demo staging");
    let staged = stage(&sim, &hubspot_sim_url, &orchestrator_url).instrument(span.clone()).await;
    let _entered = span.enter();
    let state = match staged {
        Ok(true) => {
            tracing::info!(
                secs = started.elapsed().as_secs(),
                "demo ready: revision 1 imported, cadences and upsell rules rolled out, upsell-ready customers seeded, one drift recorded"
            );
            DemoState::Ready
        }
        Ok(false) => {
            tracing::info!("demo ready: this data folder already has its revisions");
            DemoState::Ready
        }
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "the demo could not be staged completely; the companies are there");
            DemoState::Failed
        }
    };
    ready.send_replace(state);
}

/// Returns false when there was nothing to do (revisions exist already).
async fn stage(sim: &HubSpotSim, hubspot_sim_url: &str, orchestrator_url: &str) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    let mut client = orchestrator(orchestrator_url).await?;
    let loader = gomark_platform::Caller::system("demo");
    let page = |size| Some(PageRequest { page_size: size, page_token: String::new() });
    let revisions = client.list_revisions(loader.request(ListRevisionsRequest { page: page(1) })).await?.into_inner();
    if !revisions.revisions.is_empty() {
        return Ok(false);
    }
    let companies =
        client.list_companies(loader.request(ListCompaniesRequest { page: page(500) })).await?.into_inner().companies;
    let demo_index = |id: &str| {
        let company = companies.iter().find(|c| c.id == id)?;
        DEMO_COMPANIES.iter().position(|name| *name == company.name)
    };

    // Revision 1: what the portals hold, through the same import an operator runs.
    let imported = client
        .import(loader.request(ImportRequest {
            company_ids: Vec::new(),
            message: "demo: adopt what the demo portals hold".into(),
        }))
        .await
        .context("import")?
        .into_inner();
    let number = imported.revision.map(|r| r.number).context("the import stored no revision")?;
    let revision = client.get_revision(loader.request(GetRevisionRequest { number })).await?.into_inner();
    let mut document: Value =
        serde_yaml::from_str(&revision.document_yaml).context("the imported revision is not a YAML document")?;

    // Revision 2: the portfolio's own configuration on top, planned and applied.
    add_demo_configuration(&mut document, demo_index)?;
    let plan = client
        .plan(loader.request(PlanRequest {
            document: document.to_string(),
            message: "demo: customer tier, contact properties, the upsell cadence and rule".into(),
            ..PlanRequest::default()
        }))
        .await
        .context("plan")?
        .into_inner();
    let applied = client
        .apply_plan(loader.request(ApplyPlanRequest { plan_id: plan.plan_id, ..ApplyPlanRequest::default() }))
        .await
        .context("apply")?
        .into_inner();
    let rollout = applied.rollout.context("the plan started no rollout")?.id;
    wait_for_rollout(&mut client, &loader, &rollout).await?;

    seed_upsell_customers(sim);

    // A person edits a label in one portal's HubSpot UI; the check records it as drift.
    let token = demo_token(DRIFTED_COMPANY);
    let response = reqwest::Client::new()
        .patch(format!("{hubspot_sim_url}/crm/v3/properties/deals/gomark_customer_tier"))
        .bearer_auth(&token)
        .header("X-HubSpot-Sim-UI-User", "4242")
        .json(&json!({"label": DRIFTED_LABEL}))
        .send()
        .await
        .context("the hand edit")?;
    anyhow::ensure!(response.status().is_success(), "the hand edit got HTTP {}", response.status());
    let drifted = companies
        .iter()
        .find(|c| c.name == DEMO_COMPANIES[DRIFTED_COMPANY])
        .map(|c| c.id.clone())
        .context("the drifted company is missing")?;
    client
        .check_drift(loader.request(CheckDriftRequest { company_ids: vec![drifted] }))
        .await
        .context("drift check")?;
    Ok(true)
}

/// Adds the demo's baseline (properties, cadence, upsell rule) to an imported document,
/// and the settings of each demo company: Acme is the canary (wave 0), the drifted one
/// adopts hand edits.
fn add_demo_configuration(document: &mut Value, demo_index: impl Fn(&str) -> Option<usize>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let root = document.as_object_mut().context("the imported document is not a mapping")?;
    let baseline = root.entry("baseline").or_insert_with(|| json!({}));
    if baseline.is_null() {
        *baseline = json!({});
    }
    let baseline = baseline.as_object_mut().context("baseline is not a mapping")?;
    let text = |name: &str, label: &str| json!({"name": name, "label": label, "type": "string", "fieldType": "text", "groupName": "dealinformation"});
    let properties = [
        json!({
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
        }),
        text("gomark_contact_email", "Contact email"),
        text("gomark_contact_first_name", "Contact first name"),
        json!({"name": "gomark_product_usage", "label": "Product usage", "type": "number", "fieldType": "number",
               "groupName": "dealinformation"}),
    ];
    let list = baseline.entry("dealProperties").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    list.as_array_mut().context("baseline.dealProperties is not a list")?.extend(properties);
    baseline.insert(
        "cadences".into(),
        json!([{
            "key": "upsell",
            "name": "Upsell: the next plan",
            "steps": [
                {"type": "auto_email", "delayHours": 0, "subject": "More from {{company}}",
                 "body": "Hi {{firstName}}, your team has outgrown its plan: the next one is a month on us."},
                {"type": "call", "delayHours": 48, "instructions": "Call about the upgrade"}
            ]
        }]),
    );
    baseline.insert(
        "upsellRules".into(),
        json!([{
            "key": "default",
            "cadence": "upsell",
            "minScore": 5,
            "closedWonDaysAgo": {"min": 7, "max": 90},
            "scoring": [
                {"property": "amount", "op": "linear", "points": 0.001, "maxPoints": 50, "why": "contract size"},
                {"property": "gomark_product_usage", "op": "gte", "value": 0.8, "points": 30, "why": "heavy usage"}
            ],
            "guardrails": {"minDaysSinceLastTouch": 14, "mailboxDailyCap": 2, "companyDailyCap": 2}
        }]),
    );
    let companies = root.get_mut("companies").and_then(Value::as_object_mut).context("the import has no companies")?;
    for entry in companies.values_mut() {
        let Some(i) = entry.get("companyId").and_then(Value::as_str).and_then(&demo_index) else { continue };
        let Some(entry) = entry.as_object_mut() else { continue };
        let settings = entry.entry("settings").or_insert_with(|| json!({}));
        if !settings.is_object() {
            *settings = json!({});
        }
        if let Some(settings) = settings.as_object_mut() {
            settings.insert("rolloutWave".into(), json!(u8::from(i > 0)));
            if i == DRIFTED_COMPANY {
                settings.insert("driftPolicy".into(), json!("adopt"));
            }
        }
    }
    Ok(())
}

async fn wait_for_rollout(
    client: &mut OrchestratorServiceClient<Channel>,
    loader: &gomark_platform::Caller,
    id: &str,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rollout = client.get_rollout(loader.request(GetRolloutRequest { id: id.to_owned() })).await?.into_inner();
        match rollout.state.as_str() {
            "completed" => return Ok(()),
            "halted" | "cancelled" | "failed" => anyhow::bail!("the demo rollout {id} is {}", rollout.state),
            _ => {}
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the demo rollout {id} did not finish in 2 minutes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Won deals with a contact each, closed 10 to 60 days ago: customers the upsell rule
/// scores (the deal events reach upso-cadence like any portal change).
fn seed_upsell_customers(sim: &HubSpotSim) {
    use rand::Rng as _;
    const PEOPLE: &[&str] = &["ada", "grace", "linus", "margaret", "dennis", "barbara", "ken", "frances"];
    const DAY_MS: i64 = 86_400_000;
    let now = gomark_storage::now_ms();
    for (i, name) in DEMO_COMPANIES.iter().enumerate() {
        let token = demo_token(i);
        let domain = format!("{}.example", company_key(name));
        let ids = sim.create_deals(&token, UPSELL_CUSTOMERS_PER_COMPANY, "closedwon", "default");
        for (n, id) in ids.iter().enumerate() {
            let person = PEOPLE[(i + n) % PEOPLE.len()];
            let (amount, days_ago, usage) = {
                let mut rng = rand::rng();
                (rng.random_range(10..=90) * 1_000, rng.random_range(10..=60), rng.random_range(40..=100))
            };
            let mut first = person.to_owned();
            first[..1].make_ascii_uppercase();
            let props = [
                ("amount", amount.to_string()),
                ("closedate", (now - days_ago * DAY_MS).to_string()),
                ("gomark_contact_email", format!("{person}@{domain}")),
                ("gomark_contact_first_name", first),
                ("gomark_product_usage", format!("{:.2}", f64::from(usage) / 100.0)),
            ];
            if let Err(err) = sim.update_deal(&token, id, props) {
                tracing::debug!(error = %err, "demo customer skipped");
            }
        }
    }
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
        // A won deal closes now: upsell rules count days since the close date.
        let closed = if next == "closedwon" {
            vec![("dealstage", next.to_owned()), ("closedate", gomark_storage::now_ms().to_string())]
        } else {
            vec![("dealstage", next.to_owned())]
        };
        if let Err(err) = sim.update_deal(token, &id, closed) {
            gomark_platform::telemetry::root_span("demo activity")
                .in_scope(|| tracing::debug!(error = %err, "demo activity skipped a deal"));
            continue;
        }
        if !next.starts_with("closed") {
            deals.push((id, stage + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_configuration_goes_on_top_of_the_imported_document() {
        let mut document = json!({
            "baseline": null,
            "companies": {
                "acme-analytics": {"companyId": "c0", "settings": {"rolloutWave": 1}},
                "tidewater-marinas": {"companyId": "c19"},
                "someone-else": {"companyId": "x"}
            }
        });
        let index = |id: &str| match id {
            "c0" => Some(0),
            "c19" => Some(DRIFTED_COMPANY),
            _ => None,
        };
        add_demo_configuration(&mut document, index).expect("added");
        let names: Vec<&str> = document["baseline"]["dealProperties"]
            .as_array()
            .expect("properties")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"gomark_customer_tier") && names.contains(&"gomark_contact_email"), "{names:?}");
        assert_eq!(document["baseline"]["upsellRules"][0]["cadence"], document["baseline"]["cadences"][0]["key"]);
        let companies = &document["companies"];
        assert_eq!(companies["acme-analytics"]["settings"], json!({"rolloutWave": 0}), "Acme is the canary");
        assert_eq!(companies["tidewater-marinas"]["settings"], json!({"rolloutWave": 1, "driftPolicy": "adopt"}));
        assert!(companies["someone-else"].get("settings").is_none(), "not a demo company: left alone");
        // The result is a document the one validator accepts.
        let parsed = gtm_config::Document::from_yaml(&document.to_string()).expect("a document");
        parsed.validate().expect("a valid document");
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_an_error() {
        assert!(add_demo_configuration(&mut json!([1, 2]), |_| None).is_err());
        assert!(add_demo_configuration(&mut json!({"baseline": {}}), |_| None).is_err(), "no companies");
    }
}
