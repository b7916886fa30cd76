//! The orchestrator's operations on desired state. Every accepted change is written with
//! its audit entry and its change-request event in one transaction.

use crate::property_spec::{PropertyOptionSpec, PropertySpec};
use crate::store::{AuditFilter, AuditRecord, AuditRow, CompanyRow, PropertyRow, Store, SyncState};
use crate::{Error, Result};
use gomark_cache::{Cache, CacheAside};
use gomark_events::envelope::new_event;
use gomark_events::event_types;
use gomark_events::relay::RelayWaker;
use gomark_platform::grpc_client::TracedChannel;
use gomark_platform::token::check_bearer_token;
use gomark_platform::{Caller, ErrorKind, PublicError};
use gomark_proto::events::v1::{CompanyCreated, DealPropertyChangeRequested, PropertyAction};
use gomark_proto::hubspot_sync::v1::RegisterPortalRequest;
use gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Who is making a change, as the audit log will name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
const CACHE_TTL: Duration = Duration::from_secs(60);

/// A partial update of a property; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PropertyPatch {
    pub label: Option<String>,
    pub kind: Option<String>,
    pub field_type: Option<String>,
    pub group_name: Option<String>,
    pub description: Option<String>,
    pub options: Option<Vec<PropertyOptionSpec>>,
}

pub struct DesiredState {
    store: Store,
    cache: CacheAside,
    hubspot_sync: HubspotSyncServiceClient<TracedChannel>,
    relay: RelayWaker,
}

fn page_size(requested: u32) -> i64 {
    i64::from(if requested == 0 { DEFAULT_PAGE } else { requested.min(MAX_PAGE) })
}

fn properties_key(company_id: &str) -> String {
    format!("orchestrator:deal-properties:{company_id}")
}

fn property_json(row: &PropertyRow) -> serde_json::Value {
    json!({ "spec": row.spec, "archived": row.archived, "version": row.version })
}

