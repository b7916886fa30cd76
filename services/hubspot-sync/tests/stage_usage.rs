//! Which stages still hold deals, asked through HubSpot search before a plan deletes
//! them: exact per stage, and one search per stage found in use plus one per pipeline.

use gomark_hubspot_sync::stage_usage::stages_in_use;
use gtm_config::DealsInStages;
use hubspot_client::{AccessToken, ClientConfig, HubSpotClient};
use hubspot_sim::SimConfig;

fn stages(pairs: &[(&str, &str)]) -> DealsInStages {
    pairs.iter().map(|(p, s)| ((*p).to_owned(), (*s).to_owned())).collect()
}

#[tokio::test]
async fn finds_exactly_the_stages_with_deals_in_bounded_searches() {
    let (sim, addr) =
        hubspot_sim::spawn(SimConfig::default(), "127.0.0.1:0".parse().expect("addr")).await.expect("sim");
    sim.register_portal("usage-token", 7001);
    // Many deals in one stage must not hide the other used stage.
    sim.create_deals("usage-token", 30, "appointmentscheduled", "default");
    sim.create_deals("usage-token", 1, "presentationscheduled", "default");
    let client = HubSpotClient::new(ClientConfig { base_url: format!("http://{addr}"), ..ClientConfig::default() })
        .expect("client");
    let token = AccessToken::new("usage-token");

    let asked = stages(&[
        ("default", "appointmentscheduled"),
        ("default", "qualifiedtobuy"),
        ("default", "presentationscheduled"),
        ("other-pipeline", "appointmentscheduled"),
    ]);
    sim.clear_requests();
    let used = stages_in_use(&client, &token, &asked).await.expect("usage");
    assert_eq!(used, stages(&[("default", "appointmentscheduled"), ("default", "presentationscheduled")]));
    let searches = sim.requests().iter().filter(|r| r.path.ends_with("/search")).count();
    assert_eq!(searches, 4, "two stages found in use, plus one empty answer per pipeline");

    assert!(stages_in_use(&client, &token, &DealsInStages::new()).await.expect("nothing asked").is_empty());
}
