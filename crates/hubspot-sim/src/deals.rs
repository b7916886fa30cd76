//! Deal records (CONTRACT.md §6): create, read, update, archive and their batch forms.
//!
//! All property values are strings. The simulator maintains `hs_object_id`, `createdate` and
//! `hs_lastmodifieddate`. Datetime values are returned as **ISO-8601** like HubSpot's
//! (`"2026-11-21T10:00:00.000Z"`): `createdate`, `hs_lastmodifieddate`, and any datetime
//! property written as epoch milliseconds or ISO (both accepted, as HubSpot does); `date`
//! properties as `YYYY-MM-DD`. Search filters compare dates numerically whichever form is
//! given. The top-level `createdAt`/`updatedAt`/`archivedAt` are ISO-8601 too. `hs_lastmodifieddate` only moves when a write changes at least one value.
//! Create needs `dealname` and `dealstage`; `pipeline` defaults to `default` (so it must be
//! given once `default` is archived), and the stage must belong to the pipeline. Unknown,
//! read-only and ill-typed values give HubSpot's `Property values were not valid: [...]` 400.
//!
//! Every write appends [`Change`]s to the portal's outbox, which the simulator drains into
//! the journal and the webhook dispatcher (see `HubSpotSim::write`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::events::{Change, ChangeKind};
use crate::model::{Property, iso_from_ms, parse_datetime_ms};
use crate::pipelines::DEFAULT_PIPELINE_ID;
use crate::portal::Portal;
use crate::search::IndexedDeal;
use crate::source::ChangeSource;

/// Properties returned when a request names none.
pub(crate) const DEFAULT_DEAL_PROPERTIES: &[&str] =
    &["dealname", "amount", "closedate", "pipeline", "dealstage", "createdate", "hs_lastmodifieddate", "hs_object_id"];

/// Always returned by HubSpot, whatever `properties` asks for.
pub(crate) const ALWAYS_RETURNED: &[&str] = &["createdate", "hs_lastmodifieddate", "hs_object_id"];

/// Maintained by the simulator: never writable, never reported as `deal.propertyChange`.
const SYSTEM_PROPERTIES: &[&str] = &["hs_object_id", "createdate", "hs_lastmodifieddate"];

/// Maximum inputs of a batch call.
pub(crate) const MAX_BATCH_INPUTS: usize = 100;
/// Maximum inputs of a batch read that asks for `propertiesWithHistory`.
pub(crate) const MAX_HISTORY_BATCH_INPUTS: usize = 50;
/// Values kept per property for `propertiesWithHistory` (newest first); bounds memory.
const HISTORY_PER_PROPERTY: usize = 20;

/// Deal ids are global in HubSpot; a process-wide counter keeps them unique across portals, so
/// a test that confuses portals sees 404s instead of another portal's deal.
static NEXT_DEAL_ID: AtomicU64 = AtomicU64::new(30_000_000_001);

/// After a restore: deal ids handed out from now on are above every restored one.
pub(crate) fn reserve_ids_through(highest: u64) {
    NEXT_DEAL_ID.fetch_max(highest + 1, Ordering::Relaxed);
}

/// One historical value of a property.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct HistoryEntry {
    pub value: String,
    pub timestamp_ms: i64,
    /// Who wrote it (older state files have none: shown as `API`).
    #[serde(default)]
    pub source: Option<ChangeSource>,
}

/// A stored deal.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Deal {
    pub id: u64,
    pub props: BTreeMap<String, String>,
    /// Newest first, at most [`HISTORY_PER_PROPERTY`] per property.
    history: BTreeMap<String, VecDeque<HistoryEntry>>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub archived: bool,
    pub archived_ms: Option<i64>,
}

impl Deal {
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.props.get(name).map(String::as_str)
    }

    fn set(&mut self, name: &str, value: Option<String>, now_ms: i64, source: &ChangeSource) {
        let entry = self.history.entry(name.to_owned()).or_default();
        entry.push_front(HistoryEntry {
            value: value.clone().unwrap_or_default(),
            timestamp_ms: now_ms,
            source: Some(source.clone()),
        });
        entry.truncate(HISTORY_PER_PROPERTY);
        match value {
            Some(value) => self.props.insert(name.to_owned(), value),
            None => self.props.remove(name),
        };
    }

    pub fn indexed(&self) -> IndexedDeal {
        IndexedDeal { props: self.props.clone(), created_ms: self.created_ms, updated_ms: self.updated_ms }
    }
}