impl DesiredState {
    pub fn new(store: Store, cache: Arc<dyn Cache>, hubspot_sync: TracedChannel, relay: RelayWaker) -> Self {
        Self {
            store,
            cache: CacheAside::new(cache, CACHE_TTL),
            hubspot_sync: HubspotSyncServiceClient::new(hubspot_sync),
            relay,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn create_company(&self, actor: &Actor, name: &str, portal_id: &str, token: &str) -> Result<CompanyRow> {
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

    pub async fn list_properties(&self, company_id: &str, include_archived: bool) -> Result<Vec<PropertyRow>> {
        self.get_company(company_id).await?;
        if include_archived {
            return self.store.list_properties(company_id, true).await;
        }
        self.cache.get_or_load(&properties_key(company_id), || self.store.list_properties(company_id, false)).await
    }

    pub async fn get_property(&self, company_id: &str, name: &str) -> Result<PropertyRow> {
        self.get_company(company_id).await?;
        let mut conn = self.store.db().pool().acquire().await?;
        match self.store.get_property(&mut conn, company_id, name).await? {
            Some(row) if !row.archived => Ok(row),
            _ => Err(PublicError::not_found(format!("deal property {name}")).into()),
        }
    }

    pub async fn create_property(&self, actor: &Actor, company_id: &str, spec: PropertySpec) -> Result<PropertyRow> {
        self.get_company(company_id).await?;
        spec.validate()?;
        let mut conn = self.store.db().pool().acquire().await?;
        let existing = self.store.get_property(&mut conn, company_id, &spec.name).await?;
        drop(conn);
        if existing.as_ref().is_some_and(|p| !p.archived) {
            return Err(Error::kind_of(
                ErrorKind::AlreadyExists,
                format!("deal property {} already exists", spec.name),
            ));
        }
        // Re-declaring an archived name restores it, as HubSpot's create does.
        let after = PropertyRow {
            company_id: company_id.to_owned(),
            spec,
            archived: false,
            version: existing.as_ref().map_or(1, |p| p.version + 1),
            sync_state: SyncState::Pending,
            sync_error: String::new(),
            updated_at: gomark_storage::now_ms(),
        };
        self.commit_change(actor, "deal_property.create", existing.as_ref(), &after, PropertyAction::Upsert).await?;
        Ok(after)
    }

    pub async fn update_property(
        &self,
        actor: &Actor,
        company_id: &str,
        name: &str,
        patch: PropertyPatch,
        expected_version: Option<i64>,
    ) -> Result<PropertyRow> {
        let before = self.get_property(company_id, name).await?;
        if let Some(expected) = expected_version
            && expected != before.version
        {
            return Err(Error::kind_of(
                ErrorKind::Conflict,
                format!("deal property {name} is at version {}, not {expected}", before.version),
            ));
        }
        let mut spec = before.spec.clone();
        if let Some(v) = patch.label {
            spec.label = v;
        }
        if let Some(v) = patch.kind {
            spec.kind = v;
        }
        if let Some(v) = patch.field_type {
            spec.field_type = v;
        }
        if let Some(v) = patch.group_name {
            spec.group_name = v;
        }
        if let Some(v) = patch.description {
            spec.description = v;
        }
        if let Some(v) = patch.options {
            spec.options = v;
        }
        spec.validate()?;
        if spec == before.spec {
            return Ok(before);
        }
        let after = PropertyRow {
            spec,
            version: before.version + 1,
            sync_state: SyncState::Pending,
            sync_error: String::new(),
            updated_at: gomark_storage::now_ms(),
            ..before.clone()
        };
        self.commit_change(actor, "deal_property.update", Some(&before), &after, PropertyAction::Upsert).await?;
        Ok(after)
    }

    pub async fn archive_property(&self, actor: &Actor, company_id: &str, name: &str) -> Result<PropertyRow> {
        let before = self.get_property(company_id, name).await?;
        let after = PropertyRow {
            archived: true,
            version: before.version + 1,
            sync_state: SyncState::Pending,
            sync_error: String::new(),
            updated_at: gomark_storage::now_ms(),
            ..before.clone()
        };
        self.commit_change(actor, "deal_property.archive", Some(&before), &after, PropertyAction::Archive).await?;
        Ok(after)
    }

    /// Desired state, audit entry and change request: all three or none.
    async fn commit_change(
        &self,
        actor: &Actor,
        action: &str,
        before: Option<&PropertyRow>,
        after: &PropertyRow,
        requested: PropertyAction,
    ) -> Result<()> {
        let mut tx = self.store.db().begin().await?;
        self.store.save_property(&mut tx, after, before.map(|b| b.version)).await?;
        self.store
            .append_audit(
                &mut tx,
                &AuditRecord {
                    company_id: after.company_id.clone(),
                    actor: actor.0.clone(),
                    action: action.to_owned(),
                    resource: format!("deal_property/{}", after.spec.name),
                    before: before.map(property_json),
                    after: Some(property_json(after)),
                },
            )
            .await?;
        let request = DealPropertyChangeRequested {
            company_id: after.company_id.clone(),
            version: after.version,
            action: requested as i32,
            spec: Some(after.spec.to_proto()),
        };
        let event = new_event(&after.company_id, event_types::DEAL_PROPERTY_CHANGE_REQUESTED, &request);
        gomark_events::outbox::enqueue(&mut tx, &event).await?;
        tx.commit().await?;
        self.relay.wake();
        self.cache.invalidate(&properties_key(&after.company_id)).await;
        tracing::info!(company_id = %after.company_id, property = %after.spec.name, version = after.version, action, actor = %actor.0, "desired state changed");
        Ok(())
    }

    /// Records what hubspot-sync reported, once per event.
    pub async fn record_apply_result(
        &self,
        event_id: &str,
        consumer: &str,
        company_id: &str,
        name: &str,
        version: i64,
        result: std::result::Result<(), String>,
    ) -> Result<()> {
        let mut tx = self.store.db().begin().await?;
        if !gomark_events::inbox::claim(&mut tx, consumer, event_id).await? {
            return Ok(());
        }
        let (state, error) = match &result {
            Ok(()) => (SyncState::Applied, ""),
            Err(reason) => (SyncState::Failed, reason.as_str()),
        };
        let current = self.store.set_sync_result(&mut tx, company_id, name, version, state, error).await?;
        tx.commit().await?;
        if current {
            self.cache.invalidate(&properties_key(company_id)).await;
        }
        Ok(())
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

pub fn timestamp(ms: i64) -> gomark_proto::Timestamp {
    gomark_proto::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}
