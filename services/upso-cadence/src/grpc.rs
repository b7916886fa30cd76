//! The gRPC API. Every call checks the caller's role and company scope here too, not only
//! at the gateway.

use crate::cadences::Cadences;
use crate::engine::{Engine, RunReport};
use crate::outreach::OutreachVendor;
use crate::portfolio::{Suppression, SuppressionKind, person};
use crate::store::{OutreachConfig, Store};
use crate::{Error, Result};
use gomark_platform::token::check_bearer_token;
use gomark_platform::{Caller, PublicError, Role};
use gomark_proto::upso_cadence::v1 as pb;
use gomark_proto::upso_cadence::v1::upso_cadence_service_server::UpsoCadenceService;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use upso_client::UpsoToken;

pub struct UpsoCadenceGrpc {
    pub store: Store,
    pub vendor: Arc<dyn OutreachVendor>,
    pub cadences: Cadences,
    pub engine: Engine,
}

fn report_proto(company_id: &str, r: RunReport) -> pb::EngineReport {
    pb::EngineReport {
        company_id: company_id.to_owned(),
        dry_run: r.dry_run,
        scored: r.scored,
        enrolled: r.enrolled,
        skipped: r.skipped,
        candidates: r
            .candidates
            .into_iter()
            .map(|c| pb::Candidate {
                customer_email: c.email,
                deal_id: c.deal_id,
                score: c.score,
                reasons: c
                    .reasons
                    .into_iter()
                    .map(|(criterion, points)| pb::ScoreReason { criterion, points })
                    .collect(),
                decision: if c.skip.is_none() { "enroll".into() } else { "skip".into() },
                skip_reason: c.skip.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                detail: c.detail,
                caused_by_company: c.caused_by,
            })
            .collect(),
        note: r.note,
    }
}

impl UpsoCadenceGrpc {
    async fn plan(&self, company_id: &str, desired: &OutreachConfig) -> Result<pb::CadencePlan> {
        let actions = self.cadences.plan(company_id, desired).await?;
        Ok(pb::CadencePlan {
            company_id: company_id.to_owned(),
            text: actions.iter().map(|a| format!("{a}\n")).collect(),
            actions: actions.into_iter().map(|a| action_proto(&a)).collect(),
        })
    }
}

fn suppression_proto(s: Suppression) -> pb::Suppression {
    pb::Suppression {
        person: s.person,
        kind: s.kind.as_str().to_owned(),
        source_company_id: s.source_company_id,
        reason: s.reason,
        actor: s.actor,
        created_at: Some(gomark_proto::time::timestamp(s.created_at)),
    }
}

/// The person an email in a request denotes.
fn requested_person(email: &str) -> std::result::Result<String, PublicError> {
    let email = email.trim();
    if email.len() > 320 || email.chars().any(char::is_control) || !email.contains('@') || email.ends_with('@') {
        return Err(PublicError::invalid("email", "must be an email address"));
    }
    Ok(person(email))
}

fn action_proto(a: &crate::cadences::CadenceAction) -> pb::CadenceAction {
    pb::CadenceAction {
        id: a.id(),
        cadence_key: a.key.clone(),
        op: a.op.as_str().to_owned(),
        fields: a.fields.iter().map(|f| (*f).to_owned()).collect(),
        edited_in_upso: a.edited_in_upso,
    }
}