/// Which properties a response carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Selection<'a> {
    /// [`DEFAULT_DEAL_PROPERTIES`].
    Default,
    /// The named (existing) properties plus [`ALWAYS_RETURNED`].
    Named(&'a [String]),
    /// Every property with a value (library helpers).
    All,
}

impl<'a> Selection<'a> {
    /// `Default` for an empty list, `Named` otherwise.
    pub fn from_list(names: &'a [String]) -> Self {
        if names.is_empty() { Self::Default } else { Self::Named(names) }
    }
}

/// Renders a deal (or search-index snapshot) as a `SimplePublicObject`.
pub(crate) fn render_object(
    portal: &Portal,
    id: u64,
    props: &BTreeMap<String, String>,
    created_ms: i64,
    updated_ms: i64,
    archived_ms: Option<i64>,
    selection: Selection<'_>,
) -> Value {
    let mut out = Map::new();
    let mut put = |name: &str| {
        out.insert(name.to_owned(), props.get(name).map_or(Value::Null, |v| Value::String(v.clone())));
    };
    match selection {
        Selection::Default => DEFAULT_DEAL_PROPERTIES.iter().for_each(|n| put(n)),
        Selection::Named(names) => {
            ALWAYS_RETURNED.iter().for_each(|n| put(n));
            // Like HubSpot, names that are not properties are silently left out.
            names.iter().filter(|n| portal.active_property(n).is_some()).for_each(|n| put(n));
        }
        Selection::All => props.keys().for_each(|n| put(n)),
    }
    let mut object = json!({
        "id": id.to_string(),
        "properties": out,
        "createdAt": iso_from_ms(created_ms),
        "updatedAt": iso_from_ms(updated_ms),
        "archived": archived_ms.is_some(),
    });
    if let Some(ms) = archived_ms {
        object["archivedAt"] = json!(iso_from_ms(ms));
    }
    object
}

/// One invalid property value, rendered like HubSpot's `Property values were not valid` list.
#[derive(Debug, Clone)]
struct PropertyProblem {
    name: String,
    error: &'static str,
    message: String,
}

fn property_errors(problems: &[PropertyProblem]) -> ApiError {
    let list: Vec<Value> = problems
        .iter()
        .map(|p| {
            json!({
                "isValid": false,
                "message": p.message,
                "error": p.error,
                "name": p.name,
                "localizedErrorMessage": p.message,
            })
        })
        .collect();
    ApiError::validation(format!("Property values were not valid: {}", Value::Array(list)))
        .with_context("properties", problems.iter().map(|p| p.name.clone()).collect())
}

fn problem(name: &str, error: &'static str, message: String) -> PropertyProblem {
    PropertyProblem { name: name.to_owned(), error, message }
}

/// Converts a `properties` input object to `(name, value)` pairs; `None` clears the value
/// (an empty string or `null`, as in HubSpot).
pub(crate) fn input_values(properties: Map<String, Value>) -> Result<Vec<(String, Option<String>)>, ApiError> {
    properties
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                other => {
                    return Err(ApiError::validation(format!(
                        "Invalid input JSON: the value of property '{name}' must be a string (got {other})"
                    )));
                }
            };
            Ok((name, value))
        })
        .collect()
}

/// Checks one value against its property definition (type and options).
fn check_value(definition: &Property, value: &str) -> Option<PropertyProblem> {
    let name = definition.name.as_str();
    match definition.property_type.as_str() {
        "number" if value.trim().parse::<f64>().map_or(true, |v| !v.is_finite()) => {
            Some(problem(name, "INVALID_FLOAT", format!("{value} was not a valid number.")))
        }
        "bool" if !matches!(value, "true" | "false") => {
            Some(problem(name, "INVALID_BOOLEAN", format!("{value} was not a valid boolean (true/false).")))
        }
        "date" | "datetime" if parse_datetime_ms(value).is_none() => Some(problem(
            name,
            "INVALID_DATE",
            format!("{value} was not a valid date: use epoch milliseconds or an ISO-8601 date/datetime."),
        )),
        // Pipeline and stage are checked against the pipelines; external options (owners)
        // cannot be checked here.
        "enumeration" if !definition.external_options && !matches!(name, "pipeline" | "dealstage") => {
            let bad = value.split(';').find(|v| !definition.options.iter().any(|o| o.value == *v))?;
            Some(problem(name, "INVALID_OPTION", format!("{bad} was not one of the allowed options")))
        }
        _ => None,
    }
}

