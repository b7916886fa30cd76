//! A company's deal properties, read and edited one at a time (the REST property routes and
//! the previous GoMark's field routes). There is no second desired state behind them: a
//! property is what the latest revision declares for the company, and each edit changes
//! the company's overlay in a new revision (audited for the company too), rolled out to
//! that company by the same planner and applier as any other revision.

use crate::import::company_key;
use crate::revisions::{Revisions, retry_on_conflict};
use crate::rollout::Rollouts;
use crate::store::{AuditRecord, Store, SyncState};
use crate::{Actor, Error, Result};
use gomark_platform::{ErrorKind, PublicError};
use gomark_proto::config::v1 as config_pb;
use gomark_proto::orchestrator::v1 as pb;
use gtm_config::{CompanyOverlay, DealProperty, Document, FieldType, PropertyOption, PropertyType};
use sqlx::Row;
use std::sync::Arc;

pub struct PropertyEdits {
    store: Store,
    revisions: Arc<Revisions>,
    rollouts: Arc<Rollouts>,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PropertyPatch {
    pub label: Option<String>,
    pub kind: Option<String>,
    pub field_type: Option<String>,
    pub group_name: Option<String>,
    pub description: Option<String>,
    pub options: Option<Vec<config_pb::PropertyOption>>,
    /// The ETag read; the update applies only if the definition still has it.
    pub if_match: Option<String>,
}

/// The strong ETag of a definition.
fn etag(p: &DealProperty) -> String {
    gtm_config::wire::digest(p)
}

fn property_json(p: Option<&DealProperty>) -> Option<serde_json::Value> {
    p.and_then(|p| serde_json::to_value(p).ok())
}

/// A validation error in the document as the REST caller named the field.
fn field_of(path: &str) -> String {
    match path.find(".dealProperties[").and_then(|i| path[i..].find("].").map(|j| i + j + 2)) {
        Some(start) => path[start..].to_owned(),
        None => "spec".to_owned(),
    }
}

/// The company's overlay in `document`, made if missing; its key.
fn overlay<'a>(document: &'a mut Document, company: &crate::store::CompanyRow) -> (String, &'a mut CompanyOverlay) {
    let key = match document.key_of(&company.id) {
        Some(key) => key.to_owned(),
        None => company_key(document, company),
    };
    let overlay = document
        .companies
        .entry(key.clone())
        .or_insert_with(|| CompanyOverlay { company_id: company.id.clone(), ..CompanyOverlay::default() });
    (key, overlay)
}

impl PropertyEdits {
    pub fn new(store: Store, revisions: Arc<Revisions>, rollouts: Arc<Rollouts>) -> Self {
        Self { store, revisions, rollouts }
    }

    async fn company(&self, company_id: &str) -> Result<crate::store::CompanyRow> {
        self.store
            .get_company(company_id)
            .await?
            .ok_or_else(|| PublicError::not_found(format!("company {company_id}")).into())
    }

    /// The latest revision's number and document (an empty one before the first).
    async fn latest(&self) -> Result<(i64, Arc<Document>)> {
        match self.revisions.document(0).await {
            Ok(found) => Ok(found),
            Err(Error::Public(p)) if p.kind == ErrorKind::NotFound => Ok((0, Arc::new(Document::default()))),
            Err(other) => Err(other),
        }
    }

