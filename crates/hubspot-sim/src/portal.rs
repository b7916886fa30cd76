//! One simulated HubSpot portal: its deal properties, property groups, pipelines, deals,
//! search index, limiter, traffic statistics and injected failures.
//!
//! Pipeline, deal and search operations live in `pipelines.rs`, `deals.rs` and `search.rs` as
//! further `impl Portal` blocks.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::deals::Deal;
use crate::error::ApiError;
use crate::events::Change;
use crate::model::{Group, Property};
use crate::model::{
    GroupCreate, GroupUpdate, MAX_UNIQUE_PROPERTIES, ModificationMetadata, PropertyCreate, PropertyOption,
    PropertyUpdate, build_options, formula_references, is_valid_internal_name, now_timestamp, validate_hints,
    validate_shape,
};
use crate::pipelines::{Pipeline, default_pipeline};
use crate::ratelimit::{RateLimiter, Traffic};
use crate::search::SearchIndex;

const PROPERTY_EXISTS: &str = "Properties.PROPERTY_WITH_NAME_EXISTS";

/// Audit entries kept per portal (oldest dropped first).
pub(crate) const MAX_AUDITS: usize = 10_000;

/// One pipeline or stage change, for the `/audit` endpoints.
#[derive(Debug, Clone)]
pub(crate) struct Audit {
    pub pipeline_id: String,
    pub stage_id: Option<String>,
    pub action: crate::events::Action,
    pub at_ms: i64,
    pub source: crate::source::ChangeSource,
    /// The pipeline or stage as it was after the change (`null` once removed).
    pub raw: serde_json::Value,
}

/// Failures queued with `fail_next`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailNext {
    pub remaining: u32,
    pub status: u16,
}

/// State of one portal.
#[derive(Debug)]
pub(crate) struct Portal {
    pub id: u64,
    pub limiter: RateLimiter,
    pub fail_next: Option<FailNext>,
    pub traffic: Traffic,
    pub(crate) pipelines: Vec<Pipeline>,
    pub(crate) deals: BTreeMap<u64, Deal>,
    pub(crate) index: SearchIndex,
    /// Changes not yet handed to the webhook dispatcher (drained after every write).
    pub(crate) outbox: Vec<Change>,
    pub(crate) next_event_id: u64,
    /// Whether the portal is reached with a service key: its events are journaled but never
    /// pushed as webhooks.
    pub(crate) service_key: bool,
    /// Deal associations (see `associations.rs`).
    pub(crate) associations: std::collections::BTreeSet<crate::associations::Link>,
    /// Pipeline and stage audit entries, oldest first (at most [`MAX_AUDITS`]).
    pub(crate) audits: std::collections::VecDeque<Audit>,
    /// Property validation rules (enforced on 2026-09 record writes).
    pub(crate) rules: crate::rules::Rules,
    /// Pipeline rules by pipeline id (enforced on 2026-09 deal writes).
    pub(crate) pipeline_rules: std::collections::BTreeMap<String, crate::pipeline_rules::PipelineRules>,
    /// The account's company currency (ISO 4217): what a new deal's `deal_currency_code`
    /// defaults to, as in HubSpot.
    pub(crate) company_currency: String,
    properties: BTreeMap<String, Property>,
    groups: BTreeMap<String, Group>,
}

impl Portal {
    /// A fresh portal with HubSpot's default deal properties, groups and pipeline, whose
    /// search index lags writes by `index_lag`.
    pub fn with_index_lag(id: u64, index_lag: Duration) -> Self {
        Self { index: SearchIndex::new(index_lag), ..Self::new(id) }
    }

