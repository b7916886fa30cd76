//! The stage catalog: each company's pipelines and stages (labels, probabilities, which
//! are closed) as its HubSpot portal is configured, read through hubspot-sync and kept so
//! that a renamed or removed stage keeps its history.

use crate::error::Result;
use crate::funnel::{PipelineInfo, StageInfo, StageKind};
use crate::store::Store;
use gomark_platform::Caller;
use gomark_platform::grpc_client::TracedChannel;
use gomark_proto::hubspot_sync::v1 as hs;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refresh times kept before the expired ones are dropped.
const MAX_TRACKED_REFRESHES: usize = 10_000;

pub struct Catalog {
    store: Store,
    /// None when no hubspot-sync is configured (then deals' own stage ids are all there is).
    hubspot_sync: Option<HubspotSyncServiceClient<TracedChannel>>,
    refresh_every: Duration,
    last_refresh: Mutex<HashMap<String, Instant>>,
}

impl Catalog {
    pub fn new(store: Store, hubspot_sync: Option<TracedChannel>, refresh_every: Duration) -> Self {
        Self {
            store,
            hubspot_sync: hubspot_sync.map(HubspotSyncServiceClient::new),
            refresh_every,
            last_refresh: Mutex::new(HashMap::new()),
        }
    }

    /// The company's pipelines, re-read from its portal when the copy is older than the
    /// refresh interval. A portal that cannot be read leaves the stored copy in use.
    pub async fn pipelines(&self, company_id: &str) -> Result<Vec<PipelineInfo>> {
        if self.due(company_id) {
            self.refresh(company_id).await?;
        }
        self.store.pipelines(company_id).await
    }

    fn due(&self, company_id: &str) -> bool {
        let Some(_) = &self.hubspot_sync else { return false };
        let mut last = self.last_refresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.len() >= MAX_TRACKED_REFRESHES {
            // Ids asked about once (unknown ones included) must not accumulate forever.
            last.retain(|_, at| at.elapsed() < self.refresh_every);
        }
        match last.get(company_id) {
            Some(at) if at.elapsed() < self.refresh_every => false,
            _ => {
                // Marked before the call so concurrent readers do not all refresh.
                last.insert(company_id.to_owned(), Instant::now());
                true
            }
        }
    }

    async fn refresh(&self, company_id: &str) -> Result<()> {
        let Some(client) = &self.hubspot_sync else { return Ok(()) };
        let request = Caller::system("pipeline-tracker")
            .request(hs::GetObservedStateRequest { company_id: company_id.to_owned() });
        match client.clone().get_observed_state(request).await {
            Ok(observed) => {
                let pipelines: Vec<PipelineInfo> = observed.into_inner().pipelines.iter().map(pipeline_info).collect();
                self.store.replace_stages(company_id, &pipelines).await
            }
            // No portal for this id: nothing to refresh, and no fault of any portal.
            Err(status) if status.code() == tonic::Code::NotFound => {
                tracing::debug!(company_id, "no HubSpot portal for this company");
                Ok(())
            }
            Err(status) => {
                tracing::warn!(company_id, code = ?status.code(), "pipeline configuration unreadable; using the stored copy");
                Ok(())
            }
        }
    }
}

fn pipeline_info(p: &hs::ObservedPipeline) -> PipelineInfo {
    PipelineInfo {
        id: p.id.clone(),
        label: p.label.clone(),
        stages: p
            .stages
            .iter()
            .map(|s| {
                let probability = s.probability.parse::<f64>().unwrap_or(0.0).clamp(0.0, 1.0);
                StageInfo {
                    id: s.id.clone(),
                    label: s.label.clone(),
                    probability,
                    kind: StageKind::of(s.is_closed, probability),
                    display_order: s.display_order,
                    removed: false,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_stages_get_kinds_from_closed_and_probability() {
        let p = pipeline_info(&hs::ObservedPipeline {
            id: "default".into(),
            label: "Sales".into(),
            display_order: 0,
            stages: vec![
                hs::ObservedStage {
                    id: "a".into(),
                    label: "A".into(),
                    display_order: 0,
                    probability: "0.2".into(),
                    is_closed: false,
                },
                hs::ObservedStage {
                    id: "w".into(),
                    label: "W".into(),
                    display_order: 1,
                    probability: "1.0".into(),
                    is_closed: true,
                },
                hs::ObservedStage {
                    id: "l".into(),
                    label: "L".into(),
                    display_order: 2,
                    probability: "0.0".into(),
                    is_closed: true,
                },
            ],
        });
        let kinds: Vec<StageKind> = p.stages.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, vec![StageKind::Open, StageKind::Won, StageKind::Lost]);
        assert_eq!(p.stages[0].probability, 0.2);
    }
}