    /// The company's properties in the portal as last applied, and why the last rollout of
    /// it failed, if it did.
    async fn applied(&self, company_id: &str) -> Result<(Vec<DealProperty>, Option<String>)> {
        let applied = match self.store.applied_revision(company_id).await? {
            Some((revision, _)) => {
                let (_, document) = self.revisions.document(revision).await?;
                document
                    .key_of(company_id)
                    .and_then(|key| document.effective(key).ok())
                    .map(|e| e.deal_properties)
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        let last = sqlx::query(
            "SELECT state, detail FROM rollout_steps WHERE company_id = $1 ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(company_id)
        .fetch_optional(self.store.db().pool())
        .await?;
        let failed = match last {
            Some(row) if row.try_get::<String, _>("state")? == "failed" => Some(row.try_get("detail")?),
            _ => None,
        };
        Ok((applied, failed))
    }

    fn view(
        company_id: &str,
        revision: i64,
        property: &DealProperty,
        archived: bool,
        applied: &(Vec<DealProperty>, Option<String>),
    ) -> pb::DealProperty {
        let in_portal = applied.0.iter().find(|p| p.name == property.name);
        let (state, error) = match (archived, in_portal) {
            (false, Some(p)) if p == property => (SyncState::Applied, String::new()),
            (true, None) => (SyncState::Applied, String::new()),
            _ => match &applied.1 {
                Some(why) => (SyncState::Failed, why.clone()),
                None => (SyncState::Pending, String::new()),
            },
        };
        pb::DealProperty {
            company_id: company_id.to_owned(),
            spec: Some(gtm_config::wire::property_to_proto(property)),
            archived,
            revision,
            sync_state: match state {
                SyncState::Pending => pb::SyncState::Pending,
                SyncState::Applied => pb::SyncState::Applied,
                SyncState::Failed => pb::SyncState::Failed,
            } as i32,
            sync_error: error,
            etag: etag(property),
            rollout_id: String::new(),
        }
    }

    pub async fn list(&self, company_id: &str, include_archived: bool) -> Result<Vec<pb::DealProperty>> {
        self.company(company_id).await?;
        let (revision, document) = self.latest().await?;
        let Some(key) = document.key_of(company_id) else { return Ok(Vec::new()) };
        let effective = document.effective(key).map_err(|e| Error::invalid("company_id", e.to_string()))?;
        let applied = self.applied(company_id).await?;
        let mut out: Vec<pb::DealProperty> =
            effective.deal_properties.iter().map(|p| Self::view(company_id, revision, p, false, &applied)).collect();
        if include_archived && let Some(overlay) = document.companies.get(key) {
            for name in &overlay.remove_deal_properties {
                if let Some(p) = document.baseline.deal_properties.iter().find(|p| &p.name == name) {
                    out.push(Self::view(company_id, revision, p, true, &applied));
                }
            }
        }
        out.sort_by(|a, b| a.spec.as_ref().map(|s| &s.name).cmp(&b.spec.as_ref().map(|s| &s.name)));
        Ok(out)
    }

    pub async fn get(&self, company_id: &str, name: &str) -> Result<pb::DealProperty> {
        self.company(company_id).await?;
        let (revision, document) = self.latest().await?;
        let property = document
            .key_of(company_id)
            .and_then(|key| document.effective(key).ok())
            .and_then(|e| e.property(name).cloned())
            .ok_or_else(|| PublicError::not_found(format!("deal property {name}")))?;
        let applied = self.applied(company_id).await?;
        Ok(Self::view(company_id, revision, &property, false, &applied))
    }

    pub async fn create(
        &self,
        actor: &Actor,
        company_id: &str,
        spec: config_pb::DealProperty,
    ) -> Result<pb::DealProperty> {
        let property = gtm_config::wire::property_from_proto(spec).map_err(|e| Error::invalid(&e.field, e.message))?;
        let name = property.name.clone();
        self.edit(actor, company_id, "deal_property.create", &name, |document, company| {
            let baseline = document.baseline.deal_properties.iter().any(|p| p.name == name);
            let (_, overlay) = overlay(document, company);
            let removed = overlay.remove_deal_properties.iter().any(|n| n == &name);
            if overlay.deal_properties.iter().any(|p| p.name == name) || (baseline && !removed) {
                return Err(Error::kind_of(ErrorKind::AlreadyExists, format!("deal property {name} already exists")));
            }
            // Declaring a removed baseline property again restores it, as HubSpot's create does.
            overlay.remove_deal_properties.retain(|n| n != &name);
            overlay.deal_properties.push(property.clone());
            Ok(())
        })
        .await
    }

    pub async fn update(
        &self,
        actor: &Actor,
        company_id: &str,
        name: &str,
        patch: PropertyPatch,
    ) -> Result<pb::DealProperty> {
        self.edit(actor, company_id, "deal_property.update", name, |document, company| {
            let current = document
                .key_of(&company.id)
                .and_then(|key| document.effective(key).ok())
                .and_then(|e| e.property(name).cloned())
                .ok_or_else(|| PublicError::not_found(format!("deal property {name}")))?;
            if let Some(expected) = &patch.if_match
                && *expected != etag(&current)
            {
                return Err(Error::kind_of(
                    ErrorKind::Conflict,
                    format!("deal property {name} changed since it was read (ETag {expected}); read it again"),
                ));
            }
            let mut updated = current.clone();
            if let Some(v) = &patch.label {
                updated.label = v.clone();
            }
            if let Some(v) = &patch.kind {
                updated.property_type =
                    PropertyType::parse(v).ok_or_else(|| Error::invalid("type", "is not a HubSpot property type"))?;
            }
            if let Some(v) = &patch.field_type {
                updated.field_type =
                    FieldType::parse(v).ok_or_else(|| Error::invalid("fieldType", "is not a HubSpot field type"))?;
            }
            if let Some(v) = &patch.group_name {
                updated.group_name = v.clone();
            }
            if let Some(v) = &patch.description {
                updated.description = (!v.is_empty()).then(|| v.clone());
            }
            if let Some(options) = &patch.options {
                updated.options = options
                    .iter()
                    .map(|o| PropertyOption {
                        label: o.label.clone(),
                        value: o.value.clone(),
                        display_order: o.display_order,
                        hidden: o.hidden,
                    })
                    .collect();
            }
            if updated == current {
                return Ok(());
            }
            let (_, overlay) = overlay(document, company);
            match overlay.deal_properties.iter_mut().find(|p| p.name == name) {
                Some(slot) => *slot = updated,
                None => overlay.deal_properties.push(updated),
            }
            Ok(())
        })
        .await
    }

    pub async fn archive(&self, actor: &Actor, company_id: &str, name: &str) -> Result<pb::DealProperty> {
        self.edit(actor, company_id, "deal_property.archive", name, |document, company| {
            let declared = document
                .key_of(&company.id)
                .and_then(|key| document.effective(key).ok())
                .is_some_and(|e| e.property(name).is_some());
            if !declared {
                return Err(PublicError::not_found(format!("deal property {name}")).into());
            }
            let baseline = document.baseline.deal_properties.iter().any(|p| p.name == name);
            let (_, overlay) = overlay(document, company);
            overlay.deal_properties.retain(|p| p.name != name);
            if baseline && !overlay.remove_deal_properties.iter().any(|n| n == name) {
                overlay.remove_deal_properties.push(name.to_owned());
            }
            Ok(())
        })
        .await
    }

    /// Applies `change` to the company's overlay in the latest document, stores the result
    /// as a new revision with the company's audit entry, and rolls it out to the company
    /// (queued behind the company's unfinished rollout, if any).
    async fn edit(
        &self,
        actor: &Actor,
        company_id: &str,
        action: &str,
        name: &str,
        change: impl Fn(&mut Document, &crate::store::CompanyRow) -> Result<()>,
    ) -> Result<pb::DealProperty> {
        let company = self.company(company_id).await?;
        retry_on_conflict(|| self.edit_once(actor, &company, action, name, &change)).await
    }

    /// One try of [`PropertyEdits::edit`], on the latest revision as it is read now.
    async fn edit_once(
        &self,
        actor: &Actor,
        company: &crate::store::CompanyRow,
        action: &str,
        name: &str,
        change: &impl Fn(&mut Document, &crate::store::CompanyRow) -> Result<()>,
    ) -> Result<pb::DealProperty> {
        let company_id = company.id.as_str();
        let (base, latest) = self.latest().await?;
        let mut document = (*latest).clone();
        let before = document
            .key_of(company_id)
            .and_then(|k| document.effective(k).ok())
            .and_then(|e| e.property(name).cloned());
        change(&mut document, company)?;
        if document == *latest {
            // Nothing changes: no revision, no rollout.
            return self.get(company_id, name).await;
        }
        if let Err(errors) = document.validate() {
            let first = errors.errors.first().map(|e| field_of(&e.path)).unwrap_or_else(|| "spec".into());
            let all: Vec<String> = errors.errors.iter().map(|e| e.message.clone()).collect();
            return Err(Error::Public(PublicError {
                kind: ErrorKind::InvalidArgument,
                message: format!("{first}: {}", all.join("; ")),
                field: Some(first),
                retry_after: None,
            }));
        }
        let key = document.key_of(company_id).unwrap_or_default().to_owned();
        let effective = document.effective(&key).map_err(|e| Error::invalid("company_id", e.to_string()))?;
        let after = effective.property(name).cloned();
        let archived = after.is_none();
        let audit = AuditRecord {
            company_id: company_id.to_owned(),
            actor: actor.0.clone(),
            action: action.to_owned(),
            resource: format!("deal_property/{name}"),
            before: property_json(before.as_ref()),
            after: property_json(after.as_ref()),
        };
        let message = format!("{action} {name} for {key}");
        let revision = self
            .revisions
            .create_with_audit(actor, &document, &message, Some(base), None, std::slice::from_ref(&audit))
            .await?;
        let rollout = self.rollouts.start_for_edit(actor, revision.number, company_id).await?;
        let shown = after.or(before).ok_or_else(|| PublicError::not_found(format!("deal property {name}")))?;
        let mut view = Self::view(company_id, revision.number, &shown, archived, &(Vec::new(), None));
        view.sync_state = pb::SyncState::Pending as i32;
        view.rollout_id = rollout.id;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn document_paths_become_rest_fields() {
        assert_eq!(field_of("companies.acme.dealProperties[2].label"), "label");
        assert_eq!(field_of("companies.acme.dealProperties[0].options[1].value"), "options[1].value");
        assert_eq!(field_of("baseline.pipelines[0].id"), "spec");
    }
}
