//! Companies and their audit log. A company is registered with its HubSpot portal (the
//! token goes to hubspot-sync) and announced by a `company.created` event, written with its
//! audit entry in one transaction.

use crate::store::{AuditFilter, AuditRecord, AuditRow, CompanyRow, Store};
use crate::{Error, Result};
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_events::relay::RelayWaker;
use gomark_platform::grpc_client::TracedChannel;
use gomark_platform::token::check_bearer_token;
use gomark_platform::{Caller, ErrorKind, PublicError};
use gomark_proto::common::v1::{ClientCredentials, TokenKind};
use gomark_proto::events::v1::CompanyCreated;
use gomark_proto::hubspot_sync::v1::RegisterPortalRequest;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient;
use serde_json::json;

/// How GoMark reaches a company's portal; handed to hubspot-sync, never stored here.
#[derive(Clone)]
pub struct HubSpotAccess {
    pub token: String,
    pub kind: TokenKind,
    pub journal: Option<ClientCredentials>,
}

impl HubSpotAccess {
    /// A private-app token, nothing else.
    pub fn token(token: &str) -> Self {
        Self { token: token.to_owned(), kind: TokenKind::PrivateApp, journal: None }
    }
}

/// Who is making a change, as the audit log will name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub struct Companies {
    store: Store,
    hubspot_sync: HubspotSyncServiceClient<TracedChannel>,
    relay: RelayWaker,
}

fn page_size(requested: u32) -> i64 {
    i64::from(if requested == 0 { DEFAULT_PAGE } else { requested.min(MAX_PAGE) })
}

impl Companies {
    pub fn new(store: Store, hubspot_sync: TracedChannel, relay: RelayWaker) -> Self {
        Self { store, hubspot_sync: HubspotSyncServiceClient::new(hubspot_sync), relay }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn create_company(&self, actor: &Actor, name: &str, portal_id: &str, token: &str) -> Result<CompanyRow> {
        self.create_company_with(actor, name, portal_id, &HubSpotAccess::token(token)).await
    }

    /// [`Self::create_company`] with the portal's full HubSpot access: the kind of token, and
    /// optionally the client credentials its webhooks journal is read with.
    pub async fn create_company_with(
        &self,
        actor: &Actor,
        name: &str,
        portal_id: &str,
        access: &HubSpotAccess,
    ) -> Result<CompanyRow> {
        let token = access.token.as_str();
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid("name", "must not contain control characters"));
        }
        if portal_id.is_empty() || portal_id.len() > 20 || !portal_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::invalid("hubspotPortalId", "must be the portal's numeric id"));
        }
        check_bearer_token("hubspotToken", token).map_err(Error::Public)?;
        let company = CompanyRow {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_owned(),
            hubspot_portal_id: portal_id.to_owned(),
            created_at: gomark_storage::now_ms(),
        };
        // The token goes straight to hubspot-sync, which owns credentials; it is never
        // stored here, put in an event or written to the audit log.
        let request = RegisterPortalRequest {
            company_id: company.id.clone(),
            portal_id: portal_id.to_owned(),
            token: token.to_owned(),
            oauth: None,
            token_kind: access.kind.into(),
            journal: access.journal.clone(),
        };
        self.hubspot_sync.clone().register_portal(Caller::system("orchestrator").request(request)).await.map_err(
            |status| {
                tracing::warn!(code = ?status.code(), "hubspot-sync refused the portal registration");
                Error::Public(match ErrorKind::from_grpc(status.code()) {
                    ErrorKind::InvalidArgument | ErrorKind::AlreadyExists => PublicError::from(status),
                    _ => PublicError::unavailable("hubspot-sync"),
                })
            },
        )?;

        let mut tx = self.store.db().begin().await?;
        self.store.insert_company(&mut tx, &company).await?;
        let after = json!({ "id": company.id, "name": company.name, "hubspotPortalId": company.hubspot_portal_id });
        self.store
            .append_audit(
                &mut tx,
                &AuditRecord {
                    company_id: company.id.clone(),
                    actor: actor.0.clone(),
                    action: "company.create".into(),
                    resource: format!("company/{}", company.id),
                    before: None,
                    after: Some(after),
                },
            )
            .await?;
        let event = new_event(
            &company.id,
            event_types::COMPANY_CREATED,
            &CompanyCreated { company: Some(company_proto(&company)) },
        );
        gomark_events::outbox::enqueue(&mut tx, &event).await?;
        tx.commit().await?;
        self.relay.wake();
        tracing::info!(company_id = %company.id, actor = %actor.0, "company created");
        Ok(company)
    }

    pub async fn get_company(&self, id: &str) -> Result<CompanyRow> {
        self.store.get_company(id).await?.ok_or_else(|| PublicError::not_found(format!("company {id}")).into())
    }

    pub async fn list_companies(
        &self,
        page_size_requested: u32,
        page_token: &str,
    ) -> Result<(Vec<CompanyRow>, String)> {
        let limit = page_size(page_size_requested);
        let after = (!page_token.is_empty()).then_some(page_token);
        let companies = self.store.list_companies(after, limit).await?;
        let next = if companies.len() as i64 == limit {
            companies.last().map(|c| c.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((companies, next))
    }

    pub async fn count_companies(&self) -> Result<i64> {
        self.store.count_companies().await
    }

    /// A company's audit entries, or the portfolio's own (revisions, rollbacks) for
    /// [`crate::revisions::PORTFOLIO`].
    pub async fn list_audit(
        &self,
        company_id: &str,
        filter: &AuditFilter,
        page_size_requested: u32,
        page_token: &str,
    ) -> Result<(Vec<AuditRow>, String)> {
        if company_id != crate::revisions::PORTFOLIO {
            self.get_company(company_id).await?;
        }
        let before = match page_token {
            "" => None,
            t => Some(t.parse::<i64>().map_err(|_| Error::invalid("page_token", "is not a token this API issued"))?),
        };
        let limit = page_size(page_size_requested);
        let entries = self.store.list_audit(company_id, filter, before, limit).await?;
        let next = if entries.len() as i64 == limit {
            entries.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((entries, next))
    }
}

pub fn company_proto(c: &CompanyRow) -> gomark_proto::common::v1::Company {
    gomark_proto::common::v1::Company {
        id: c.id.clone(),
        name: c.name.clone(),
        hubspot_portal_id: c.hubspot_portal_id.clone(),
        created_at: Some(timestamp(c.created_at)),
    }
}

pub use gomark_proto::time::timestamp;