impl Portal {
    /// The deal's pipeline rules (2026-09): a write that sets the stage is a move from the
    /// deal's current stage (a creation for a new deal, or one entering another pipeline).
    fn check_pipeline_rules(
        &self,
        values: &[(String, Option<String>)],
        existing: Option<&Deal>,
    ) -> Result<(), ApiError> {
        let written = |key: &str| values.iter().find(|(n, _)| n == key).and_then(|(_, v)| v.as_deref());
        let current = |key: &str| existing.and_then(|d| d.prop(key));
        let pipeline_id = written("pipeline").or_else(|| current("pipeline")).unwrap_or(DEFAULT_PIPELINE_ID);
        let Some(to) = written("dealstage") else { return Ok(()) };
        let (Some(rules), Ok(pipeline)) = (self.pipeline_rules.get(pipeline_id), self.get_pipeline(pipeline_id, false))
        else {
            return Ok(());
        };
        let same_pipeline = existing.is_some() && current("pipeline").unwrap_or(DEFAULT_PIPELINE_ID) == pipeline_id;
        let from = if same_pipeline { current("dealstage") } else { None };
        crate::pipeline_rules::check_move(rules, pipeline, from, to)
    }

    /// Validates property writes for a new deal (`existing = None`) or an update, including the
    /// pipeline/stage pair the write results in.
    fn validate_deal_write(
        &self,
        values: &[(String, Option<String>)],
        existing: Option<&Deal>,
    ) -> Result<(), ApiError> {
        let mut problems = Vec::new();
        for (name, value) in values {
            let Some(definition) = self.active_property(name) else {
                problems.push(problem(name, "PROPERTY_DOESNT_EXIST", format!("Property \"{name}\" does not exist")));
                continue;
            };
            if SYSTEM_PROPERTIES.contains(&name.as_str()) || definition.modification_metadata.read_only_value {
                problems.push(problem(name, "READ_ONLY_VALUE", format!("Property \"{name}\" is read-only")));
                continue;
            }
            if let Some(found) = value.as_deref().and_then(|v| check_value(definition, v)) {
                problems.push(found);
            }
        }
        let lookup =
            |key: &str| -> Option<Option<&str>> { values.iter().find(|(n, _)| n == key).map(|(_, v)| v.as_deref()) };
        let current = |key: &str| existing.and_then(|d| d.prop(key));
        if existing.is_none() {
            for required in ["dealname", "dealstage"] {
                if lookup(required).flatten().is_none() {
                    problems.push(problem(
                        required,
                        "REQUIRED_PROPERTY",
                        format!("Property \"{required}\" is required to create a deal"),
                    ));
                }
            }
        } else if lookup("dealstage").is_some_and(|v| v.is_none()) || lookup("pipeline").is_some_and(|v| v.is_none()) {
            problems.push(problem(
                "dealstage",
                "REQUIRED_PROPERTY",
                "A deal's pipeline and stage cannot be cleared".into(),
            ));
        }
        if problems.is_empty() && (existing.is_none() || lookup("pipeline").is_some() || lookup("dealstage").is_some())
        {
            let pipeline_id =
                lookup("pipeline").flatten().or_else(|| current("pipeline")).unwrap_or(DEFAULT_PIPELINE_ID);
            let stage_id = lookup("dealstage").flatten().or_else(|| current("dealstage")).unwrap_or_default();
            match self.get_pipeline(pipeline_id, false) {
                Err(_) => problems.push(problem(
                    "pipeline",
                    "INVALID_OPTION",
                    format!("{pipeline_id} was not one of the allowed options (no such active deal pipeline)"),
                )),
                Ok(pipeline) if pipeline.stage(stage_id).is_none() => problems.push(problem(
                    "dealstage",
                    "INVALID_OPTION",
                    format!("{stage_id} was not one of the allowed options (not a stage of pipeline {pipeline_id})"),
                )),
                Ok(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(property_errors(&problems));
        }
        // From 2026-09 the portal's own validation rules apply to API writes too.
        if crate::version::current().is_some_and(|v| v.enforces_write_validation()) {
            crate::rules::check_write(&self.rules, values, |name| existing.and_then(|d| d.prop(name)))?;
            self.check_pipeline_rules(values, existing)?;
        }
        Ok(())
    }

    /// Queues a change for the journal and webhooks, stamped with the current write's source.
    pub(crate) fn record_change(&mut self, object_id: u64, occurred_at: i64, kind: ChangeKind) {
        self.next_event_id += 1;
        self.outbox.push(Change {
            portal_id: self.id,
            event_id: self.next_event_id,
            occurred_at,
            object_id,
            kind,
            source: crate::source::current(),
        });
    }

    /// Stores datetime values the way HubSpot returns them: ISO-8601 with milliseconds, whether
    /// they came as epoch milliseconds or ISO (a `date` property keeps `YYYY-MM-DD`).
    fn normalise_values(&self, values: Vec<(String, Option<String>)>) -> Vec<(String, Option<String>)> {
        values
            .into_iter()
            .map(|(name, value)| {
                let kind = self.active_property(&name).map(|p| p.property_type.as_str());
                let value = match (kind, value) {
                    (Some("datetime"), Some(v)) => Some(parse_datetime_ms(&v).map_or(v, iso_from_ms)),
                    (Some("date"), Some(v)) => Some(
                        parse_datetime_ms(&v)
                            .and_then(chrono::DateTime::from_timestamp_millis)
                            .map_or(v, |d| d.format("%Y-%m-%d").to_string()),
                    ),
                    (_, v) => v,
                };
                (name, value)
            })
            .collect()
    }

    fn reindex(&mut self, id: u64, now: Instant) {
        let doc = self.deals.get(&id).filter(|d| !d.archived).map(Deal::indexed);
        self.index.record(now, id, doc);
    }

    /// Validates `values` for a new deal without creating it.
    pub fn check_new_deal(&self, values: &[(String, Option<String>)]) -> Result<(), ApiError> {
        self.validate_deal_write(values, None)
    }

    /// Creates a deal (emits `deal.creation`) and returns its id.
    pub fn create_deal(&mut self, values: Vec<(String, Option<String>)>, now_ms: i64) -> Result<u64, ApiError> {
        self.validate_deal_write(&values, None)?;
        let id = NEXT_DEAL_ID.fetch_add(1, Ordering::Relaxed);
        let mut deal = Deal {
            id,
            props: BTreeMap::new(),
            history: BTreeMap::new(),
            created_ms: now_ms,
            updated_ms: now_ms,
            archived: false,
            archived_ms: None,
        };
        let stamp = iso_from_ms(now_ms);
        let source = crate::source::current();
        deal.set("hs_object_id", Some(id.to_string()), now_ms, &source);
        deal.set("createdate", Some(stamp.clone()), now_ms, &source);
        deal.set("hs_lastmodifieddate", Some(stamp), now_ms, &source);
        if !values.iter().any(|(n, v)| n == "pipeline" && v.is_some()) {
            deal.set("pipeline", Some(DEFAULT_PIPELINE_ID.to_owned()), now_ms, &source);
        }
        if !values.iter().any(|(n, v)| n == "deal_currency_code" && v.is_some()) {
            deal.set("deal_currency_code", Some(self.company_currency.clone()), now_ms, &source);
        }
        for (name, value) in self.normalise_values(values) {
            if value.is_some() {
                deal.set(&name, value, now_ms, &source);
            }
        }
        self.deals.insert(id, deal);
        self.record_change(id, now_ms, ChangeKind::Creation);
        self.reindex(id, Instant::now());
        Ok(id)
    }

    /// A non-archived deal (or any, with `archived`).
    pub fn find_deal(&self, id: &str, archived: bool) -> Option<&Deal> {
        let id: u64 = id.trim().parse().ok()?;
        self.deals.get(&id).filter(|d| archived || !d.archived)
    }

    /// A deal looked up by `id_property` (`hs_object_id` or a unique-value property).
    pub fn find_deal_by(&self, id_property: Option<&str>, value: &str, archived: bool) -> Option<&Deal> {
        match id_property {
            None | Some("hs_object_id") => self.find_deal(value, archived),
            Some(name) => self.deals.values().find(|d| (archived || !d.archived) && d.prop(name) == Some(value)),
        }
    }

    /// Checks an `idProperty` parameter: `hs_object_id` or a unique-value property.
    pub fn check_id_property(&self, id_property: Option<&str>) -> Result<(), ApiError> {
        match id_property {
            None | Some("hs_object_id") => Ok(()),
            Some(name) if self.active_property(name).is_some_and(|p| p.has_unique_value) => Ok(()),
            Some(name) => Err(ApiError::validation(format!(
                "idProperty '{name}' is not a property with unique values (hasUniqueValue=true)"
            ))),
        }
    }

    /// Validates a PATCH of deal `id` without applying it (404 for unknown/archived deals).
    pub fn check_deal_update(&self, id: u64, values: &[(String, Option<String>)]) -> Result<(), ApiError> {
        let deal = self.deals.get(&id).filter(|d| !d.archived).ok_or_else(|| deal_not_found(&id.to_string()))?;
        self.validate_deal_write(values, Some(deal))
    }

    /// PATCHes deal `id`: applies changed values, emits one `deal.propertyChange` per changed
    /// property and bumps `hs_lastmodifieddate` if anything changed.
    pub fn update_deal(&mut self, id: u64, values: Vec<(String, Option<String>)>, now_ms: i64) -> Result<(), ApiError> {
        self.check_deal_update(id, &values)?;
        let values = self.normalise_values(values);
        let source = crate::source::current();
        let mut changed = Vec::new();
        if let Some(deal) = self.deals.get_mut(&id) {
            for (name, value) in values {
                if deal.prop(&name) != value.as_deref() {
                    deal.set(&name, value.clone(), now_ms, &source);
                    changed.push((name, value.unwrap_or_default()));
                }
            }
            if !changed.is_empty() {
                deal.updated_ms = now_ms;
                deal.set("hs_lastmodifieddate", Some(iso_from_ms(now_ms)), now_ms, &source);
            }
        }
        if !changed.is_empty() {
            for (name, value) in changed {
                self.record_change(id, now_ms, ChangeKind::PropertyChange { name, value });
            }
            self.reindex(id, Instant::now());
        }
        Ok(())
    }

    /// Archives deal `id` (emits `deal.deletion`); `false` if it was unknown or already archived.
    pub fn archive_deal(&mut self, id: u64, now_ms: i64) -> bool {
        let Some(deal) = self.deals.get_mut(&id).filter(|d| !d.archived) else {
            return false;
        };
        deal.archived = true;
        deal.archived_ms = Some(now_ms);
        self.record_change(id, now_ms, ChangeKind::Deletion);
        self.reindex(id, Instant::now());
        true
    }

    /// Renders a stored deal.
    pub fn render_deal(&self, deal: &Deal, selection: Selection<'_>, with_history: &[String]) -> Value {
        let mut object =
            render_object(self, deal.id, &deal.props, deal.created_ms, deal.updated_ms, deal.archived_ms, selection);
        if !with_history.is_empty() {
            let mut histories = Map::new();
            for name in with_history.iter().filter(|n| self.active_property(n).is_some()) {
                let entries: Vec<Value> = deal
                    .history
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        let mut entry = json!({
                            "value": h.value,
                            "timestamp": iso_from_ms(h.timestamp_ms),
                            "sourceType": h.source.as_ref().map_or("API", |s| s.change_source.as_str()),
                        });
                        if let Some(id) = h.source.as_ref().and_then(|s| s.source_id.as_deref()) {
                            entry["sourceId"] = json!(id);
                        }
                        entry
                    })
                    .collect();
                histories.insert(name.clone(), Value::Array(entries));
            }
            object["propertiesWithHistory"] = Value::Object(histories);
        }
        object
    }