    /// A fresh portal with HubSpot's default deal properties, groups and pipeline.
    pub fn new(id: u64) -> Self {
        let mut portal = Self {
            id,
            limiter: RateLimiter::default(),
            fail_next: None,
            traffic: Traffic::default(),
            pipelines: vec![default_pipeline()],
            deals: BTreeMap::new(),
            index: SearchIndex::default(),
            outbox: Vec::new(),
            next_event_id: 0,
            service_key: false,
            rules: crate::rules::Rules::new(),
            pipeline_rules: BTreeMap::new(),
            audits: std::collections::VecDeque::new(),
            associations: std::collections::BTreeSet::new(),
            company_currency: "USD".to_owned(),
            properties: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        for (order, (name, label)) in
            [("dealinformation", "Deal information"), ("gomark", "GoMark")].into_iter().enumerate()
        {
            portal.groups.insert(
                name.to_owned(),
                Group {
                    name: name.to_owned(),
                    label: label.to_owned(),
                    display_order: i64::try_from(order).unwrap_or(0),
                    archived: false,
                },
            );
        }
        for property in default_deal_properties() {
            portal.properties.insert(property.name.clone(), property);
        }
        portal
    }

    /// What survives a restart: definitions and deals (not traffic, limits or injections).
    pub(crate) fn view<'a>(&'a self, token: &'a str) -> crate::state::PortalView<'a> {
        crate::state::PortalView {
            token,
            id: self.id,
            properties: self.properties.values().collect(),
            groups: self.groups.values().collect(),
            pipelines: &self.pipelines,
            deals: self.deals.values().collect(),
            next_event_id: self.next_event_id,
            rules: &self.rules,
            pipeline_rules: &self.pipeline_rules,
            service_key: self.service_key,
        }
    }

    /// A portal as [`Portal::view`] saved it.
    pub fn from_state(state: crate::state::PortalState, index_lag: Duration) -> Self {
        let mut portal = Self::with_index_lag(state.id, index_lag);
        portal.properties = state.properties.into_iter().map(|p| (p.name.clone(), p)).collect();
        portal.groups = state.groups.into_iter().map(|g| (g.name.clone(), g)).collect();
        crate::pipelines::reserve_ids_through(&state.pipelines);
        portal.pipelines = state.pipelines;
        if let Some(highest) = state.deals.iter().map(|d| d.id).max() {
            crate::deals::reserve_ids_through(highest);
        }
        for deal in state.deals {
            if portal.index.is_lagging() && !deal.archived {
                portal.index.insert_indexed(deal.id, deal.indexed());
            }
            portal.deals.insert(deal.id, deal);
        }
        portal.next_event_id = state.next_event_id;
        portal.rules = state.rules;
        portal.pipeline_rules = state.pipeline_rules;
        portal.service_key = state.service_key;
        portal
    }

    /// Records a change to a definition (property, group, pipeline or stage) for the journal,
    /// and for pipelines and stages an audit entry.
    pub fn definition_changed(&mut self, kind: crate::events::ChangeKind) {
        use crate::events::ChangeKind;
        let now = crate::model::now_ms();
        let audit = match &kind {
            ChangeKind::Pipeline { action, pipeline_id } => Some((*action, pipeline_id.clone(), None)),
            ChangeKind::Stage { action, pipeline_id, stage_id } => {
                Some((*action, pipeline_id.clone(), Some(stage_id.clone())))
            }
            _ => None,
        };
        if let Some((action, pipeline_id, stage_id)) = audit {
            let pipeline = self.raw_pipeline(&pipeline_id);
            let raw = match &stage_id {
                None => pipeline.and_then(|p| serde_json::to_value(p).ok()),
                Some(stage) => pipeline
                    .and_then(|p| p.stages.iter().find(|s| s.id == *stage))
                    .and_then(|s| serde_json::to_value(s).ok()),
            };
            while self.audits.len() >= MAX_AUDITS {
                self.audits.pop_front();
            }
            self.audits.push_back(Audit {
                pipeline_id,
                stage_id,
                action,
                at_ms: now,
                source: crate::source::current(),
                raw: raw.unwrap_or(serde_json::Value::Null),
            });
        }
        self.record_change(0, now, kind);
    }

    /// Audit entries of a pipeline (`stage = None`) or one of its stages, newest first, as
    /// HubSpot's `/audit` endpoints answer them.
    pub fn audit(&self, pipeline_id: &str, stage_id: Option<&str>) -> Vec<serde_json::Value> {
        self.audits
            .iter()
            .rev()
            .filter(|a| a.pipeline_id == pipeline_id && a.stage_id.as_deref() == stage_id)
            .map(|a| {
                let identifier = a.stage_id.clone().unwrap_or_else(|| a.pipeline_id.clone());
                let what = if a.stage_id.is_some() { "Stage" } else { "Pipeline" };
                let action = match a.action {
                    crate::events::Action::Created => "CREATE",
                    crate::events::Action::Updated => "UPDATE",
                    crate::events::Action::Archived => "DELETE",
                };
                let user = a
                    .source
                    .source_id
                    .as_deref()
                    .and_then(|id| id.strip_prefix("userId:"))
                    .and_then(|id| id.parse::<u64>().ok());
                let mut entry = serde_json::json!({
                    "action": action,
                    "identifier": identifier,
                    "portalId": self.id,
                    "timestamp": crate::model::iso_from_ms(a.at_ms),
                    "message": format!("{what} {identifier}: {action} by {}", a.source.change_source),
                    "rawObject": a.raw,
                });
                if let Some(user) = user {
                    entry["fromUserId"] = serde_json::json!(user);
                }
                entry
            })
            .collect()
    }

    /// Takes one queued injected failure, if any.
    pub fn take_injected_failure(&mut self) -> Option<u16> {
        let pending = self.fail_next.as_mut()?;
        let status = pending.status;
        pending.remaining = pending.remaining.saturating_sub(1);
        if pending.remaining == 0 {
            self.fail_next = None;
        }
        Some(status)
    }

    // ----- properties -------------------------------------------------------

    /// Non-archived properties, or only archived ones when `archived` is true.
    pub fn list_properties(&self, archived: bool) -> Vec<Property> {
        self.properties.values().filter(|p| p.archived == archived).cloned().collect()
    }

    /// Any property by name, archived or not.
    pub fn raw_property(&self, name: &str) -> Option<&Property> {
        self.properties.get(name)
    }

    /// A non-archived property by name.
    pub fn active_property(&self, name: &str) -> Option<&Property> {
        self.properties.get(name).filter(|p| !p.archived)
    }

    /// A property; archived ones are only visible with `archived = true`.
    pub fn get_property(&self, name: &str, archived: bool) -> Result<Property, ApiError> {
        match self.properties.get(name) {
            Some(p) if !p.archived || archived => Ok(p.clone()),
            _ => Err(property_not_found(name)),
        }
    }

    /// POST create. Restores (and redefines) an archived property of the same name.
    pub fn create_property(&mut self, input: PropertyCreate) -> Result<Property, ApiError> {
        let mut missing = Vec::new();
        let name = required(&input.name, "name", &mut missing);
        let label = required(&input.label, "label", &mut missing);
        let property_type = required(&input.property_type, "type", &mut missing);
        let field_type = required(&input.field_type, "fieldType", &mut missing);
        let group_name = required(&input.group_name, "groupName", &mut missing);
        if !missing.is_empty() {
            return Err(ApiError::validation(format!("Missing required field(s): {}", missing.join(", "))));
        }
        if !is_valid_internal_name(&name) {
            return Err(ApiError::validation(format!(
                "Invalid property name '{name}': internal names must match ^[a-z][a-z0-9_]{{0,99}}$ \
                 (start with a lower-case letter; only lower-case letters, digits and underscores; at most 100 characters)"
            ))
            .with_context("name", vec![name]));
        }
        let options = build_options(input.options.as_deref().unwrap_or_default())?;
        let external_options = input.external_options.unwrap_or(false);
        validate_shape(
            &name,
            &property_type,
            &field_type,
            &options,
            external_options,
            input.calculation_formula.as_deref(),
        )?;
        validate_hints(input.data_sensitivity.as_deref(), input.number_display_hint.as_deref())?;
        self.ensure_group(&group_name)?;

        let existing = self.properties.get(&name);
        if existing.is_some_and(|p| !p.archived) {
            return Err(ApiError::conflict(format!("A property named '{name}' already exists."))
                .with_sub_category(PROPERTY_EXISTS)
                .with_context("name", vec![name]));
        }
        let has_unique_value = input.has_unique_value.unwrap_or(false);
        if has_unique_value {
            let unique = self.properties.values().filter(|p| !p.archived && p.has_unique_value).count();
            if unique >= MAX_UNIQUE_PROPERTIES {
                return Err(ApiError::validation(format!(
                    "Cannot create '{name}': at most {MAX_UNIQUE_PROPERTIES} properties with unique values are allowed per object"
                )));
            }
        }

        let now = now_timestamp();
        let created_at = existing.map_or_else(|| now.clone(), |p| p.created_at.clone());
        let property = Property {
            name: name.clone(),
            label,
            calculated: field_type == "calculation_equation",
            property_type,
            field_type,
            group_name,
            description: input.description.unwrap_or_default(),
            options,
            display_order: input.display_order.unwrap_or(-1),
            calculation_formula: input.calculation_formula,
            has_unique_value,
            hidden: input.hidden.unwrap_or(false),
            form_field: input.form_field.unwrap_or(false),
            external_options,
            referenced_object_type: input.referenced_object_type,
            hubspot_defined: false,
            show_currency_symbol: input.show_currency_symbol,
            currency_property_name: input.currency_property_name,
            number_display_hint: input.number_display_hint,
            text_display_hint: input.text_display_hint,
            data_sensitivity: input.data_sensitivity.unwrap_or_else(|| "non_sensitive".to_owned()),
            modification_metadata: ModificationMetadata {
                archivable: true,
                read_only_definition: false,
                read_only_value: false,
            },
            created_at,
            updated_at: now,
            archived: false,
            archived_at: None,
        };
        self.properties.insert(name, property.clone());
        Ok(property)
    }

    /// PATCH a non-archived property.
    pub fn update_property(&mut self, name: &str, update: PropertyUpdate) -> Result<Property, ApiError> {
        let current = self.get_property(name, false)?;
        if current.hubspot_defined && current.modification_metadata.read_only_definition {
            return Err(ApiError::validation(format!(
                "Property '{name}' is HubSpot-defined and its definition is read-only"
            )));
        }
        if current.hubspot_defined
            && (update.property_type.as_ref().is_some_and(|t| *t != current.property_type)
                || update.field_type.as_ref().is_some_and(|t| *t != current.field_type))
        {
            return Err(ApiError::validation(format!(
                "Cannot change the type or fieldType of HubSpot-defined property '{name}'"
            )));
        }
        if update.label.as_ref().is_some_and(|l| l.trim().is_empty()) {
            return Err(ApiError::validation("label must not be empty"));
        }
        let property_type = update.property_type.clone().unwrap_or_else(|| current.property_type.clone());
        let field_type = update.field_type.clone().unwrap_or_else(|| current.field_type.clone());
        let options: Vec<PropertyOption> = match &update.options {
            Some(inputs) => build_options(inputs)?,
            None => current.options.clone(),
        };
        let formula = update.calculation_formula.clone().or_else(|| current.calculation_formula.clone());
        validate_shape(name, &property_type, &field_type, &options, current.external_options, formula.as_deref())?;
        validate_hints(None, update.number_display_hint.as_deref())?;
        if let Some(group) = &update.group_name {
            self.ensure_group(group)?;
        }

        let mut property = current;
        property.calculated = field_type == "calculation_equation";
        property.property_type = property_type;
        property.field_type = field_type;
        property.options = options;
        property.calculation_formula = formula;
        if let Some(v) = update.label {
            property.label = v;
        }
        if let Some(v) = update.description {
            property.description = v;
        }
        if let Some(v) = update.group_name {
            property.group_name = v;
        }
        if let Some(v) = update.display_order {
            property.display_order = v;
        }
        if let Some(v) = update.hidden {
            property.hidden = v;
        }
        if let Some(v) = update.form_field {
            property.form_field = v;
        }
        if let Some(v) = update.currency_property_name {
            property.currency_property_name = Some(v);
        }
        if let Some(v) = update.number_display_hint {
            property.number_display_hint = Some(v);
        }
        if let Some(v) = update.text_display_hint {
            property.text_display_hint = Some(v);
        }
        if let Some(v) = update.show_currency_symbol {
            property.show_currency_symbol = Some(v);
        }
        property.updated_at = now_timestamp();
        self.properties.insert(name.to_owned(), property.clone());
        Ok(property)
    }

    /// DELETE (archive) a property.
    pub fn archive_property(&mut self, name: &str) -> Result<(), ApiError> {
        let current = self.get_property(name, false)?;
        if current.hubspot_defined || !current.modification_metadata.archivable {
            return Err(ApiError::validation(format!("Property '{name}' is HubSpot-defined and cannot be archived"))
                .with_context("name", vec![name.to_owned()]));
        }
        let users: Vec<String> = self
            .properties
            .values()
            .filter(|p| !p.archived && p.name != name)
            .filter(|p| p.calculation_formula.as_deref().is_some_and(|f| formula_references(f, name)))
            .map(|p| p.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::validation(format!("Property '{name}' is in use by: {}", users.join(", ")))
                .with_sub_category("CANNOT_DELETE_PROPERTY_IN_USE")
                .with_context("name", vec![name.to_owned()]));
        }
        if let Some(property) = self.properties.get_mut(name) {
            let now = now_timestamp();
            property.archived = true;
            property.archived_at = Some(now.clone());
            property.updated_at = now;
        }
        Ok(())
    }

