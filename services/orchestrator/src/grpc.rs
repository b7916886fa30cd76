//! The orchestrator's gRPC face: checks the caller, decodes requests, calls the module that
//! owns the work, encodes replies.

use crate::companies::{Actor, Companies, company_proto, timestamp};
use crate::drift::DriftWatch;
use crate::planning::{Planner, Progress};
use crate::property_edits::{PropertyEdits, PropertyPatch};
use crate::revisions::{RevisionRow, Revisions};
use crate::rollout::{Rollouts, StartRequest};
use gomark_platform::{Caller, PublicError, Role};
use gomark_proto::common::v1::Company;
use gomark_proto::orchestrator::v1 as pb;
use gomark_proto::orchestrator::v1::orchestrator_service_server::OrchestratorService;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct OrchestratorGrpc {
    pub companies: Arc<Companies>,
    pub properties: Arc<PropertyEdits>,
    pub revisions: Arc<Revisions>,
    pub planner: Arc<Planner>,
    pub rollouts: Arc<Rollouts>,
    pub drift: Arc<DriftWatch>,
}

fn revision_proto(r: &RevisionRow, with_document: bool) -> Result<pb::Revision, Status> {
    let document_yaml = if with_document {
        r.parse()?
            .to_yaml()
            .map_err(|e| Status::from(crate::Error::from(gomark_storage::StorageError::Corrupt(e.to_string()))))?
    } else {
        String::new()
    };
    Ok(pb::Revision {
        number: r.number,
        author: r.author.clone(),
        message: r.message.clone(),
        created_at: Some(timestamp(r.created_at)),
        content_hash: r.content_hash.clone(),
        document_yaml,
        rolled_back_to: r.rolled_back_to.unwrap_or(0),
    })
}

fn page_size(requested: u32) -> i64 {
    i64::from(if requested == 0 { 50 } else { requested.min(500) })
}

/// The caller the gateway (or a peer service) vouched for; every RPC checks it against
/// the company it touches.
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    Ok(Caller::from_metadata(req.metadata())?)
}

/// A cadence delay in the whole hours the cadence counts in.
fn delay_hours(delay: Option<&gomark_proto::Duration>) -> Result<u32, Status> {
    let invalid = || Status::from(crate::Error::invalid("delay", "must be whole hours, at most 8760 (a year)"));
    let delay = delay.ok_or_else(|| Status::from(crate::Error::invalid("delay", "is required")))?;
    if delay.nanos != 0 || delay.seconds < 0 || delay.seconds % 3_600 != 0 {
        return Err(invalid());
    }
    u32::try_from(delay.seconds / 3_600).map_err(|_| invalid())
}

fn actor(caller: &Caller) -> Actor {
    Actor(caller.actor.clone())
}

/// Who plans, and what: the one authorization of Plan and PlanWithProgress.
fn plan_request(req: Request<pb::PlanRequest>) -> Result<(Actor, pb::PlanRequest), Status> {
    let caller = caller(&req)?;
    let r = req.into_inner();
    match caller.scope.company() {
        // A company-scoped caller may see the plan of its own company's stored revision only.
        Some(own) if r.company_ids.iter().all(|c| c == own) && !r.company_ids.is_empty() && r.document.is_empty() => {
            caller.require(Role::Viewer, own)?
        }
        _ => caller.require_portfolio(Role::Viewer)?,
    }
    if r.revision < 0 || r.rollback_to < 0 {
        return Err(crate::Error::invalid("revision", "revisions are numbered from 1").into());
    }
    Ok((actor(&caller), r))
}

/// Who imports, and what: the one authorization of Import and ImportWithProgress.
fn import_request(req: Request<pb::ImportRequest>) -> Result<(Actor, pb::ImportRequest), Status> {
    let caller = caller(&req)?;
    caller.require_portfolio(Role::Operator)?;
    Ok((actor(&caller), req.into_inner()))
}