    /// Renders deal `id` (`null` if it does not exist).
    pub fn render_by_id(&self, id: u64, selection: Selection<'_>) -> Value {
        self.deals.get(&id).map_or(Value::Null, |deal| self.render_deal(deal, selection, &[]))
    }

    /// One page of deals ordered by id: those with id ≥ `after`, at most `limit`, and the next
    /// cursor if more remain.
    pub fn list_deals(&self, after: u64, limit: usize, archived: bool) -> (Vec<&Deal>, Option<u64>) {
        let mut page: Vec<&Deal> = Vec::with_capacity(limit);
        let mut next = None;
        for deal in self.deals.range(after..).map(|(_, d)| d).filter(|d| d.archived == archived) {
            if page.len() == limit {
                next = Some(deal.id);
                break;
            }
            page.push(deal);
        }
        (page, next)
    }

    /// Appends a snapshot of deal `id` (its `properties`, all when empty) to the journal;
    /// `false` if there is no such non-archived deal.
    pub fn snapshot_deal(&mut self, id: u64, properties: &[String]) -> bool {
        let Some(deal) = self.deals.get(&id).filter(|d| !d.archived) else {
            return false;
        };
        let values: BTreeMap<String, String> = deal
            .props
            .iter()
            .filter(|(name, _)| properties.is_empty() || properties.contains(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.record_change(id, crate::model::now_ms(), ChangeKind::Snapshot { properties: values });
        true
    }

    /// Number of non-archived deals.
    pub fn deal_count(&self) -> usize {
        self.deals.values().filter(|d| !d.archived).count()
    }
}

pub(crate) fn deal_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Object not found.  objectId are usually numeric. (deal {id})"))
        .with_context("id", vec![id.to_owned()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (!v.is_empty()).then(|| (*v).to_owned()))).collect()
    }