    // ----- groups -----------------------------------------------------------

    fn ensure_group(&self, name: &str) -> Result<(), ApiError> {
        match self.groups.get(name) {
            Some(g) if !g.archived => Ok(()),
            _ => Err(ApiError::validation(format!("Property group '{name}' does not exist"))
                .with_context("groupName", vec![name.to_owned()])),
        }
    }

    pub fn list_groups(&self, archived: bool) -> Vec<Group> {
        self.groups.values().filter(|g| g.archived == archived).cloned().collect()
    }

    pub fn get_group(&self, name: &str, archived: bool) -> Result<Group, ApiError> {
        match self.groups.get(name) {
            Some(g) if !g.archived || archived => Ok(g.clone()),
            _ => Err(group_not_found(name)),
        }
    }

    pub fn create_group(&mut self, input: GroupCreate) -> Result<Group, ApiError> {
        let mut missing = Vec::new();
        let name = required(&input.name, "name", &mut missing);
        let label = required(&input.label, "label", &mut missing);
        if !missing.is_empty() {
            return Err(ApiError::validation(format!("Missing required field(s): {}", missing.join(", "))));
        }
        if !is_valid_internal_name(&name) {
            return Err(ApiError::validation(format!(
                "Invalid group name '{name}': internal names must match ^[a-z][a-z0-9_]{{0,99}}$"
            )));
        }
        if self.groups.get(&name).is_some_and(|g| !g.archived) {
            return Err(ApiError::conflict(format!("A property group named '{name}' already exists."))
                .with_context("name", vec![name]));
        }
        let group =
            Group { name: name.clone(), label, display_order: input.display_order.unwrap_or(-1), archived: false };
        self.groups.insert(name, group.clone());
        Ok(group)
    }