#[tonic::async_trait]
impl UpsoCadenceService for UpsoCadenceGrpc {
    async fn register_account(
        &self,
        req: Request<pb::RegisterAccountRequest>,
    ) -> std::result::Result<Response<pb::RegisterAccountResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require_company(Role::Admin, &r.company_id)?;
        check_bearer_token("upso_token", &r.upso_token)?;
        let token = UpsoToken::new(r.upso_token).for_account(r.company_id.clone());
        // Checking the token first means a typo is refused now, not at the first apply.
        let account_id = self.vendor.account_id(&token).await.map_err(|e| match e {
            Error::Upso(upso_client::Error::Unauthorized) => {
                Status::from(PublicError::invalid("upso_token", "Upso refused this token"))
            }
            other => other.into(),
        })?;
        // One company per Upso account (a unique index backs this check against races).
        if let Some(holder) = self.store.company_of_account(&account_id).await?.filter(|h| *h != r.company_id) {
            return Err(caller.already_bound(&format!("Upso account {account_id}"), Some(&holder)).into());
        }
        self.store.save_account(&r.company_id, &account_id, &token).await.map_err(|err| match err {
            Error::Storage(gomark_storage::StorageError::Query(e)) if gomark_storage::is_unique_violation(&e) => {
                Status::from(caller.already_bound(&format!("Upso account {account_id}"), None))
            }
            other => other.into(),
        })?;
        tracing::info!(company_id = %r.company_id, upso_account_id = %account_id, "upso account registered");
        Ok(Response::new(pb::RegisterAccountResponse { upso_account_id: account_id }))
    }

    async fn plan_cadences(
        &self,
        req: Request<pb::PlanCadencesRequest>,
    ) -> std::result::Result<Response<pb::CadencePlan>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require_company(Role::Viewer, &r.company_id)?;
        let desired = OutreachConfig::from_proto(&r.company_id, r.desired)?;
        Ok(Response::new(self.plan(&r.company_id, &desired).await?))
    }

    async fn apply_cadences(
        &self,
        req: Request<pb::ApplyCadencesRequest>,
    ) -> std::result::Result<Response<pb::ApplyCadencesResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require_company(Role::Operator, &r.company_id)?;
        let desired = OutreachConfig::from_proto(&r.company_id, r.desired)?;
        let approved: Option<std::collections::BTreeSet<String>> =
            r.saved_plan.then(|| r.approved_action_ids.into_iter().collect());
        let applied = self.cadences.apply(&r.company_id, &desired, r.revision, approved.as_ref()).await?;
        Ok(Response::new(pb::ApplyCadencesResponse {
            created: applied.created,
            updated: applied.updated,
            archived: applied.archived,
            performed: applied.performed.iter().map(action_proto).collect(),
        }))
    }

    async fn dry_run(
        &self,
        req: Request<pb::EngineRequest>,
    ) -> std::result::Result<Response<pb::EngineReport>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require_company(Role::Viewer, &r.company_id)?;
        let report = self.engine.run(&r.company_id, true, gomark_storage::now_ms()).await?;
        Ok(Response::new(report_proto(&r.company_id, report)))
    }

    async fn run_engine(
        &self,
        req: Request<pb::EngineRequest>,
    ) -> std::result::Result<Response<pb::EngineReport>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require_company(Role::Operator, &r.company_id)?;
        let report = self.engine.run(&r.company_id, false, gomark_storage::now_ms()).await?;
        Ok(Response::new(report_proto(&r.company_id, report)))
    }

    async fn list_decisions(
        &self,
        req: Request<pb::ListDecisionsRequest>,
    ) -> std::result::Result<Response<pb::ListDecisionsResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        caller.require_company(Role::Viewer, &r.company_id)?;
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) };
        let rows = self.store.list_decisions(&r.company_id, i64::from(limit)).await?;
        Ok(Response::new(pb::ListDecisionsResponse {
            decisions: rows
                .into_iter()
                .map(|d| pb::Decision {
                    id: d.id,
                    company_id: d.company_id,
                    rule_key: d.rule_key,
                    customer_email: d.email,
                    deal_id: d.deal_id,
                    score: d.score,
                    decision: d.decision,
                    skip_reason: d.skip_reason,
                    detail: d.detail,
                    upso_enrollment_id: d.upso_enrollment_id,
                    decided_at: Some(gomark_proto::time::timestamp(d.decided_at)),
                    reasons: d
                        .reasons
                        .into_iter()
                        .map(|(criterion, points)| pb::ScoreReason { criterion, points })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn add_suppression(
        &self,
        req: Request<pb::AddSuppressionRequest>,
    ) -> std::result::Result<Response<pb::AddSuppressionResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        // A company may suppress its own customer for everyone; otherwise a portfolio grant.
        if r.company_id.is_empty() {
            caller.require_portfolio(Role::Operator)?;
        } else {
            caller.require_company(Role::Operator, &r.company_id)?;
        }
        let who = requested_person(&r.email)?;
        let kind = SuppressionKind::parse(&r.kind)
            .ok_or_else(|| PublicError::invalid("kind", "one of opt_out, do_not_contact, legal_hold"))?;
        if r.reason.len() > 500 || r.reason.chars().any(char::is_control) {
            return Err(PublicError::invalid("reason", "at most 500 characters, one line").into());
        }
        let entry = Suppression {
            person: who.clone(),
            kind,
            source_company_id: r.company_id,
            reason: r.reason,
            actor: caller.actor.clone(),
            created_at: gomark_storage::now_ms(),
        };
        let added = self.store.suppress(&entry).await?;
        let current = self.store.suppressions().await?.remove(&who).unwrap_or(entry);
        Ok(Response::new(pb::AddSuppressionResponse { suppression: Some(suppression_proto(current)), added }))
    }

    async fn remove_suppression(
        &self,
        req: Request<pb::RemoveSuppressionRequest>,
    ) -> std::result::Result<Response<pb::RemoveSuppressionResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        let r = req.into_inner();
        let who = requested_person(&r.email)?;
        // Lifting a legal hold is an admin's call; anything else a portfolio operator's.
        let held = self.store.suppressions().await?.get(&who).is_some_and(|s| s.kind == SuppressionKind::LegalHold);
        caller.require_portfolio(if held { Role::Admin } else { Role::Operator })?;
        let removed = self.store.unsuppress(&who, &caller.actor).await?;
        Ok(Response::new(pb::RemoveSuppressionResponse { removed }))
    }

    async fn list_suppressions(
        &self,
        req: Request<pb::ListSuppressionsRequest>,
    ) -> std::result::Result<Response<pb::ListSuppressionsResponse>, Status> {
        let caller = Caller::from_metadata(req.metadata())?;
        caller.require_portfolio(Role::Viewer)?;
        let mut all: Vec<Suppression> = self.store.suppressions().await?.into_values().collect();
        all.sort_by(|a, b| a.person.cmp(&b.person));
        Ok(Response::new(pb::ListSuppressionsResponse {
            suppressions: all.into_iter().map(suppression_proto).collect(),
        }))
    }
}
