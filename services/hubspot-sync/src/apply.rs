//! Makes a portal match a requested deal property definition, exactly once in effect.
//!
//! Each request is idempotent: the property is read fresh from HubSpot and only what
//! differs is written, so a redelivered request (say hubspot-sync died after writing but
//! before acknowledging) finds nothing left to do. Versions already applied are skipped,
//! so an old request arriving late can never undo a newer one.

use crate::portals::{Portal, Portals};
use async_trait::async_trait;
use gomark_events::consumer::{EventHandler, HandlerError};
use gomark_events::envelope::{decode_payload, new_event};
use gomark_events::relay::RelayWaker;
use gomark_events::{EventEnvelope, event_types};
use gomark_proto::common::v1::DealPropertySpec;
use gomark_proto::events::v1::{ApplyOutcome, DealPropertyApplied, DealPropertyChangeRequested, PropertyAction};
use gomark_storage::Database;
use hubspot_client::{HubSpotClient, Property, PropertyCreate, PropertyOption, PropertyUpdate};
use sqlx::Row;

pub const CONSUMER: &str = "hubspot-sync.deal-property-changes";

/// The longest HubSpot message passed on to users in a failure.
const MAX_REASON: usize = 300;

pub struct ApplyChanges {
    db: Database,
    portals: Portals,
    client: HubSpotClient,
    relay: RelayWaker,
}

impl ApplyChanges {
    pub fn new(db: Database, portals: Portals, client: HubSpotClient, relay: RelayWaker) -> Self {
        Self { db, portals, client, relay }
    }

    async fn applied_version(&self, company_id: &str, name: &str) -> Result<Option<i64>, HandlerError> {
        let row = sqlx::query("SELECT version FROM applied_property_versions WHERE company_id = $1 AND name = $2")
            .bind(company_id)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await
            .map_err(retry)?;
        row.map(|r| r.try_get::<i64, _>("version")).transpose().map_err(retry)
    }

    async fn apply(
        &self,
        portal: &Portal,
        action: PropertyAction,
        spec: &DealPropertySpec,
    ) -> Result<ApplyOutcome, hubspot_client::Error> {
        let token = &portal.token();
        let current = self.client.get_deal_property(token, &spec.name).await?;
        if current.as_ref().is_some_and(|p| p.hubspot_defined == Some(true)) {
            return Err(hubspot_client::Error::Api {
                status: 400,
                category: Some("VALIDATION_ERROR".into()),
                sub_category: None,
                message: format!("{} is defined by HubSpot and cannot be managed", spec.name),
                correlation_id: None,
            });
        }
        match (action, current) {
            (PropertyAction::Archive, None) => Ok(ApplyOutcome::Unchanged),
            (PropertyAction::Archive, Some(_)) => match self.client.archive_deal_property(token, &spec.name).await {
                Err(e) if e.status() == Some(404) => Ok(ApplyOutcome::Unchanged),
                other => other.map(|()| ApplyOutcome::Archived),
            },
            (_, None) => match self.client.create_deal_property(token, &to_create(spec)).await {
                // Someone created it between our read and our write: converge by updating.
                Err(e) if e.status() == Some(409) => match self.client.get_deal_property(token, &spec.name).await? {
                    Some(existing) => self.update(portal, &existing, spec).await,
                    None => Err(e),
                },
                other => other.map(|_| ApplyOutcome::Created),
            },
            (_, Some(existing)) => self.update(portal, &existing, spec).await,
        }
    }

    async fn update(
        &self,
        portal: &Portal,
        existing: &Property,
        spec: &DealPropertySpec,
    ) -> Result<ApplyOutcome, hubspot_client::Error> {
        match diff(existing, spec) {
            None => Ok(ApplyOutcome::Unchanged),
            Some(update) => {
                self.client.update_deal_property(&portal.token(), &spec.name, &update).await?;
                Ok(ApplyOutcome::Updated)
            }
        }
    }