    pub fn update_group(&mut self, name: &str, update: GroupUpdate) -> Result<Group, ApiError> {
        let mut group = self.get_group(name, false)?;
        if let Some(label) = update.label {
            if label.trim().is_empty() {
                return Err(ApiError::validation("label must not be empty"));
            }
            group.label = label;
        }
        if let Some(order) = update.display_order {
            group.display_order = order;
        }
        self.groups.insert(name.to_owned(), group.clone());
        Ok(group)
    }

    pub fn archive_group(&mut self, name: &str) -> Result<(), ApiError> {
        self.get_group(name, false)?;
        let active: Vec<String> =
            self.properties.values().filter(|p| !p.archived && p.group_name == name).map(|p| p.name.clone()).collect();
        if !active.is_empty() {
            return Err(ApiError::validation(format!(
                "GROUP_WITH_ACTIVE_PROPERTIES: property group '{name}' still contains active properties: {}",
                active.join(", ")
            ))
            .with_sub_category("GROUP_WITH_ACTIVE_PROPERTIES")
            .with_context("name", vec![name.to_owned()]));
        }
        if let Some(group) = self.groups.get_mut(name) {
            group.archived = true;
        }
        Ok(())
    }
}

fn required(value: &Option<String>, field: &'static str, missing: &mut Vec<&'static str>) -> String {
    match value {
        Some(v) if !v.trim().is_empty() => v.clone(),
        _ => {
            missing.push(field);
            String::new()
        }
    }
}

