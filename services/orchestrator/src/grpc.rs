//! The orchestrator's gRPC face: decodes requests, calls [`DesiredState`], encodes replies.

use crate::desired::{Actor, DesiredState, PropertyPatch, company_proto, timestamp};
use crate::drift::DriftWatch;
use crate::planning::Planner;
use crate::property_spec::{PropertyOptionSpec, PropertySpec};
use crate::revisions::{RevisionRow, Revisions};
use crate::rollout::Rollouts;
use crate::store::{PropertyRow, SyncState};
use gomark_platform::{Caller, Role};
use gomark_proto::common::v1::Company;
use gomark_proto::orchestrator::v1 as pb;
use gomark_proto::orchestrator::v1::orchestrator_service_server::OrchestratorService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct OrchestratorGrpc {
    desired: Arc<DesiredState>,
    revisions: Arc<Revisions>,
    planner: Arc<Planner>,
    rollouts: Arc<Rollouts>,
    drift: Arc<DriftWatch>,
}

impl OrchestratorGrpc {
    pub fn new(
        desired: Arc<DesiredState>,
        revisions: Arc<Revisions>,
        planner: Arc<Planner>,
        rollouts: Arc<Rollouts>,
        drift: Arc<DriftWatch>,
    ) -> Self {
        Self { desired, revisions, planner, rollouts, drift }
    }
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

fn actor(caller: &Caller) -> Actor {
    Actor(caller.actor.clone())
}

fn property_proto(row: PropertyRow) -> pb::DealProperty {
    pb::DealProperty {
        company_id: row.company_id,
        spec: Some(row.spec.to_proto()),
        archived: row.archived,
        version: row.version,
        sync_state: match row.sync_state {
            SyncState::Pending => pb::SyncState::Pending,
            SyncState::Applied => pb::SyncState::Applied,
            SyncState::Failed => pb::SyncState::Failed,
        } as i32,
        sync_error: row.sync_error,
        updated_at: Some(timestamp(row.updated_at)),
    }
}

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    async fn create_company(&self, req: Request<pb::CreateCompanyRequest>) -> Result<Response<Company>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Admin)?;
        let r = req.into_inner();
        let company =
            self.desired.create_company(&actor(&caller), &r.name, &r.hubspot_portal_id, &r.hubspot_token).await?;
        Ok(Response::new(company_proto(&company)))
    }

    async fn get_company(&self, req: Request<pb::GetCompanyRequest>) -> Result<Response<Company>, Status> {
        let caller = caller(&req)?;
        let company_id = req.into_inner().company_id;
        caller.require(Role::Viewer, &company_id)?;
        let company = self.desired.get_company(&company_id).await?;
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
            let company = self.desired.get_company(own).await?;
            return Ok(Response::new(pb::ListCompaniesResponse {
                companies: vec![company_proto(&company)],
                next_page_token: String::new(),
            }));
        }
        let (companies, next) = self.desired.list_companies(page.page_size, &page.page_token).await?;
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
        let rows = self.desired.list_properties(&r.company_id, r.include_archived).await?;
        Ok(Response::new(pb::ListDealPropertiesResponse { properties: rows.into_iter().map(property_proto).collect() }))
    }

    async fn get_deal_property(
        &self,
        req: Request<pb::GetDealPropertyRequest>,
    ) -> Result<Response<pb::DealProperty>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Viewer, &r.company_id)?;
        Ok(Response::new(property_proto(self.desired.get_property(&r.company_id, &r.name).await?)))
    }

    async fn create_deal_property(
        &self,
        req: Request<pb::CreateDealPropertyRequest>,
    ) -> Result<Response<pb::DealProperty>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Operator, &r.company_id)?;
        let actor = actor(&caller);
        let spec = PropertySpec::from_proto(r.spec.ok_or_else(|| Status::invalid_argument("spec: is required"))?);
        Ok(Response::new(property_proto(self.desired.create_property(&actor, &r.company_id, spec).await?)))
    }

    async fn update_deal_property(
        &self,
        req: Request<pb::UpdateDealPropertyRequest>,
    ) -> Result<Response<pb::DealProperty>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Operator, &r.company_id)?;
        let actor = actor(&caller);
        let patch = PropertyPatch {
            label: r.label,
            kind: r.r#type,
            field_type: r.field_type,
            group_name: r.group_name,
            description: r.description,
            options: r.replace_options.then(|| r.options.into_iter().map(PropertyOptionSpec::from_proto).collect()),
        };
        let row = self.desired.update_property(&actor, &r.company_id, &r.name, patch, r.expected_version).await?;
        Ok(Response::new(property_proto(row)))
    }

    async fn archive_deal_property(
        &self,
        req: Request<pb::ArchiveDealPropertyRequest>,
    ) -> Result<Response<pb::DealProperty>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        caller.require(Role::Operator, &r.company_id)?;
        let actor = actor(&caller);
        Ok(Response::new(property_proto(self.desired.archive_property(&actor, &r.company_id, &r.name).await?)))
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
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            resource_prefix: r.resource_prefix.clone(),
        };
        let (entries, next) = self.desired.list_audit(&r.company_id, &filter, page.page_size, &page.page_token).await?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    id: e.id,
                    company_id: e.company_id,
                    actor: e.actor,
                    action: e.action,
                    resource: e.resource,
                    before_json: e.before_json,
                    after_json: e.after_json,
                    at: Some(timestamp(e.at)),
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
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
        Ok(Response::new(pb::RevisionDiff {
            from: from.number,
            to: to.number,
            changes: diff
                .changes
                .iter()
                .map(|c| pb::ConfigChange {
                    path: c.path.clone(),
                    kind: format!("{:?}", c.kind).to_lowercase(),
                    before_json: json(&c.before),
                    after_json: json(&c.after),
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
        let caller = caller(&req)?;
        let r = req.into_inner();
        match caller.scope.company() {
            // A company-scoped caller may see the plan of its own company only.
            Some(own) if r.company_ids.iter().all(|c| c == own) && !r.company_ids.is_empty() => {
                caller.require(Role::Viewer, own)?
            }
            _ => caller.require_portfolio(Role::Viewer)?,
        }
        let revision = self.revisions.get(r.revision).await?;
        Ok(Response::new(self.planner.plan(&revision, &r.company_ids).await?))
    }

    async fn import(&self, req: Request<pb::ImportRequest>) -> Result<Response<pb::ImportResponse>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        let r = req.into_inner();
        let importer =
            crate::import::Importer { store: self.desired.store(), planner: &self.planner, revisions: &self.revisions };
        let (revision, companies) = importer.run(&actor(&caller), &r.company_ids, &r.message).await?;
        Ok(Response::new(pb::ImportResponse { revision: Some(revision_proto(&revision, false)?), companies }))
    }

    async fn start_rollout(&self, req: Request<pb::StartRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        let caller = caller(&req)?;
        caller.require_portfolio(Role::Operator)?;
        Ok(Response::new(self.rollouts.start(&actor(&caller), req.into_inner()).await?))
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
            r.delay_hours,
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