    #[test]
    fn create_validates_and_emits() {
        let mut portal = Portal::new(7);
        let id = portal
            .create_deal(values(&[("dealname", "A"), ("dealstage", "qualifiedtobuy"), ("amount", "10")]), 1_000)
            .expect("create");
        let deal = portal.find_deal(&id.to_string(), false).expect("deal");
        assert_eq!(deal.prop("pipeline"), Some("default"));
        assert_eq!(deal.prop("createdate"), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(portal.outbox.len(), 1);
        assert_eq!(portal.outbox[0].kind, ChangeKind::Creation);

        for bad in [
            values(&[("dealname", "A")]),
            values(&[("dealname", "A"), ("dealstage", "nope")]),
            values(&[("dealname", "A"), ("dealstage", "closedwon"), ("pipeline", "nope")]),
            values(&[("dealname", "A"), ("dealstage", "closedwon"), ("amount", "ten")]),
            values(&[("dealname", "A"), ("dealstage", "closedwon"), ("unknown_prop", "x")]),
            values(&[("dealname", "A"), ("dealstage", "closedwon"), ("hs_object_id", "1")]),
            values(&[("dealname", "A"), ("dealstage", "closedwon"), ("closedate", "tomorrow")]),
        ] {
            let err = portal.create_deal(bad.clone(), 1_000).expect_err("invalid");
            assert_eq!(err.status.as_u16(), 400, "{bad:?}");
            assert!(err.message.starts_with("Property values were not valid"), "{}", err.message);
        }
    }

    #[test]
    fn update_only_emits_real_changes() {
        let mut portal = Portal::new(7);
        let id = portal.create_deal(values(&[("dealname", "A"), ("dealstage", "closedwon")]), 1_000).expect("create");
        portal.outbox.clear();
        portal.update_deal(id, values(&[("dealname", "A")]), 2_000).expect("noop");
        assert!(portal.outbox.is_empty());
        assert_eq!(portal.deals[&id].prop("hs_lastmodifieddate"), Some("1970-01-01T00:00:01.000Z"));
        portal.update_deal(id, values(&[("dealname", "B"), ("amount", "5")]), 3_000).expect("update");
        assert_eq!(portal.outbox.len(), 2);
        assert_eq!(portal.deals[&id].prop("hs_lastmodifieddate"), Some("1970-01-01T00:00:03.000Z"));
        assert!(portal.update_deal(id, values(&[("dealstage", "nope")]), 4_000).is_err());
        assert!(portal.archive_deal(id, 5_000));
        assert!(!portal.archive_deal(id, 6_000));
        assert_eq!(portal.update_deal(id, values(&[("dealname", "C")]), 7_000).expect_err("gone").status.as_u16(), 404);
    }
}