pub(crate) fn property_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Unable to find property {name} for object type deals"))
        .with_context("name", vec![name.to_owned()])
}

fn group_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("Unable to find property group {name} for object type deals"))
        .with_context("name", vec![name.to_owned()])
}

fn option(label: &str, value: &str, order: i64) -> PropertyOption {
    PropertyOption {
        label: label.to_owned(),
        value: value.to_owned(),
        hidden: false,
        display_order: order,
        description: None,
    }
}

/// HubSpot's built-in deal properties that every new portal starts with.
fn default_deal_properties() -> Vec<Property> {
    let now = now_timestamp();
    let stages = [
        ("Appointment Scheduled", "appointmentscheduled"),
        ("Qualified To Buy", "qualifiedtobuy"),
        ("Presentation Scheduled", "presentationscheduled"),
        ("Decision Maker Bought-In", "decisionmakerboughtin"),
        ("Contract Sent", "contractsent"),
        ("Closed Won", "closedwon"),
        ("Closed Lost", "closedlost"),
    ]
    .iter()
    .zip(0_i64..)
    .map(|((label, value), order)| option(label, value, order))
    .collect::<Vec<_>>();
    let specs = vec![
        spec("dealname", "Deal Name", "string", "text", vec![]),
        spec("amount", "Amount", "number", "number", vec![]),
        // The currency of `amount` (HubSpot's multi-currency deals): one of the account's
        // currencies, the company currency unless set.
        spec(
            "deal_currency_code",
            "Currency",
            "enumeration",
            "select",
            DEAL_CURRENCIES.iter().zip(0_i64..).map(|(code, order)| option(code, code, order)).collect(),
        ),
        DefaultSpec { read_only_definition: true, ..spec("dealstage", "Deal Stage", "enumeration", "radio", stages) },
        DefaultSpec {
            read_only_definition: true,
            ..spec("pipeline", "Pipeline", "enumeration", "select", vec![option("Sales Pipeline", "default", 0)])
        },
        spec("closedate", "Close Date", "datetime", "date", vec![]),
        read_only(spec("createdate", "Create Date", "datetime", "date", vec![])),
        read_only(spec("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", vec![])),
        read_only(spec("hs_object_id", "Record ID", "number", "number", vec![])),
        DefaultSpec {
            read_only_definition: true,
            external_options: true,
            ..spec("hubspot_owner_id", "Deal owner", "enumeration", "select", vec![])
        },
    ];
    specs
        .into_iter()
        .zip(0_i64..)
        .map(|(spec, order)| {
            let DefaultSpec {
                name,
                label,
                property_type,
                field_type,
                options,
                read_only_definition: ro_def,
                read_only_value: ro_val,
                external_options: external,
            } = spec;
            Property {
                name: name.to_owned(),
                label: label.to_owned(),
                property_type: property_type.to_owned(),
                field_type: field_type.to_owned(),
                group_name: "dealinformation".to_owned(),
                description: String::new(),
                options,
                display_order: order,
                calculation_formula: None,
                has_unique_value: false,
                hidden: false,
                form_field: matches!(name, "dealname" | "amount" | "closedate"),
                calculated: false,
                external_options: external,
                referenced_object_type: external.then(|| "OWNER".to_owned()),
                hubspot_defined: true,
                show_currency_symbol: (name == "amount").then_some(true),
                currency_property_name: None,
                number_display_hint: (name == "amount").then(|| "currency".to_owned()),
                text_display_hint: None,
                data_sensitivity: "non_sensitive".to_owned(),
                modification_metadata: ModificationMetadata {
                    archivable: false,
                    read_only_definition: ro_def,
                    read_only_value: ro_val,
                },
                created_at: now.clone(),
                updated_at: now.clone(),
                archived: false,
                archived_at: None,
            }
        })
        .collect()
}