    /// Records the outcome and publishes it, in one transaction, once per event.
    async fn record(
        &self,
        event: &EventEnvelope,
        req: &DealPropertyChangeRequested,
        name: &str,
        outcome: ApplyOutcome,
        reason: String,
    ) -> Result<(), HandlerError> {
        let mut tx = self.db.begin().await.map_err(retry)?;
        if !gomark_events::inbox::claim(&mut tx, CONSUMER, &event.id).await.map_err(retry)? {
            return Ok(());
        }
        if outcome != ApplyOutcome::Failed {
            sqlx::query(
                "INSERT INTO applied_property_versions (company_id, name, version, outcome, applied_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (company_id, name) DO UPDATE SET version = excluded.version, outcome = excluded.outcome, applied_at = excluded.applied_at \
                 WHERE applied_property_versions.version < excluded.version",
            )
            .bind(&req.company_id)
            .bind(name)
            .bind(req.version)
            .bind(outcome.as_str_name())
            .bind(gomark_storage::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(retry)?;
        }
        let applied = DealPropertyApplied {
            company_id: req.company_id.clone(),
            property_name: name.to_owned(),
            version: req.version,
            outcome: outcome as i32,
            error: reason,
        };
        let reply = new_event(&req.company_id, event_types::DEAL_PROPERTY_APPLIED, &applied);
        gomark_events::outbox::enqueue(&mut tx, &reply).await.map_err(retry)?;
        tx.commit().await.map_err(retry)?;
        self.relay.wake();
        Ok(())
    }
}

fn retry(err: impl std::fmt::Display) -> HandlerError {
    HandlerError::Retry(err.to_string())
}

#[async_trait]
impl EventHandler for ApplyChanges {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), HandlerError> {
        let req: DealPropertyChangeRequested =
            decode_payload(event).map_err(|e| HandlerError::Reject(e.to_string()))?;
        let spec = req.spec.clone().ok_or_else(|| HandlerError::Reject("change request without a spec".into()))?;
        let action = PropertyAction::try_from(req.action).unwrap_or(PropertyAction::Unspecified);
        if action == PropertyAction::Unspecified {
            return Err(HandlerError::Reject(format!("unknown action {}", req.action)));
        }
        if self.applied_version(&req.company_id, &spec.name).await?.is_some_and(|v| v >= req.version) {
            tracing::info!(company_id = %req.company_id, property = %spec.name, version = req.version, "already applied, skipping");
            return Ok(());
        }
        let Some(portal) = self.portals.get(&req.company_id).await.map_err(retry)? else {
            let reason = "no HubSpot portal is registered for this company".to_owned();
            return self.record(event, &req, &spec.name, ApplyOutcome::Failed, reason).await;
        };
        let (outcome, reason) = match self.apply(&portal, action, &spec).await {
            Ok(outcome) => (outcome, String::new()),
            Err(e) if e.is_retryable() || matches!(e, hubspot_client::Error::RateLimited { .. }) => {
                return Err(HandlerError::Retry(e.to_string()));
            }
            Err(e) => (ApplyOutcome::Failed, public_reason(&e)),
        };
        tracing::info!(company_id = %req.company_id, portal_id = %portal.portal_id, property = %spec.name, version = req.version, outcome = outcome.as_str_name(), "change applied");
        self.record(event, &req, &spec.name, outcome, reason).await
    }
}

/// A failure reason fit for users: HubSpot's own words about our request, bounded.
fn public_reason(e: &hubspot_client::Error) -> String {
    let text = match e {
        hubspot_client::Error::Api { status, category, message, .. } => {
            format!("HubSpot rejected the change ({status} {}): {message}", category.as_deref().unwrap_or("ERROR"))
        }
        other => format!("HubSpot call failed: {other}"),
    };
    text.chars().take(MAX_REASON).collect()
}

fn to_options(spec: &DealPropertySpec) -> Vec<PropertyOption> {
    spec.options
        .iter()
        .map(|o| PropertyOption {
            label: o.label.clone(),
            value: o.value.clone(),
            description: (!o.description.is_empty()).then(|| o.description.clone()),
            display_order: Some(i64::from(o.display_order)),
            hidden: o.hidden,
        })
        .collect()
}

