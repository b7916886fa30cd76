//! Changes the simulator makes, and the event shape they are published in (push webhooks and
//! the webhooks journal share it).
//!
//! Every write appends [`Change`]s to its portal's outbox; `HubSpotSim::write` drains them into
//! the journal (all kinds) and the push-webhook dispatcher (deal kinds only, and never for a
//! portal that uses a service key).
//!
//! | kind | `subscriptionType` | `changeFlag` | extra fields |
//! |---|---|---|---|
//! | deal created | `deal.creation` | `NEW` | `objectId` |
//! | deal value changed | `deal.propertyChange` | `VALUE_CHANGED` | `objectId`, `propertyName`, `propertyValue` |
//! | deal archived | `deal.deletion` | `DELETED` | `objectId` |
//! | deal association added/removed | `deal.associationChange` | `ASSOCIATION_ADDED` / `ASSOCIATION_REMOVED` | `objectId`, `associationType` (e.g. `DEAL_TO_CONTACT`), `fromObjectId`, `toObjectId`, `associationRemoved` |
//! | snapshot (journal only) | `object.snapshot` | `SNAPSHOT` | `objectId`, `properties` |
//! | property definition (journal only) | `property.creation` / `property.change` / `property.deletion` | `CREATED` / `UPDATED` / `ARCHIVED` | `propertyName` |
//! | property group (journal only) | `propertyGroup.creation` / `.change` / `.deletion` | same | `groupName` |
//! | pipeline (journal only) | `pipeline.creation` / `.change` / `.deletion` | same | `pipelineId` |
//! | stage (journal only) | `pipelineStage.creation` / `.change` / `.deletion` | same | `pipelineId`, `stageId` |
//! | property validation rule (journal only) | `propertyValidation.creation` / `.change` / `.deletion` | same | `propertyName`, `ruleType` |
//!
//! Every event also has `eventId` (per portal), `subscriptionId` (stable per subscription
//! type, and per property for value changes), `portalId`, `appId`, `occurredAt` (epoch ms),
//! `attemptNumber`, `changeSource` and `sourceId` (see `source.rs`); journal events add
//! `objectTypeId` (`"0-3"`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use crate::lock;
use crate::source::ChangeSource;

/// What a definition change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Created,
    Updated,
    Archived,
}

impl Action {
    fn suffix(self) -> &'static str {
        match self {
            Self::Created => "creation",
            Self::Updated => "change",
            Self::Archived => "deletion",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Updated => "UPDATED",
            Self::Archived => "ARCHIVED",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Creation,
    Deletion,
    PropertyChange { name: String, value: String },
    AssociationChange { association_type: String, to_id: u64, removed: bool },
    Snapshot { properties: BTreeMap<String, String> },
    PropertyDefinition { action: Action, name: String },
    Group { action: Action, name: String },
    Pipeline { action: Action, pipeline_id: String },
    Stage { action: Action, pipeline_id: String, stage_id: String },
    ValidationRule { action: Action, property: String, rule_type: String },
}

impl ChangeKind {
    /// Whether push webhooks carry this kind (HubSpot pushes record events, not definitions).
    pub fn is_pushed(&self) -> bool {
        matches!(self, Self::Creation | Self::Deletion | Self::PropertyChange { .. } | Self::AssociationChange { .. })
    }
}

/// One change, queued for the journal and the webhook dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub portal_id: u64,
    /// Unique within the portal only (HubSpot does not promise unique event ids).
    pub event_id: u64,
    pub occurred_at: i64,
    /// The deal, for record kinds (0 for definitions).
    pub object_id: u64,
    pub kind: ChangeKind,
    pub source: ChangeSource,
}

/// One event as HubSpot serialises it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireEvent {
    pub event_id: u64,
    pub subscription_id: u64,
    pub portal_id: u64,
    pub app_id: u64,
    pub occurred_at: i64,
    pub subscription_type: String,
    pub attempt_number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type_id: Option<&'static str>,
    pub change_source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    pub change_flag: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_object_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_object_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association_removed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

