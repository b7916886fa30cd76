//! The portfolio stage mapping comes from the desired-state configuration: the latest
//! revision's `baseline.portfolioStages` and each overlay's `stageMapping`, re-read
//! periodically from the orchestrator.

use crate::funnel::StageKind;
use crate::portfolio::{CanonicalStage, StageMap};
use crate::tracker::Tracker;
use gomark_platform::grpc_client::TracedChannel;
use gomark_platform::{Caller, Shutdown};
use gomark_proto::orchestrator::v1::GetRevisionRequest;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use std::sync::Arc;
use std::time::Duration;

pub struct StageConfig {
    orchestrator: OrchestratorServiceClient<TracedChannel>,
    every: Duration,
}

fn kind(k: gtm_config::StageKind) -> StageKind {
    match k {
        gtm_config::StageKind::Open => StageKind::Open,
        gtm_config::StageKind::Won => StageKind::Won,
        gtm_config::StageKind::Lost => StageKind::Lost,
    }
}

/// The mapping a configuration document declares.
pub fn stage_map(doc: &gtm_config::Document) -> StageMap {
    StageMap {
        canonical: doc
            .baseline
            .effective_portfolio_stages()
            .into_iter()
            .map(|s| CanonicalStage { id: s.id, label: s.label, probability: s.probability, kind: kind(s.kind) })
            .collect(),
        explicit: doc
            .companies
            .values()
            .flat_map(|o| {
                o.stage_mapping.iter().map(|(stage, target)| ((o.company_id.clone(), stage.clone()), target.clone()))
            })
            .collect(),
    }
}

impl StageConfig {
    pub fn new(orchestrator: TracedChannel, every: Duration) -> Self {
        Self { orchestrator: OrchestratorServiceClient::new(orchestrator), every }
    }

    /// The latest revision's mapping; `None` when it cannot be read now. No revision at
    /// all means the defaults.
    async fn read(&self) -> Option<StageMap> {
        let request = Caller::system("pipeline-tracker").request(GetRevisionRequest { number: 0 });
        match self.orchestrator.clone().get_revision(request).await {
            Ok(revision) => match gtm_config::Document::from_yaml(&revision.into_inner().document_yaml) {
                Ok(doc) => Some(stage_map(&doc)),
                Err(err) => {
                    tracing::warn!(error = %err, "latest revision unreadable; keeping the portfolio stages");
                    None
                }
            },
            Err(status) if status.code() == tonic::Code::NotFound => Some(StageMap::default()),
            Err(status) => {
                tracing::debug!(code = ?status.code(), "orchestrator unavailable; keeping the portfolio stages");
                None
            }
        }
    }

    pub async fn run(self, tracker: Arc<Tracker>, shutdown: Shutdown) {
        loop {
            if let Some(map) = self.read().await {
                tracker.set_stage_map(map).await;
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_declares_stages_and_mappings() {
        let doc = gtm_config::Document::from_yaml(
            r#"
baseline:
  portfolioStages:
    - {id: pipeline, label: Pipeline, probability: 0.5, kind: open}
    - {id: won, label: Won, probability: 1.0, kind: won}
    - {id: lost, label: Lost, probability: 0.0, kind: lost}
companies:
  acme: {companyId: c-1, stageMapping: {contractsent: won}}
"#,
        )
        .expect("parses");
        let map = stage_map(&doc);
        assert_eq!(map.canonical.len(), 3);
        assert_eq!(map.explicit.get(&("c-1".to_owned(), "contractsent".to_owned())).map(String::as_str), Some("won"));
        assert_eq!(stage_map(&gtm_config::Document::default()), StageMap::default());
    }
}
