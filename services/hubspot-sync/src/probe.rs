//! The conformance probe run before a portal's API version pin moves: the portal is read
//! on its current version and on the new one, and the new one must answer every read GoMark
//! relies on (properties, groups, pipelines with stages, deals) in the shapes GoMark decodes,
//! holding the same things. Only then is the new pin stored; otherwise the action fails
//! with what differed, the pin stays, and the rollout step fails.

use crate::converge::ConvergeError;
use crate::portals::Portal;
use hubspot_client::{ApiVersion, HubSpotClient};
use std::collections::BTreeSet;

/// Deals read on the new version to check their shape.
const SAMPLE_DEALS: u32 = 10;

/// Why a probe call failed: HubSpot refusing the version is a failed probe; HubSpot being
/// unavailable or out of budget stops the run like any other call.
fn refused(version: ApiVersion, what: &str, err: hubspot_client::Error) -> ConvergeError {
    if err.is_retryable() || matches!(err, hubspot_client::Error::RateLimited { .. }) {
        ConvergeError::HubSpot(err)
    } else {
        let status = err.status().map_or_else(|| "an unreadable answer".to_owned(), |s| format!("HTTP {s}"));
        ConvergeError::Probe(format!("{what} on {version} gave {status}"))
    }
}

fn names<T>(items: &[T], key: impl Fn(&T) -> String) -> BTreeSet<String> {
    items.iter().map(key).collect()
}

/// Checks that `portal` works on `version`; `Err(ConvergeError::Probe)` says why not.
pub async fn conformance(client: &HubSpotClient, portal: &Portal, version: ApiVersion) -> Result<(), ConvergeError> {
    let current = portal.token();
    let next = portal.token_for(version);
    let (_, before) = crate::observed::read(client, &current)
        .await
        .map_err(|e| refused(portal.api_version, "reading the portal", e))?;
    let (_, after) =
        crate::observed::read(client, &next).await.map_err(|e| refused(version, "reading the portal", e))?;
    let mut differences = Vec::new();
    let property_names = |o: &gtm_config::Observed| names(&o.properties, |p| p.name.clone());
    if property_names(&before) != property_names(&after) {
        differences.push("deal properties");
    }
    if names(&before.groups, |g| g.name.clone()) != names(&after.groups, |g| g.name.clone()) {
        differences.push("property groups");
    }
    let stages = |o: &gtm_config::Observed| {
        o.pipelines
            .iter()
            .flat_map(|p| p.stages.iter().map(move |s| format!("{}/{}", p.hubspot_id, s.hubspot_id)))
            .collect::<BTreeSet<_>>()
    };
    if names(&before.pipelines, |p| p.hubspot_id.clone()) != names(&after.pipelines, |p| p.hubspot_id.clone())
        || stages(&before) != stages(&after)
    {
        differences.push("pipelines and stages");
    }
    if !after.properties.iter().any(|p| p.name == "dealname") {
        differences.push("HubSpot's own deal properties (dealname missing)");
    }
    let page = client
        .list_deals(&next, &["dealname", "dealstage", "pipeline", "hs_lastmodifieddate"], None, SAMPLE_DEALS)
        .await
        .map_err(|e| refused(version, "listing deals", e))?;
    if page.results.iter().any(|d| d.id.is_empty() || d.last_modified().is_none()) {
        differences.push("deal records (id or hs_lastmodifieddate unreadable)");
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(ConvergeError::Probe(format!(
            "the portal on {version} differs from {} in: {}",
            portal.api_version,
            differences.join(", ")
        )))
    }
}
