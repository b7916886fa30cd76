//! The portfolio stage mapping and the currencies come from the desired-state
//! configuration: the latest revision's `baseline.portfolioStages`, `reportingCurrency`
//! and `currency`, and each overlay's `stageMapping` and `currency`. It is read when
//! a `revision.created` event arrives, with the metric definitions (`baseline.metrics`,
//! each overlay's `tags` and `coverageTarget`), which carry that revision's number; a slow check of the latest revision's number (no
//! document read unless it moved) covers replicas the event went past.

use crate::funnel::StageKind;
use crate::kpi::Definitions;
use crate::portfolio::{CanonicalStage, StageMap};
use crate::tracker::{Currencies, Tracker};
use async_trait::async_trait;
use gomark_events::EventEnvelope;
use gomark_events::consumer::{EventHandler, HandlerError};
use gomark_events::envelope::decode_payload;
use gomark_platform::grpc_client::TracedChannel;
use gomark_platform::{Caller, Shutdown};
use gomark_proto::common::v1::PageRequest;
use gomark_proto::events::v1::RevisionCreated;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use gomark_proto::orchestrator::v1::{GetRevisionRequest, ListRevisionsRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tracing::Instrument;

pub const CONSUMER: &str = "pipeline-tracker.revisions";

pub struct StageConfig {
    orchestrator: OrchestratorServiceClient<TracedChannel>,
    every: Duration,
    /// The revision the mapping in force was read from (-1: none read yet).
    loaded: AtomicI64,
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

/// The currencies a configuration document declares (validated there as ISO codes).
pub fn currencies(doc: &gtm_config::Document) -> Currencies {
    let code = |c: &str| c.parse().unwrap_or(gomark_proto::money::Currency::USD);
    let defaults = Currencies::default();
    Currencies {
        reporting: code(doc.baseline.effective_reporting_currency()),
        default: doc.baseline.currency.as_deref().map_or(defaults.default, code),
        by_company: doc
            .companies
            .values()
            .map(|o| (o.company_id.clone(), code(o.effective_currency(&doc.baseline))))
            .collect(),
    }
}

impl StageConfig {
    pub fn new(orchestrator: TracedChannel, every: Duration) -> Self {
        Self { orchestrator: OrchestratorServiceClient::new(orchestrator), every, loaded: AtomicI64::new(-1) }
    }

    /// The latest revision's number (0 when there is none).
    async fn latest_number(&self) -> Result<i64, tonic::Status> {
        let page = PageRequest { page_size: 1, page_token: String::new() };
        let request = Caller::system("pipeline-tracker").request(ListRevisionsRequest { page: Some(page) });
        let list = self.orchestrator.clone().list_revisions(request).await?.into_inner();
        Ok(list.revisions.first().map_or(0, |r| r.number))
    }

    /// Reads revision `number`'s mapping unless it is the one in force (0: the defaults).
    async fn load(&self, tracker: &Tracker, number: i64) -> Result<(), tonic::Status> {
        if number <= self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        let (map, currencies, definitions) = if number == 0 {
            (StageMap::default(), Currencies::default(), Definitions::default())
        } else {
            let request = Caller::system("pipeline-tracker").request(GetRevisionRequest { number });
            let revision = self.orchestrator.clone().get_revision(request).await?.into_inner();
            match gtm_config::Document::from_yaml(&revision.document_yaml) {
                Ok(doc) => (stage_map(&doc), currencies(&doc), crate::kpi::definitions(&doc, number)),
                Err(err) => {
                    tracing::warn!(revision = number, error = %err, "revision unreadable; keeping the portfolio stages");
                    return Ok(());
                }
            }
        };
        tracker.set_stage_map(map).await;
        tracker.set_currencies(currencies).await;
        tracker.set_definitions(definitions).await;
        self.loaded.fetch_max(number, Ordering::AcqRel);
        tracing::debug!(revision = number, "portfolio stage mapping and currencies loaded");
        Ok(())
    }

    async fn check(&self, tracker: &Tracker) -> Result<(), tonic::Status> {
        let number = self.latest_number().await?;
        self.load(tracker, number).await
    }

    /// Keeps the mapping current until shutdown: at start, on the slow check, and at once
    /// when another replica announces it loaded a newer revision.
    pub async fn run(self: Arc<Self>, tracker: Arc<Tracker>, shutdown: Shutdown) {
        let mut away = false;
        let mut announced = tracker.replicas().map(crate::replicas::Replicas::revisions);
        let mut next: Option<i64> = None;
        loop {
            let span = gomark_platform::telemetry::root_span("portfolio stages check");
            let checked = match next.take() {
                Some(number) => self.load(&tracker, number).instrument(span.clone()).await,
                None => self.check(&tracker).instrument(span.clone()).await,
            };
            span.in_scope(|| match checked {
                Ok(()) if away => {
                    tracing::info!("orchestrator reachable again; portfolio stages checked");
                    away = false;
                }
                Ok(()) => {}
                Err(status) if !away => {
                    tracing::warn!(code = ?status.code(), "orchestrator unavailable; keeping the portfolio stages");
                    away = true;
                }
                Err(_) => {}
            });
            // Until the first read succeeds, try again soon.
            let wait = if self.loaded.load(Ordering::Acquire) < 0 { Duration::from_secs(1) } else { self.every };
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(wait) => {}
                number = revision_announced(&mut announced) => next = Some(number),
            }
        }
    }
}

/// The next revision another replica announces; never, without replicas.
async fn revision_announced(announced: &mut Option<tokio::sync::watch::Receiver<i64>>) -> i64 {
    if let Some(rx) = announced
        && rx.changed().await.is_ok()
    {
        return *rx.borrow_and_update();
    }
    std::future::pending().await
}

/// Reacts to `revision.created` (one replica gets each): the new mapping is read at once,
/// and the other replicas are told to read it too.
pub struct RevisionEvents {
    pub config: Arc<StageConfig>,
    pub tracker: Arc<Tracker>,
}

#[async_trait]
impl EventHandler for RevisionEvents {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        let created: RevisionCreated = decode_payload(event).map_err(|e| HandlerError::Reject(e.to_string()))?;
        self.config
            .load(&self.tracker, created.number)
            .await
            .map_err(|s| HandlerError::Retry(s.message().to_owned()))?;
        // The event came to this replica alone: the others load the revision too.
        if let Some(replicas) = self.tracker.replicas() {
            replicas.announce_revision(created.number).await;
        }
        Ok(())
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