const FIRST_SUBSCRIPTION_ID: u64 = 2_400_001;

/// Stable subscription id per subscription key, process-wide.
fn subscription_id(key: String) -> u64 {
    static IDS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let mut ids = lock(&IDS);
    let ids = ids.get_or_insert_with(HashMap::new);
    let next = FIRST_SUBSCRIPTION_ID + ids.len() as u64;
    *ids.entry(key).or_insert(next)
}

impl Change {
    /// The event for this change. `journal` adds `objectTypeId` (push deal events have none).
    pub fn to_wire(&self, app_id: u64, journal: bool) -> WireEvent {
        let mut event = WireEvent {
            event_id: self.event_id,
            subscription_id: 0,
            portal_id: self.portal_id,
            app_id,
            occurred_at: self.occurred_at,
            subscription_type: String::new(),
            attempt_number: 0,
            object_id: None,
            object_type_id: journal.then_some("0-3"),
            change_source: self.source.change_source.clone(),
            source_id: self.source.source_id.clone(),
            change_flag: "",
            property_name: None,
            property_value: None,
            association_type: None,
            from_object_id: None,
            to_object_id: None,
            association_removed: None,
            group_name: None,
            pipeline_id: None,
            stage_id: None,
            rule_type: None,
            properties: None,
        };
        let deal = Some(self.object_id);
        let (kind, key_suffix, flag) = match &self.kind {
            ChangeKind::Creation => {
                event.object_id = deal;
                ("deal.creation".to_owned(), String::new(), "NEW")
            }
            ChangeKind::Deletion => {
                event.object_id = deal;
                ("deal.deletion".to_owned(), String::new(), "DELETED")
            }
            ChangeKind::PropertyChange { name, value } => {
                event.object_id = deal;
                event.property_name = Some(name.clone());
                event.property_value = Some(value.clone());
                ("deal.propertyChange".to_owned(), format!(":{name}"), "VALUE_CHANGED")
            }
            ChangeKind::AssociationChange { association_type, to_id, removed } => {
                event.object_id = deal;
                event.association_type = Some(association_type.clone());
                event.from_object_id = deal;
                event.to_object_id = Some(*to_id);
                event.association_removed = Some(*removed);
                let flag = if *removed { "ASSOCIATION_REMOVED" } else { "ASSOCIATION_ADDED" };
                ("deal.associationChange".to_owned(), String::new(), flag)
            }
            ChangeKind::Snapshot { properties } => {
                event.object_id = deal;
                event.object_type_id = Some("0-3");
                event.properties = Some(properties.clone());
                ("object.snapshot".to_owned(), String::new(), "SNAPSHOT")
            }
            ChangeKind::PropertyDefinition { action, name } => {
                event.property_name = Some(name.clone());
                (format!("property.{}", action.suffix()), String::new(), action.flag())
            }
            ChangeKind::Group { action, name } => {
                event.group_name = Some(name.clone());
                (format!("propertyGroup.{}", action.suffix()), String::new(), action.flag())
            }
            ChangeKind::Pipeline { action, pipeline_id } => {
                event.pipeline_id = Some(pipeline_id.clone());
                (format!("pipeline.{}", action.suffix()), String::new(), action.flag())
            }
            ChangeKind::Stage { action, pipeline_id, stage_id } => {
                event.pipeline_id = Some(pipeline_id.clone());
                event.stage_id = Some(stage_id.clone());
                (format!("pipelineStage.{}", action.suffix()), String::new(), action.flag())
            }
            ChangeKind::ValidationRule { action, property, rule_type } => {
                event.property_name = Some(property.clone());
                event.rule_type = Some(rule_type.clone());
                (format!("propertyValidation.{}", action.suffix()), String::new(), action.flag())
            }
        };
        event.subscription_id = subscription_id(format!("{kind}{key_suffix}"));
        event.subscription_type = kind;
        event.change_flag = flag;
        event
    }
}