fn to_create(spec: &DealPropertySpec) -> PropertyCreate {
    PropertyCreate {
        name: spec.name.clone(),
        label: spec.label.clone(),
        r#type: spec.r#type.clone(),
        field_type: spec.field_type.clone(),
        group_name: spec.group_name.clone(),
        description: (!spec.description.is_empty()).then(|| spec.description.clone()),
        options: to_options(spec),
        ..PropertyCreate::default()
    }
}

/// The PATCH that makes `existing` match `spec`, or None when it already does.
/// Options are compared only when GoMark declares some (HubSpot adds its own to bools).
fn diff(existing: &Property, spec: &DealPropertySpec) -> Option<PropertyUpdate> {
    let mut update = PropertyUpdate::default();
    let mut changed = false;
    let mut set = |differs: bool, apply: &mut dyn FnMut(&mut PropertyUpdate)| {
        if differs {
            apply(&mut update);
            changed = true;
        }
    };
    set(existing.label != spec.label, &mut |u| u.label = Some(spec.label.clone()));
    set(existing.description != spec.description, &mut |u| u.description = Some(spec.description.clone()));
    set(existing.group_name != spec.group_name, &mut |u| u.group_name = Some(spec.group_name.clone()));
    set(existing.r#type != spec.r#type || existing.field_type != spec.field_type, &mut |u| {
        u.r#type = Some(spec.r#type.clone());
        u.field_type = Some(spec.field_type.clone());
    });
    let wanted = to_options(spec);
    let same_options = wanted.len() == existing.options.len()
        && wanted.iter().zip(&existing.options).all(|(w, e)| {
            w.label == e.label
                && w.value == e.value
                && w.hidden == e.hidden
                && w.description.as_deref().unwrap_or("") == e.description.as_deref().unwrap_or("")
                && w.display_order.unwrap_or(0) == e.display_order.unwrap_or(0)
        });
    set(!spec.options.is_empty() && !same_options, &mut |u| u.options = Some(wanted.clone()));
    changed.then_some(update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gomark_proto::common::v1::PropertyOption as SpecOption;

    fn spec() -> DealPropertySpec {
        DealPropertySpec {
            name: "gomark_tier".into(),
            label: "Tier".into(),
            r#type: "enumeration".into(),
            field_type: "select".into(),
            group_name: "gomark".into(),
            description: String::new(),
            options: vec![SpecOption { label: "Gold".into(), value: "gold".into(), ..SpecOption::default() }],
        }
    }

    fn as_hubspot_returns_it(spec: &DealPropertySpec) -> Property {
        Property {
            name: spec.name.clone(),
            label: spec.label.clone(),
            r#type: spec.r#type.clone(),
            field_type: spec.field_type.clone(),
            group_name: spec.group_name.clone(),
            description: spec.description.clone(),
            options: to_options(spec),
            ..Property::default()
        }
    }

    #[test]
    fn a_matching_property_needs_no_write() {
        assert_eq!(diff(&as_hubspot_returns_it(&spec()), &spec()), None);
    }

    #[test]
    fn only_what_differs_is_patched() {
        let mut wanted = spec();
        wanted.label = "Customer tier".into();
        let update = diff(&as_hubspot_returns_it(&spec()), &wanted).expect("a change");
        assert_eq!(update.label.as_deref(), Some("Customer tier"));
        assert_eq!(update.options, None);
        assert_eq!(update.group_name, None);
    }

    #[test]
    fn changed_options_replace_the_list() {
        let mut wanted = spec();
        wanted.options.push(SpecOption {
            label: "Silver".into(),
            value: "silver".into(),
            display_order: 1,
            ..SpecOption::default()
        });
        let update = diff(&as_hubspot_returns_it(&spec()), &wanted).expect("a change");
        assert_eq!(update.options.map(|o| o.len()), Some(2));
    }
}