/// The currencies `deal_currency_code` offers.
const DEAL_CURRENCIES: &[&str] = &["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "DKK"];

/// Definition of one built-in property.
struct DefaultSpec {
    name: &'static str,
    label: &'static str,
    property_type: &'static str,
    field_type: &'static str,
    options: Vec<PropertyOption>,
    read_only_definition: bool,
    read_only_value: bool,
    external_options: bool,
}

fn spec(
    name: &'static str,
    label: &'static str,
    property_type: &'static str,
    field_type: &'static str,
    options: Vec<PropertyOption>,
) -> DefaultSpec {
    DefaultSpec {
        name,
        label,
        property_type,
        field_type,
        options,
        read_only_definition: false,
        read_only_value: false,
        external_options: false,
    }
}

/// System-maintained: neither definition nor value can be edited.
fn read_only(spec: DefaultSpec) -> DefaultSpec {
    DefaultSpec { read_only_definition: true, read_only_value: true, ..spec }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str) -> PropertyCreate {
        PropertyCreate {
            name: Some(name.into()),
            label: Some("Label".into()),
            property_type: Some("string".into()),
            field_type: Some("text".into()),
            group_name: Some("gomark".into()),
            ..PropertyCreate::default()
        }
    }

    #[test]
    fn defaults_present() {
        let portal = Portal::new(1);
        let names: Vec<_> = portal.list_properties(false).into_iter().map(|p| p.name).collect();
        for n in ["dealname", "amount", "dealstage", "hs_object_id", "hubspot_owner_id"] {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
        assert_eq!(portal.list_groups(false).len(), 2);
    }

    #[test]
    fn restore_and_in_use() {
        let mut portal = Portal::new(1);
        portal.create_property(create("gomark_a")).expect("create");
        let mut calc = create("gomark_b");
        calc.property_type = Some("number".into());
        calc.field_type = Some("calculation_equation".into());
        calc.calculation_formula = Some("gomark_a * 2".into());
        let calc = portal.create_property(calc).expect("calc");
        assert!(calc.calculated);
        let err = portal.archive_property("gomark_a").expect_err("in use");
        assert_eq!(err.sub_category, Some("CANNOT_DELETE_PROPERTY_IN_USE"));
        portal.archive_property("gomark_b").expect("archive");
        portal.archive_property("gomark_a").expect("archive");
        assert!(portal.get_property("gomark_a", false).is_err());
        assert!(portal.get_property("gomark_a", true).is_ok());
        let restored = portal.create_property(create("gomark_a")).expect("restore");
        assert!(!restored.archived && restored.archived_at.is_none());
    }

    #[test]
    fn group_rules() {
        let mut portal = Portal::new(1);
        portal.create_property(create("gomark_a")).expect("create");
        let err = portal.archive_group("gomark").expect_err("active");
        assert_eq!(err.sub_category, Some("GROUP_WITH_ACTIVE_PROPERTIES"));
        portal.archive_property("gomark_a").expect("archive");
        portal.archive_group("gomark").expect("archive group");
        assert!(portal.create_property(create("gomark_c")).is_err());
    }

    #[test]
    fn fail_next_counts_down() {
        let mut portal = Portal::new(1);
        portal.fail_next = Some(FailNext { remaining: 2, status: 503 });
        assert_eq!(portal.take_injected_failure(), Some(503));
        assert_eq!(portal.take_injected_failure(), Some(503));
        assert_eq!(portal.take_injected_failure(), None);
    }
}