impl OrchestratorGrpc {
    async fn run_import(
        &self,
        actor: &Actor,
        r: &pb::ImportRequest,
        progress: Option<&watch::Sender<Progress>>,
    ) -> Result<pb::ImportResponse, Status> {
        let importer = crate::import::Importer {
            store: self.companies.store(),
            planner: &self.planner,
            revisions: &self.revisions,
        };
        let (revision, companies) = importer.run(actor, &r.company_ids, &r.message, progress).await?;
        Ok(pb::ImportResponse { revision: Some(revision_proto(&revision, false)?), companies })
    }
}

/// The stream of a *WithProgress RPC: `work` runs in its own task, each change of the
/// progress it reports is sent as `count` of it, then its outcome. A caller that leaves
/// ends the work, as it would a unary call.
fn with_progress<M, W, F>(work: W, count: fn(pb::CompanyCount) -> M) -> ReceiverStream<Result<M, Status>>
where
    M: Send + 'static,
    W: FnOnce(watch::Sender<Progress>) -> F,
    F: Future<Output = Result<M, Status>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (progress, mut watched) = watch::channel(Progress::default());
    let work = work(progress);
    let to_message = move |p: Progress| count(pb::CompanyCount { done: p.done, total: p.total });
    tokio::spawn(async move {
        let mut work = std::pin::pin!(work);
        let mut sent = None;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                Ok(()) = watched.changed() => {
                    let count = *watched.borrow_and_update();
                    sent = Some(count);
                    if tx.send(Ok(to_message(count))).await.is_err() {
                        return;
                    }
                }
            }
        };
        // The last companies may finish in the same step as the work, which drops the
        // sender (so `changed` no longer fires): their count goes first, read as it is.
        let last = *watched.borrow();
        if outcome.is_ok() && sent != Some(last) {
            let _ = tx.send(Ok(to_message(last))).await;
        }
        let _ = tx.send(outcome).await;
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    async fn create_company(&self, req: Request<pb::CreateCompanyRequest>) -> Result<Response<Company>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Admin)?;
        let r = req.into_inner();
        let kind = gomark_proto::common::v1::TokenKind::try_from(r.hubspot_token_kind)
            .map_err(|_| PublicError::invalid("hubspotTokenKind", "is not a known kind"))?;
        let access = crate::companies::HubSpotAccess { token: r.hubspot_token, kind, journal: r.hubspot_journal };
        let company =
            self.companies.create_company_with(&actor(&caller), &r.name, &r.hubspot_portal_id, &access).await?;
        Ok(Response::new(company_proto(&company)))
    }

    async fn get_company(&self, req: Request<pb::GetCompanyRequest>) -> Result<Response<Company>, Status> {
        let caller = caller(&req)?;
        let company_id = req.into_inner().company_id;
        caller.require(Role::Viewer, &company_id)?;
        let company = self.companies.get_company(&company_id).await?;
        Ok(Response::new(company_proto(&company)))
    }

    async fn list_companies(
        &self,
        req: Request<pb::ListCompaniesRequest>,
    ) -> Result<Response<pb::ListCompaniesResponse>, Status> {
        let caller = caller(&req)?;
        caller.require_role(Role::Viewer)?;
        let page = req.into_inner().page.unwrap_or_default();
        if let Some(own) = caller.scope.company() {
            // A company-scoped caller's portfolio is its one company.
            let company = self.companies.get_company(own).await?;
            return Ok(Response::new(pb::ListCompaniesResponse {
                companies: vec![company_proto(&company)],
                next_page_token: String::new(),
            }));
        }
        let (companies, next) = self.companies.list_companies(page.page_size, &page.page_token).await?;
        Ok(Response::new(pb::ListCompaniesResponse {
            companies: companies.iter().map(company_proto).collect(),
            next_page_token: next,
        }))
    }

    async fn list_deal_properties(
        &self,
        req: Request<pb::ListDealPropertiesRequest>,
    ) -> Result<Response<pb::ListDealPropertiesResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Viewer, &r.company_id)?;
        let properties = self.properties.list(&r.company_id, r.include_archived).await?;
        Ok(Response::new(pb::ListDealPropertiesResponse { properties }))
    }

    async fn get_deal_property(
        &self,
        req: Request<pb::GetDealPropertyRequest>,
    ) -> Result<Response<pb::DealProperty>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Viewer, &r.company_id)?;
        Ok(Response::new(self.properties.get(&r.company_id, &r.name).await?))
    }

    async fn create_deal_property(
        &self,
        req: Request<pb::CreateDealPropertyRequest>,
    ) -> Result<Response<pb::DealProperty>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Operator, &r.company_id)?;
        let spec = r.spec.ok_or_else(|| Status::from(crate::Error::invalid("spec", "is required")))?;
        Ok(Response::new(self.properties.create(&actor(&caller), &r.company_id, spec).await?))
    }

    async fn update_deal_property(
        &self,
        req: Request<pb::UpdateDealPropertyRequest>,
    ) -> Result<Response<pb::DealProperty>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Operator, &r.company_id)?;
        let patch = PropertyPatch {
            label: r.label,
            kind: r.r#type,
            field_type: r.field_type,
            group_name: r.group_name,
            description: r.description,
            options: r.replace_options.then_some(r.options),
            if_match: r.if_match,
        };
        Ok(Response::new(self.properties.update(&actor(&caller), &r.company_id, &r.name, patch).await?))
    }

    async fn archive_deal_property(
        &self,
        req: Request<pb::ArchiveDealPropertyRequest>,
    ) -> Result<Response<pb::DealProperty>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Operator, &r.company_id)?;
        Ok(Response::new(self.properties.archive(&actor(&caller), &r.company_id, &r.name).await?))
    }

    async fn list_audit_entries(
        &self,
        req: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        if r.company_id == crate::revisions::PORTFOLIO {
            caller.require_portfolio(Role::Viewer)?;
        } else {
            caller.require(Role::Viewer, &r.company_id)?;
        }
        let page = r.page.unwrap_or_default();
        let filter = crate::store::AuditFilter {
            actor: r.actor.clone(),
            from_ms: gomark_proto::time::millis_opt(r.from.as_ref()),
            to_ms: gomark_proto::time::millis_opt(r.to.as_ref()),
            resource_prefix: r.resource_prefix.clone(),
            action: r.action.clone(),
        };
        let (entries, next) =
            self.companies.list_audit(&r.company_id, &filter, page.page_size, &page.page_token).await?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    id: e.id,
                    company_id: e.company_id,
                    actor: e.actor,
                    action: e.action,
                    resource: e.resource,
                    at: Some(timestamp(e.at)),
                    before: e.before.as_ref().map(gomark_proto::json::to_value),
                    after: e.after.as_ref().map(gomark_proto::json::to_value),
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn create_revision(&self, req: Request<pb::CreateRevisionRequest>) -> Result<Response<pb::Revision>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        let r = req.into_inner();
        let document = self.revisions.accept(&r.document).await?;
        let revision = self.revisions.create(&actor(&caller), &document, &r.message, r.expected_latest, None).await?;
        Ok(Response::new(revision_proto(&revision, true)?))
    }

    async fn list_revisions(
        &self,
        req: Request<pb::ListRevisionsRequest>,
    ) -> Result<Response<pb::ListRevisionsResponse>, Status> {
        caller(&req)?.require_portfolio(Role::Viewer)?;
        let page = req.into_inner().page.unwrap_or_default();
        let before = match page.page_token.as_str() {
            "" => None,
            t => Some(
                t.parse::<i64>()
                    .map_err(|_| Status::from(crate::Error::invalid("page_token", "is not a token this API issued")))?,
            ),
        };
        let limit = page_size(page.page_size);
        let rows = self.revisions.list(before, limit).await?;
        let next = if rows.len() as i64 == limit {
            rows.last().map(|r| r.number.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRevisionsResponse {
            revisions: rows.iter().map(|r| revision_proto(r, false)).collect::<Result<_, _>>()?,
            next_page_token: next,
        }))
    }

    async fn get_revision(&self, req: Request<pb::GetRevisionRequest>) -> Result<Response<pb::Revision>, Status> {
        caller(&req)?.require_portfolio(Role::Viewer)?;
        let revision = self.revisions.get(req.into_inner().number).await?;
        Ok(Response::new(revision_proto(&revision, true)?))
    }

    async fn diff_revisions(
        &self,
        req: Request<pb::DiffRevisionsRequest>,
    ) -> Result<Response<pb::RevisionDiff>, Status> {
        caller(&req)?.require_portfolio(Role::Viewer)?;
        let r = req.into_inner();
        let from = self.revisions.get(r.from.max(1)).await?;
        let to = self.revisions.get(r.to).await?;
        let diff = gtm_config::diff(&from.parse()?, &to.parse()?);
        Ok(Response::new(pb::RevisionDiff {
            from: from.number,
            to: to.number,
            changes: diff
                .changes
                .iter()
                .map(|c| pb::ConfigChange {
                    path: c.path.clone(),
                    kind: format!("{:?}", c.kind).to_lowercase(),
                    before: c.before.as_ref().map(gomark_proto::json::to_value),
                    after: c.after.as_ref().map(gomark_proto::json::to_value),
                })
                .collect(),
            text: diff.to_string(),
        }))
    }

    async fn rollback(&self, req: Request<pb::RollbackRequest>) -> Result<Response<pb::Revision>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        let r = req.into_inner();
        if r.to < 1 {
            return Err(crate::Error::invalid("to", "must name an existing revision").into());
        }
        let target = self.revisions.get(r.to).await?;
        let message =
            if r.message.trim().is_empty() { format!("roll back to revision {}", target.number) } else { r.message };
        let revision =
            self.revisions.create(&actor(&caller), &target.parse()?, &message, None, Some(target.number)).await?;
        Ok(Response::new(revision_proto(&revision, true)?))
    }

    async fn plan(&self, req: Request<pb::PlanRequest>) -> Result<Response<pb::PlanResponse>, Status> {
        let (actor, r) = plan_request(req)?;
        Ok(Response::new(self.planner.plan(&actor, &r, None).await?))
    }

    type PlanWithProgressStream = ReceiverStream<Result<pb::PlanProgress, Status>>;

    async fn plan_with_progress(
        &self,
        req: Request<pb::PlanRequest>,
    ) -> Result<Response<Self::PlanWithProgressStream>, Status> {
        use pb::plan_progress::Update;
        let (actor, r) = plan_request(req)?;
        let planner = self.planner.clone();
        let work = |progress: watch::Sender<Progress>| async move {
            let plan = planner.plan(&actor, &r, Some(&progress)).await?;
            Ok(pb::PlanProgress { update: Some(Update::Plan(plan)) })
        };
        let count = |c| pb::PlanProgress { update: Some(Update::Progress(c)) };
        Ok(Response::new(with_progress(work, count)))
    }

    async fn get_plan(&self, req: Request<pb::GetPlanRequest>) -> Result<Response<pb::PlanResponse>, Status> {
        caller(&req)?.require_portfolio(Role::Viewer)?;
        Ok(Response::new(self.planner.get(&req.into_inner().plan_id).await?))
    }

    async fn apply_plan(&self, req: Request<pb::ApplyPlanRequest>) -> Result<Response<pb::ApplyPlanResponse>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        let r = req.into_inner();
        let (revision, rollout) = self.planner.apply(&actor(&caller), &self.rollouts, &r).await?;
        Ok(Response::new(pb::ApplyPlanResponse {
            revision: Some(revision_proto(&revision, false)?),
            rollout: Some(rollout),
        }))
    }

    async fn import(&self, req: Request<pb::ImportRequest>) -> Result<Response<pb::ImportResponse>, Status> {
        let (actor, r) = import_request(req)?;
        Ok(Response::new(self.run_import(&actor, &r, None).await?))
    }

    type ImportWithProgressStream = ReceiverStream<Result<pb::ImportProgress, Status>>;

    async fn import_with_progress(
        &self,
        req: Request<pb::ImportRequest>,
    ) -> Result<Response<Self::ImportWithProgressStream>, Status> {
        use pb::import_progress::Update;
        let (actor, r) = import_request(req)?;
        let this = self.clone();
        let work = |progress: watch::Sender<Progress>| async move {
            let imported = this.run_import(&actor, &r, Some(&progress)).await?;
            Ok(pb::ImportProgress { update: Some(Update::Imported(imported)) })
        };
        let count = |c| pb::ImportProgress { update: Some(Update::Progress(c)) };
        Ok(Response::new(with_progress(work, count)))
    }

    async fn start_rollout(&self, req: Request<pb::StartRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        let r = req.into_inner();
        let start = StartRequest {
            revision: r.revision,
            company_ids: r.company_ids,
            concurrency: r.concurrency,
            failure_threshold_pct: r.failure_threshold_pct,
            ..StartRequest::default()
        };
        Ok(Response::new(self.rollouts.start(&actor(&caller), start).await?))
    }

    async fn get_rollout(&self, req: Request<pb::GetRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        caller(&req)?.require_portfolio(Role::Viewer)?;
        Ok(Response::new(self.rollouts.get(&req.into_inner().id).await?))
    }

    async fn list_rollouts(
        &self,
        req: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        caller(&req)?.require_portfolio(Role::Viewer)?;
        let page = req.into_inner().page.unwrap_or_default();
        let limit = page_size(page.page_size);
        let before = (!page.page_token.is_empty()).then_some(page.page_token.as_str());
        let rollouts = self.rollouts.list(before, limit).await?;
        let next = if rollouts.len() as i64 == limit {
            rollouts.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRolloutsResponse { rollouts, next_page_token: next }))
    }

    async fn pause_rollout(&self, req: Request<pb::RolloutRef>) -> Result<Response<pb::Rollout>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        Ok(Response::new(self.rollouts.control(&actor(&caller), &req.into_inner().id, "paused").await?))
    }

    async fn resume_rollout(&self, req: Request<pb::RolloutRef>) -> Result<Response<pb::Rollout>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        Ok(Response::new(self.rollouts.control(&actor(&caller), &req.into_inner().id, "running").await?))
    }

    async fn cancel_rollout(&self, req: Request<pb::RolloutRef>) -> Result<Response<pb::Rollout>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        Ok(Response::new(self.rollouts.control(&actor(&caller), &req.into_inner().id, "cancelled").await?))
    }

    async fn check_drift(
        &self,
        req: Request<pb::CheckDriftRequest>,
    ) -> Result<Response<pb::CheckDriftResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        match (caller.scope.company(), r.company_ids.as_slice()) {
            // A company-scoped caller may check its own company (another one is not found).
            (Some(_), [one]) => caller.require(Role::Operator, one)?,
            _ => caller.require_portfolio(Role::Operator)?,
        }
        let (checked, drifted) = self.drift.check(&r.company_ids).await?;
        Ok(Response::new(pb::CheckDriftResponse { checked, drifted }))
    }

    async fn modify_upsell_cadence(
        &self,
        req: Request<pb::ModifyUpsellCadenceRequest>,
    ) -> Result<Response<pb::ModifyUpsellCadenceResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        if r.company_id.is_empty() {
            return Err(crate::Error::invalid("company_id", "is required").into());
        }
        // A company's operator may make this one change for its own company, even though
        // it lands in a portfolio revision.
        caller.require(Role::Operator, &r.company_id)?;
        let change = crate::outreach::modify_upsell_cadence(
            &self.revisions,
            &self.rollouts,
            &actor(&caller),
            &r.company_id,
            &r.template,
            delay_hours(r.delay.as_ref())?,
        )
        .await?;
        Ok(Response::new(pb::ModifyUpsellCadenceResponse {
            revision: change.revision,
            rollout_id: change.rollout_id,
            cadence_key: change.cadence_key,
        }))
    }

    async fn list_drift(&self, req: Request<pb::ListDriftRequest>) -> Result<Response<pb::ListDriftResponse>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        if r.company_id.is_empty() {
            caller.require_portfolio(Role::Viewer)?;
        } else {
            caller.require(Role::Viewer, &r.company_id)?;
        }
        let page = r.page.unwrap_or_default();
        let limit = page_size(page.page_size);
        let before = (!page.page_token.is_empty()).then_some(page.page_token.as_str());
        let records = self.drift.list(&r.company_id, before, limit).await?;
        let next = if records.len() as i64 == limit {
            records.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDriftResponse { records, next_page_token: next }))
    }
}
