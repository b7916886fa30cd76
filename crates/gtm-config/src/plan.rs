//! Planning: what must change in a HubSpot portal so it matches an effective config.

use crate::effective::EffectiveConfig;
use crate::model::{
    DealProperty, Pipeline, PropertyOption, PropertyType, Stage, canonical_probability, order_or_index,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

// ---------------------------------------------------------------------------------------
// Observed state (mirror of what hubspot-sync reads from a portal)
// ---------------------------------------------------------------------------------------

/// What a portal holds, as read by hubspot-sync.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    #[serde(default)]
    pub properties: Vec<ObservedProperty>,
    #[serde(default)]
    pub groups: Vec<ObservedGroup>,
    #[serde(default)]
    pub pipelines: Vec<ObservedPipeline>,
    /// The API version the portal is pinned to (hubspot-sync's record, not HubSpot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The deal properties' validation rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_rules: Vec<ObservedRule>,
    /// Deals in the stages a plan moves deals out of (counted only for those, see
    /// [`Plan::deal_counts_needed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage_deals: Vec<StageDeals>,
}

/// How many deals a stage holds, as HubSpot search counts them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageDeals {
    /// HubSpot pipeline id.
    pub pipeline: String,
    /// HubSpot stage id.
    pub stage: String,
    pub deals: u64,
    /// Of them, how many have no value for a property (those a rule may require where
    /// they go).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lacking: BTreeMap<String, u64>,
}

/// What to count before a plan can move a stage's deals: the stage (HubSpot ids) and the
/// properties whose absence a conditional-required rule at the destination would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealCount {
    pub pipeline: String,
    pub stage: String,
    pub lacking: Vec<String>,
}

/// A validation rule as the portal holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedRule {
    pub property: String,
    /// Kept as HubSpot's string: it may add rule types GoMark does not know yet.
    pub rule_type: String,
    #[serde(default)]
    pub rule_arguments: Vec<String>,
    #[serde(default)]
    pub should_apply_normalization: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedProperty {
    pub name: String,
    pub label: String,
    /// Kept as HubSpot's string: reads may return types that cannot be created (`json`).
    #[serde(rename = "type")]
    pub property_type: String,
    pub field_type: String,
    pub group_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    #[serde(default)]
    pub hubspot_defined: bool,
    #[serde(default)]
    pub has_unique_value: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedGroup {
    pub name: String,
    pub label: String,
    #[serde(default)]
    pub display_order: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedPipeline {
    pub hubspot_id: String,
    pub label: String,
    #[serde(default)]
    pub display_order: i32,
    #[serde(default)]
    pub stages: Vec<ObservedStage>,
    /// The pipeline's rules, with HubSpot stage ids; `None` when the portal's API version
    /// does not serve the Pipeline Rules API (or they were not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<crate::rules::PipelineRules>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedStage {
    pub hubspot_id: String,
    pub label: String,
    #[serde(default)]
    pub display_order: i32,
    /// HubSpot's `metadata.probability`, canonically "0.1".
    #[serde(default)]
    pub probability: String,
    /// HubSpot's `metadata.isClosed`.
    #[serde(default)]
    pub is_closed: bool,
}

/// GoMark pipeline/stage ids ↔ HubSpot-generated ids. A missing entry means "not created
/// yet".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineIdMap {
    /// Keyed by GoMark pipeline id.
    pub pipelines: BTreeMap<String, PipelineIds>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineIds {
    pub hubspot_id: String,
    /// GoMark stage id → HubSpot stage id.
    #[serde(default)]
    pub stages: BTreeMap<String, String>,
}

impl PipelineIdMap {
    /// Records a pipeline mapping (keeps its stage mappings if it existed).
    pub fn insert_pipeline(&mut self, gomark_id: &str, hubspot_id: &str) {
        self.pipelines.entry(gomark_id.to_string()).or_default().hubspot_id = hubspot_id.to_string();
    }

    /// Records a stage mapping; the pipeline entry must exist or is created empty.
    pub fn insert_stage(&mut self, pipeline_id: &str, stage_id: &str, hubspot_stage_id: &str) {
        self.pipelines
            .entry(pipeline_id.to_string())
            .or_default()
            .stages
            .insert(stage_id.to_string(), hubspot_stage_id.to_string());
    }

    pub fn hubspot_pipeline(&self, pipeline_id: &str) -> Option<&str> {
        self.pipelines.get(pipeline_id).map(|p| p.hubspot_id.as_str()).filter(|id| !id.is_empty())
    }

    pub fn hubspot_stage(&self, pipeline_id: &str, stage_id: &str) -> Option<&str> {
        self.pipelines.get(pipeline_id).and_then(|p| p.stages.get(stage_id)).map(String::as_str)
    }

    pub fn gomark_pipeline(&self, hubspot_id: &str) -> Option<&str> {
        self.pipelines.iter().find(|(_, p)| p.hubspot_id == hubspot_id).map(|(k, _)| k.as_str())
    }

    pub fn gomark_stage(&self, pipeline_id: &str, hubspot_stage_id: &str) -> Option<&str> {
        self.pipelines
            .get(pipeline_id)
            .and_then(|p| p.stages.iter().find(|(_, h)| *h == hubspot_stage_id).map(|(k, _)| k.as_str()))
    }

    /// Completes the recorded ids (what GoMark created) with what it did not create itself:
    /// a declared pipeline or stage without an id is taken to be the observed one with the
    /// same label (adopted, or made by hand). Recorded ids always win, so a stage GoMark
    /// created and the config later dropped stays mapped, and is planned for deletion.
    pub fn match_by_label(&mut self, desired: &EffectiveConfig, observed: &Observed) {
        let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
        for pipeline in &desired.pipelines {
            let found = match self.hubspot_pipeline(&pipeline.id) {
                Some(id) => observed.pipelines.iter().find(|o| o.hubspot_id == id),
                None => observed.pipelines.iter().find(|o| same(&o.label, &pipeline.label)),
            };
            let Some(found) = found else { continue };
            self.insert_pipeline(&pipeline.id, &found.hubspot_id);
            for stage in &pipeline.stages {
                if self.hubspot_stage(&pipeline.id, &stage.id).is_none()
                    && let Some(s) = found.stages.iter().find(|s| same(&s.label, &stage.label))
                {
                    self.insert_stage(&pipeline.id, &stage.id, &s.hubspot_id);
                }
            }
        }
    }
}

/// `(hubspot_pipeline_id, hubspot_stage_id)` of stages that still hold deals.
pub type DealsInStages = BTreeSet<(String, String)>;

// ---------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    PropertyGroup(String),
    DealProperty(String),
    /// GoMark pipeline id.
    Pipeline(String),
    /// GoMark pipeline id, GoMark stage id.
    Stage(String, String),
    /// Property name, HubSpot rule type (one rule of each type per property).
    ValidationRule(String, String),
    /// The deals of a removed stage (GoMark pipeline id, GoMark stage id), moved to the
    /// stage its `removedStages` entry names before the stage is deleted.
    StageDeals(String, String),
    /// A pipeline's rules (GoMark pipeline id), written together.
    PipelineRules(String),
    /// The HubSpot API version the portal is pinned to.
    ApiVersion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    Archive,
}

/// One field of an action. For a create, `before` is null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// Why an action must not be applied as is, and what a human can do instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocked {
    pub reason: String,
    pub safe_alternative: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub target: Target,
    pub op: Op,
    pub changes: Vec<FieldChange>,
    pub blocked: Option<Blocked>,
}

/// Actions in a safe execution order: groups, properties (creates and updates, then
/// archives), then each pipeline with its stages.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// What applying an action would start to break elsewhere (it is still applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// A consequence of an action a person should know before applying it: e.g. a rule that
/// will make HubSpot refuse record writes GoMark or an integration makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    pub target: Target,
    pub op: Op,
    /// Stable, for machines: `rule_rejects_writes`.
    pub code: String,
    pub message: String,
}

pub const WARNING_RULE_REJECTS_WRITES: &str = "rule_rejects_writes";

/// Counts of applicable actions per op, plus blocked ones (counted only as blocked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlanSummary {
    pub create: usize,
    pub update: usize,
    pub archive: usize,
    pub blocked: usize,
}

impl fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to create, {} to update, {} to archive, {} blocked",
            self.create, self.update, self.archive, self.blocked
        )
    }
}

impl Plan {
    /// True when the portal already matches (blocked actions count as not empty: they
    /// need a human).
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn summary(&self) -> PlanSummary {
        let mut s = PlanSummary::default();
        for a in &self.actions {
            match (a.blocked.is_some(), a.op) {
                (true, _) => s.blocked += 1,
                (false, Op::Create) => s.create += 1,
                (false, Op::Update) => s.update += 1,
                (false, Op::Archive) => s.archive += 1,
            }
        }
        s
    }

    pub fn blocked(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.blocked.is_some())
    }

    /// The HubSpot stages this plan deletes: each dropped stage, and every stage of each
    /// dropped pipeline. HubSpot refuses to delete a stage that still holds deals, so
    /// their usage is looked up and the plan made again with it.
    pub fn deleted_stages(&self, ids: &PipelineIdMap, observed: &Observed) -> DealsInStages {
        let mut stages = DealsInStages::new();
        for action in self.actions.iter().filter(|a| a.op == Op::Archive) {
            match &action.target {
                Target::Stage(pipeline, stage) => {
                    if let (Some(p), Some(s)) = (ids.hubspot_pipeline(pipeline), ids.hubspot_stage(pipeline, stage)) {
                        stages.insert((p.to_owned(), s.to_owned()));
                    }
                }
                Target::Pipeline(pipeline) => {
                    let Some(p) = ids.hubspot_pipeline(pipeline) else { continue };
                    for o in observed.pipelines.iter().filter(|o| o.hubspot_id == p) {
                        stages.extend(o.stages.iter().map(|s| (p.to_owned(), s.hubspot_id.clone())));
                    }
                }
                _ => {}
            }
        }
        stages
    }

    /// The stages whose deals this plan would move once counted: each stage deletion blocked
    /// by deals whose pipeline declares where they go (`removedStages`), with the properties
    /// a conditional-required rule at the destination requires (HubSpot refuses moving a
    /// deal that lacks one). hubspot-sync counts them into [`Observed::stage_deals`] and
    /// plans again.
    pub fn deal_counts_needed(
        &self,
        desired: &EffectiveConfig,
        observed: &Observed,
        ids: &PipelineIdMap,
    ) -> Vec<DealCount> {
        let mut out = Vec::new();
        for action in self.actions.iter().filter(|a| a.op == Op::Archive && a.blocked.is_some()) {
            let Target::Stage(pipeline, stage) = &action.target else { continue };
            let Some(removed) =
                desired.pipeline(pipeline).and_then(|p| p.removed_stages.iter().find(|r| &r.id == stage))
            else {
                continue;
            };
            let (Some(p), Some(s), Some(to)) = (
                ids.hubspot_pipeline(pipeline),
                ids.hubspot_stage(pipeline, stage),
                ids.hubspot_stage(pipeline, &removed.move_deals_to),
            ) else {
                continue;
            };
            let lacking = required_in_stage(desired, observed, to).into_iter().map(|(property, _)| property).collect();
            out.push(DealCount { pipeline: p.to_owned(), stage: s.to_owned(), lacking });
        }
        out
    }

    /// The warnings about `action`.
    pub fn warnings_for<'a>(&'a self, action: &'a Action) -> impl Iterator<Item = &'a Warning> + 'a {
        self.warnings.iter().filter(move |w| w.target == action.target && w.op == action.op)
    }

    pub fn find(&self, target: &Target, op: Op) -> Option<&Action> {
        self.actions.iter().find(|a| &a.target == target && a.op == op)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::PropertyGroup(n) => write!(f, "property group {n}"),
            Target::DealProperty(n) => write!(f, "deal property {n}"),
            Target::Pipeline(p) => write!(f, "pipeline {p}"),
            Target::Stage(p, s) => write!(f, "stage {p}/{s}"),
            Target::ValidationRule(p, r) => write!(f, "validation rule {p}/{r}"),
            Target::StageDeals(p, s) => write!(f, "deals in stage {p}/{s}"),
            Target::PipelineRules(p) => write!(f, "pipeline rules {p}"),
            Target::ApiVersion => f.write_str("api version"),
        }
    }
}

impl Action {
    /// The change of `field`, if the action has one.
    pub fn change(&self, field: &str) -> Option<&FieldChange> {
        self.changes.iter().find(|c| c.field == field)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = match self.op {
            Op::Create => '+',
            Op::Update => '~',
            Op::Archive => '-',
        };
        if self.blocked.is_some() {
            f.write_str("! ")?;
        }
        write!(f, "{symbol} {}", self.target)?;
        if let (Target::StageDeals(pipeline, _), Some(to), Some(count)) =
            (&self.target, self.change("dealstage"), self.change("deals"))
        {
            let to = to.after.as_str().unwrap_or_default();
            write!(f, ": move {} deals to stage {pipeline}/{to}", count.before)?;
        } else if self.op == Op::Update && !self.changes.is_empty() {
            let parts: Vec<String> =
                self.changes.iter().map(|c| format!("{} {} → {}", c.field, c.before, c.after)).collect();
            write!(f, ": {}", parts.join(", "))?;
        }
        if let Some(b) = &self.blocked {
            write!(f, " (blocked: {}; instead: {})", b.reason, b.safe_alternative)?;
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.actions.is_empty() {
            return writeln!(f, "no changes");
        }
        for a in &self.actions {
            writeln!(f, "{a}")?;
            for w in self.warnings_for(a) {
                writeln!(f, "    warning: {}", w.message)?;
            }
        }
        writeln!(f, "{}", self.summary())
    }
}

pub const REASON_UNIQUE_VALUE: &str = "HubSpot cannot change hasUniqueValue once set";
pub const ALTERNATIVE_UNIQUE_VALUE: &str =
    "create a new property with the new setting, copy values, archive the old one";
pub const REASON_RENAME: &str = "internal names are immutable";
pub const ALTERNATIVE_RENAME: &str =
    "keep the old name and change the label, or create the new property, copy values, then archive the old one";
pub const REASON_STAGE_IN_USE: &str = "stage still used by deals";
pub const ALTERNATIVE_STAGE_IN_USE: &str = "move its deals to another stage first, then archive";
pub const REASON_HUBSPOT_DEFINED: &str = "a HubSpot-defined property has this name";
pub const ALTERNATIVE_HUBSPOT_DEFINED: &str = "use a GoMark-prefixed name (e.g. gomark_…) for a custom property";

fn blocked(reason: impl Into<String>, alternative: &str) -> Option<Blocked> {
    Some(Blocked { reason: reason.into(), safe_alternative: alternative.to_string() })
}

fn change(field: &str, before: Value, after: Value) -> FieldChange {
    FieldChange { field: field.to_string(), before, after }
}

/// Probability as the number HubSpot's string denotes, rounded like HubSpot stores it.
fn probability_value(canonical: &str) -> Value {
    canonical.parse::<f64>().map(Value::from).unwrap_or_else(|_| Value::from(canonical))
}

fn canonical_observed_probability(raw: &str) -> String {
    raw.trim().parse::<f64>().map(canonical_probability).unwrap_or_else(|_| raw.to_string())
}

/// Options as HubSpot orders and compares them: by displayOrder (ties keep list order),
/// hidden defaulting to false, displayOrder renumbered so only the order matters.
fn normalised_options(options: &[PropertyOption]) -> Vec<Value> {
    let mut indexed: Vec<(i32, usize, &PropertyOption)> =
        options.iter().enumerate().map(|(i, o)| (order_or_index(o.display_order, i), i, o)).collect();
    indexed.sort_by_key(|(order, i, _)| (*order, *i));
    indexed
        .into_iter()
        .enumerate()
        .map(|(pos, (_, _, o))| json!({"label": o.label, "value": o.value, "displayOrder": pos, "hidden": o.hidden}))
        .collect()
}

/// The mutable fields of a desired property, as HubSpot would hold them.
fn desired_fields(p: &DealProperty) -> Vec<(&'static str, Value)> {
    vec![
        ("label", Value::from(p.label.as_str())),
        ("type", Value::from(p.property_type.as_str())),
        ("fieldType", Value::from(p.field_type.as_str())),
        ("groupName", Value::from(p.group_name.as_str())),
        ("description", Value::from(p.description.clone().unwrap_or_default())),
        ("options", Value::from(normalised_options(&p.options))),
    ]
}

fn observed_fields(p: &ObservedProperty) -> Vec<(&'static str, Value)> {
    vec![
        ("label", Value::from(p.label.as_str())),
        ("type", Value::from(p.property_type.as_str())),
        ("fieldType", Value::from(p.field_type.as_str())),
        ("groupName", Value::from(p.group_name.as_str())),
        ("description", Value::from(p.description.as_str())),
        ("options", Value::from(normalised_options(&p.options))),
    ]
}

/// HubSpot gives non-enumeration properties (bool) default options of its own; only
/// compare options when the desired config has an opinion about them.
fn compares_options(p: &DealProperty) -> bool {
    p.property_type == PropertyType::Enumeration || !p.options.is_empty()
}

fn property_updates(d: &DealProperty, o: &ObservedProperty) -> Vec<FieldChange> {
    desired_fields(d)
        .into_iter()
        .zip(observed_fields(o))
        .filter(|((field, _), _)| *field != "options" || compares_options(d))
        .filter(|((_, after), (_, before))| after != before)
        .map(|((field, after), (_, before))| change(field, before, after))
        .collect()
}

fn property_create(d: &DealProperty) -> Vec<FieldChange> {
    let mut fields = desired_fields(d);
    if !compares_options(d) {
        fields.retain(|(f, _)| *f != "options");
    }
    fields.push(("hasUniqueValue", Value::from(d.has_unique_value)));
    fields.into_iter().map(|(f, v)| change(f, Value::Null, v)).collect()
}

fn stage_json(s: &Stage, index: usize) -> Value {
    json!({
        "id": s.id,
        "label": s.label,
        "displayOrder": order_or_index(s.display_order, index),
        "probability": probability_value(&s.probability_string()),
        "closed": s.closed,
    })
}

/// What `desired` needs so that `observed` matches it.
///
/// `managed` holds the property names GoMark created before: only those are ever
/// archived, so properties made by hand in HubSpot are left alone.
pub fn plan(
    desired: &EffectiveConfig,
    observed: &Observed,
    ids: &PipelineIdMap,
    used: &DealsInStages,
    managed: &BTreeSet<String>,
) -> Plan {
    let mut actions = Vec::new();
    plan_groups(desired, observed, &mut actions);
    plan_properties(desired, observed, managed, &mut actions);
    plan_pipelines(desired, observed, ids, used, &mut actions);
    plan_api_version(desired, observed, &mut actions);
    plan_rules(desired, observed, &mut actions);
    plan_pipeline_rules(desired, observed, ids, &mut actions);
    let mut warnings = warn(desired, &actions);
    warnings.extend(warn_moves(desired, observed, ids, &actions));
    warnings.extend(warn_rule_moves(desired, observed, ids, &actions));
    Plan { actions, warnings }
}

fn rule_fields(arguments: &[String], normalize: bool) -> [(&'static str, Value); 2] {
    [("ruleArguments", Value::from(arguments.to_vec())), ("shouldApplyNormalization", Value::from(normalize))]
}

/// Validation rules: the declared ones created or updated; on the properties GoMark
/// declares (or declares rules for), rules the portal has beyond them archived. Rules on
/// other properties are not GoMark's.
fn plan_rules(desired: &EffectiveConfig, observed: &Observed, out: &mut Vec<Action>) {
    for rule in &desired.validation_rules {
        let target = Target::ValidationRule(rule.property.clone(), rule.rule_type.as_str().to_owned());
        let after = rule_fields(&rule.rule_arguments, rule.should_apply_normalization);
        let current = observed
            .validation_rules
            .iter()
            .find(|o| o.property == rule.property && o.rule_type == rule.rule_type.as_str());
        match current {
            None => out.push(Action {
                target,
                op: Op::Create,
                changes: after.into_iter().map(|(f, v)| change(f, Value::Null, v)).collect(),
                blocked: None,
            }),
            Some(o) => {
                let before = rule_fields(&o.rule_arguments, o.should_apply_normalization);
                let changes: Vec<FieldChange> = after
                    .into_iter()
                    .zip(before)
                    .filter(|((_, a), (_, b))| a != b)
                    .map(|((f, a), (_, b))| change(f, b, a))
                    .collect();
                if !changes.is_empty() {
                    out.push(Action { target, op: Op::Update, changes, blocked: None });
                }
            }
        }
    }
    let governed: BTreeSet<&str> = desired
        .deal_properties
        .iter()
        .map(|p| p.name.as_str())
        .chain(desired.validation_rules.iter().map(|r| r.property.as_str()))
        .collect();
    for o in &observed.validation_rules {
        let declared =
            desired.validation_rules.iter().any(|r| r.property == o.property && r.rule_type.as_str() == o.rule_type);
        if governed.contains(o.property.as_str()) && !declared {
            out.push(Action {
                target: Target::ValidationRule(o.property.clone(), o.rule_type.clone()),
                op: Op::Archive,
                changes: Vec::new(),
                blocked: None,
            });
        }
    }
}

/// Warnings for rules being created or changed that HubSpot (API 2026-09 on) would use to
/// refuse record writes GoMark or a declared integration makes.
fn warn(desired: &EffectiveConfig, actions: &[Action]) -> Vec<Warning> {
    let gomark: Vec<String> = crate::rules::GOMARK_DEAL_WRITES.iter().map(|s| s.to_string()).collect();
    let writers: Vec<(&str, &[String])> = std::iter::once(("GoMark", gomark.as_slice()))
        .filter(|(_, sets)| !sets.is_empty())
        .chain(desired.record_writers.iter().map(|w| (w.name.as_str(), w.sets.as_slice())))
        .collect();
    let mut out = Vec::new();
    for action in actions.iter().filter(|a| a.op != Op::Archive && a.blocked.is_none()) {
        let Target::ValidationRule(property, rule_type) = &action.target else { continue };
        let Some(rule) =
            desired.validation_rules.iter().find(|r| &r.property == property && r.rule_type.as_str() == rule_type)
        else {
            continue;
        };
        for (writer, sets) in &writers {
            let message = match rule.condition() {
                Some((when, values)) => {
                    if !sets.iter().any(|s| s == when) || sets.iter().any(|s| s == property) {
                        continue;
                    }
                    format!(
                        "{writer} writes deals setting {when} without {property}: HubSpot (API 2026-09 on) will refuse them with 400 VALIDATION_ERROR when {when} is {}",
                        values.join(" or ")
                    )
                }
                None => {
                    if !sets.iter().any(|s| s == property) {
                        continue;
                    }
                    format!(
                        "{writer} writes {property} on deals: HubSpot (API 2026-09 on) will refuse values that break {rule_type} {:?} with 400 VALIDATION_ERROR",
                        rule.rule_arguments
                    )
                }
            };
            out.push(Warning {
                target: action.target.clone(),
                op: action.op,
                code: WARNING_RULE_REJECTS_WRITES.to_owned(),
                message,
            });
        }
    }
    out
}

/// The properties that conditional-required rules (declared, or already in the portal)
/// require of a deal in HubSpot stage `stage`, with the rule's type. Rules being archived
/// still count: they go after the deals have moved.
fn required_in_stage(desired: &EffectiveConfig, observed: &Observed, stage: &str) -> Vec<(String, String)> {
    let declared = desired
        .validation_rules
        .iter()
        .filter_map(|r| r.condition().map(|(when, values)| (r.property.as_str(), r.rule_type.as_str(), when, values)));
    let held = observed.validation_rules.iter().filter_map(|r| {
        (r.rule_type == crate::RuleType::ConditionallyRequired.as_str())
            .then(|| r.rule_arguments.split_first())
            .flatten()
            .map(|(when, values)| (r.property.as_str(), r.rule_type.as_str(), when.as_str(), values))
    });
    let mut out: Vec<(String, String)> = Vec::new();
    for (property, rule_type, when, values) in declared.chain(held) {
        if when == "dealstage" && values.iter().any(|v| v == stage) && !out.iter().any(|(p, _)| p == property) {
            out.push((property.to_owned(), rule_type.to_owned()));
        }
    }
    out
}

/// Warnings for deal moves HubSpot (API 2026-09 on) would refuse: deals lacking a property
/// a conditional-required rule requires in the stage they move to.
fn warn_moves(desired: &EffectiveConfig, observed: &Observed, ids: &PipelineIdMap, actions: &[Action]) -> Vec<Warning> {
    let mut out = Vec::new();
    for action in actions {
        let Target::StageDeals(pipeline, stage) = &action.target else { continue };
        let Some(to) = action.change("dealstage").and_then(|c| c.after.as_str()) else { continue };
        let (Some(p), Some(from_id), Some(to_id)) =
            (ids.hubspot_pipeline(pipeline), ids.hubspot_stage(pipeline, stage), ids.hubspot_stage(pipeline, to))
        else {
            continue;
        };
        let Some(counted) = observed.stage_deals.iter().find(|c| c.pipeline == p && c.stage == from_id) else {
            continue;
        };
        for (property, rule_type) in required_in_stage(desired, observed, to_id) {
            let Some(lacking) = counted.lacking.get(&property).copied().filter(|n| *n > 0) else { continue };
            out.push(Warning {
                target: action.target.clone(),
                op: action.op,
                code: WARNING_RULE_REJECTS_WRITES.to_owned(),
                message: format!(
                    "{lacking} of {} deals have no {property}: HubSpot (API 2026-09 on) will refuse moving them to stage {pipeline}/{to} (rule {rule_type} on {property}: required when dealstage is {to_id})",
                    counted.deals
                ),
            });
        }
    }
    out
}

pub const REASON_RULES_NOT_SERVED: &str =
    "the portal's HubSpot API version does not serve the Pipeline Rules API (2026-09-beta)";
pub const ALTERNATIVE_RULES_NOT_SERVED: &str = "pin the portal to API version 2026-09 (apiVersion), then apply again";

/// A movement rule in canonical form: stages sorted, and one covering nothing is none.
fn canonical_stage_rule(rule: Option<&crate::rules::StageRule>) -> Value {
    match rule {
        Some(r) if r.all_stages || !r.stages.is_empty() => {
            let mut stages = r.stages.clone();
            stages.sort();
            stages.dedup();
            json!({"allStages": r.all_stages, "stages": stages})
        }
        _ => Value::Null,
    }
}

/// The fields a pipeline-rules action compares and writes, GoMark stage ids.
fn pipeline_rule_fields(rules: &crate::rules::PipelineRules) -> [(&'static str, Value); 3] {
    let mut creation = rules.creation_stages.clone();
    creation.sort();
    creation.dedup();
    [
        ("noBackwardsMovement", canonical_stage_rule(rules.no_backwards_movement.as_ref())),
        ("noSkippingStages", canonical_stage_rule(rules.no_skipping_stages.as_ref())),
        ("creationStages", Value::from(creation)),
    ]
}

/// Observed rules (HubSpot stage ids) in GoMark stage ids; a stage GoMark does not know
/// keeps its HubSpot id (it then differs from anything declared, and is replaced).
fn observed_pipeline_rules(
    rules: &crate::rules::PipelineRules,
    ids: &PipelineIdMap,
    pipeline: &str,
) -> crate::rules::PipelineRules {
    let map = |stages: &[String]| -> Vec<String> {
        stages.iter().map(|h| ids.gomark_stage(pipeline, h).unwrap_or(h).to_owned()).collect()
    };
    let stage_rule =
        |r: &crate::rules::StageRule| crate::rules::StageRule { all_stages: r.all_stages, stages: map(&r.stages) };
    crate::rules::PipelineRules {
        no_backwards_movement: rules.no_backwards_movement.as_ref().map(stage_rule),
        no_skipping_stages: rules.no_skipping_stages.as_ref().map(stage_rule),
        creation_stages: map(&rules.creation_stages),
    }
}

/// Pipeline rules: for each pipeline that declares `rules`, one action writing all of them
/// when any differs from the portal. They are written through the version the portal is
/// (being) pinned to; where that version does not serve the Pipeline Rules API the action
/// is blocked (reported, the rest of the plan applies).
fn plan_pipeline_rules(desired: &EffectiveConfig, observed: &Observed, ids: &PipelineIdMap, out: &mut Vec<Action>) {
    let version = desired.api_version.as_deref().or(observed.api_version.as_deref());
    let version_serves = version.is_none_or(crate::rules::serves_pipeline_rules);
    for d in &desired.pipelines {
        let Some(rules) = &d.rules else { continue };
        let after = pipeline_rule_fields(rules);
        let current = ids.hubspot_pipeline(&d.id).and_then(|h| observed.pipelines.iter().find(|p| p.hubspot_id == h));
        let target = Target::PipelineRules(d.id.clone());
        // Rules not readable through the current pin are unknown (`before: "unknown"`):
        // every field is written.
        let unknown =
            || pipeline_rule_fields(&crate::rules::PipelineRules::default()).map(|(f, _)| (f, Value::from("unknown")));
        let (op, before) = match current {
            Some(o) => {
                let held =
                    o.rules.as_ref().map(|held| pipeline_rule_fields(&observed_pipeline_rules(held, ids, &d.id)));
                (Op::Update, Some(held.unwrap_or_else(unknown)))
            }
            None => (Op::Create, None),
        };
        let changes: Vec<FieldChange> = match before {
            Some(before) => after
                .into_iter()
                .zip(before)
                .filter(|((_, a), (_, b))| a != b)
                .map(|((f, a), (_, b))| change(f, b, a))
                .collect(),
            // A new pipeline: the declared rules (none declared is nothing to do).
            None => after
                .into_iter()
                .filter(|(_, a)| !a.is_null() && a.as_array().is_none_or(|v| !v.is_empty()))
                .map(|(f, a)| change(f, Value::Null, a))
                .collect(),
        };
        if changes.is_empty() {
            continue;
        }
        let blocked =
            if version_serves { None } else { blocked(REASON_RULES_NOT_SERVED, ALTERNATIVE_RULES_NOT_SERVED) };
        out.push(Action { target, op, changes, blocked });
    }
}

/// Warnings for GoMark's own deal moves (a removed stage's deals) that a pipeline rule,
/// declared or already in the portal, would make HubSpot (API 2026-09 on) refuse.
fn warn_rule_moves(
    desired: &EffectiveConfig,
    observed: &Observed,
    ids: &PipelineIdMap,
    actions: &[Action],
) -> Vec<Warning> {
    let mut out = Vec::new();
    for action in actions {
        let Target::StageDeals(pipeline, stage) = &action.target else { continue };
        let Some(to) = action.change("dealstage").and_then(|c| c.after.as_str()) else { continue };
        let (Some(p), Some(from_id), Some(to_id)) =
            (ids.hubspot_pipeline(pipeline), ids.hubspot_stage(pipeline, stage), ids.hubspot_stage(pipeline, to))
        else {
            continue;
        };
        let Some(o) = observed.pipelines.iter().find(|o| o.hubspot_id == p) else { continue };
        // Declared rules win (they are applied before the moves); else the portal's.
        let rules = match desired.pipeline(pipeline).and_then(|d| d.rules.clone()) {
            Some(r) => r,
            None => match &o.rules {
                Some(held) => observed_pipeline_rules(held, ids, pipeline),
                None => continue,
            },
        };
        let (Some(from_stage), Some(to_stage)) =
            (o.stages.iter().find(|s| s.hubspot_id == from_id), o.stages.iter().find(|s| s.hubspot_id == to_id))
        else {
            continue;
        };
        let open: Vec<&str> = o.stages.iter().filter(|s| !s.is_closed).map(|s| s.hubspot_id.as_str()).collect();
        let position = |id: &str| open.iter().position(|s| *s == id);
        let backwards = rules.no_backwards_movement.as_ref().is_some_and(|r| r.covers(stage))
            && to_stage.display_order < from_stage.display_order;
        let skips = rules.no_skipping_stages.as_ref().is_some_and(|r| r.covers(stage))
            && !to_stage.is_closed
            && position(from_id).zip(position(to_id)).is_some_and(|(a, b)| b > a + 1);
        for (broken, rule) in [(backwards, "NO_BACKWARDS_MOVEMENT"), (skips, "NO_SKIPPING_STAGES")] {
            if broken {
                out.push(Warning {
                    target: action.target.clone(),
                    op: action.op,
                    code: WARNING_RULE_REJECTS_WRITES.to_owned(),
                    message: format!(
                        "HubSpot (API 2026-09 on) will refuse moving the deals of stage {pipeline}/{stage} to {pipeline}/{to} (pipeline rule {rule})"
                    ),
                });
            }
        }
    }
    out
}

/// Moving the portal to the declared API version (nothing when none is declared).
fn plan_api_version(desired: &EffectiveConfig, observed: &Observed, out: &mut Vec<Action>) {
    let Some(want) = desired.api_version.as_deref() else { return };
    if observed.api_version.as_deref() == Some(want) {
        return;
    }
    let before = observed.api_version.as_deref().map_or(Value::Null, Value::from);
    out.push(Action {
        target: Target::ApiVersion,
        op: Op::Update,
        changes: vec![change("apiVersion", before, Value::from(want))],
        blocked: None,
    });
}

fn plan_groups(desired: &EffectiveConfig, observed: &Observed, out: &mut Vec<Action>) {
    // Groups are never archived: HubSpot refuses while they hold properties, and hand-made
    // properties may live in them.
    for g in &desired.property_groups {
        match observed.groups.iter().find(|o| o.name == g.name) {
            None => {
                let mut changes = vec![change("label", Value::Null, Value::from(g.label.as_str()))];
                if let Some(order) = g.display_order {
                    changes.push(change("displayOrder", Value::Null, Value::from(order)));
                }
                out.push(Action {
                    target: Target::PropertyGroup(g.name.clone()),
                    op: Op::Create,
                    changes,
                    blocked: None,
                });
            }
            Some(o) => {
                let mut changes = Vec::new();
                if o.label != g.label {
                    changes.push(change("label", Value::from(o.label.as_str()), Value::from(g.label.as_str())));
                }
                if let Some(order) = g.display_order.filter(|d| *d != o.display_order) {
                    changes.push(change("displayOrder", Value::from(o.display_order), Value::from(order)));
                }
                if !changes.is_empty() {
                    out.push(Action {
                        target: Target::PropertyGroup(g.name.clone()),
                        op: Op::Update,
                        changes,
                        blocked: None,
                    });
                }
            }
        }
    }
}

fn plan_properties(desired: &EffectiveConfig, observed: &Observed, managed: &BTreeSet<String>, out: &mut Vec<Action>) {
    let desired_names: BTreeSet<&str> = desired.deal_properties.iter().map(|p| p.name.as_str()).collect();
    // Managed properties that are no longer desired: archive candidates.
    let leaving: Vec<&ObservedProperty> = observed
        .properties
        .iter()
        .filter(|o| !o.hubspot_defined && !desired_names.contains(o.name.as_str()) && managed.contains(&o.name))
        .collect();
    // Old name → new name, for leaving properties that look renamed. This does not depend
    // on whether the new one exists yet, so the old one stays blocked after the new one is
    // created: its values still need copying, which only a person can confirm.
    let mut renamed: BTreeMap<&str, &str> = BTreeMap::new();
    for o in &leaving {
        let new = desired.deal_properties.iter().find(|d| {
            o.label == d.label
                && o.property_type == d.property_type.as_str()
                && !renamed.values().any(|taken| *taken == d.name.as_str())
        });
        if let Some(d) = new {
            renamed.insert(&o.name, &d.name);
        }
    }

    for d in &desired.deal_properties {
        let target = Target::DealProperty(d.name.clone());
        let Some(o) = observed.properties.iter().find(|o| o.name == d.name) else {
            out.push(Action { target, op: Op::Create, changes: property_create(d), blocked: None });
            continue;
        };
        if o.hubspot_defined {
            out.push(Action {
                target,
                op: Op::Create,
                changes: property_create(d),
                blocked: blocked(format!("{REASON_HUBSPOT_DEFINED} (\"{}\")", d.name), ALTERNATIVE_HUBSPOT_DEFINED),
            });
            continue;
        }
        let changes = property_updates(d, o);
        if !changes.is_empty() {
            out.push(Action { target: target.clone(), op: Op::Update, changes, blocked: None });
        }
        // Kept apart from the other updates so those can still be applied.
        if o.has_unique_value != d.has_unique_value {
            out.push(Action {
                target,
                op: Op::Update,
                changes: vec![change(
                    "hasUniqueValue",
                    Value::from(o.has_unique_value),
                    Value::from(d.has_unique_value),
                )],
                blocked: blocked(REASON_UNIQUE_VALUE, ALTERNATIVE_UNIQUE_VALUE),
            });
        }
    }

    for o in leaving {
        let block = renamed.get(o.name.as_str()).map(|new| Blocked {
            reason: format!("{REASON_RENAME} ({} looks renamed to {new})", o.name),
            safe_alternative: ALTERNATIVE_RENAME.to_string(),
        });
        out.push(Action {
            target: Target::DealProperty(o.name.clone()),
            op: Op::Archive,
            changes: Vec::new(),
            blocked: block,
        });
    }
}

fn plan_pipelines(
    desired: &EffectiveConfig,
    observed: &Observed,
    ids: &PipelineIdMap,
    used: &DealsInStages,
    out: &mut Vec<Action>,
) {
    let find_observed = |hubspot_id: &str| observed.pipelines.iter().find(|p| p.hubspot_id == hubspot_id);
    for (index, d) in desired.pipelines.iter().enumerate() {
        let order = order_or_index(d.display_order, index);
        // A mapping whose pipeline is gone from HubSpot (deleted by hand) means "recreate".
        let current = ids.hubspot_pipeline(&d.id).and_then(find_observed);
        let Some(o) = current else {
            out.push(Action {
                target: Target::Pipeline(d.id.clone()),
                op: Op::Create,
                changes: vec![
                    change("label", Value::Null, Value::from(d.label.as_str())),
                    change("displayOrder", Value::Null, Value::from(order)),
                    change(
                        "stages",
                        Value::Null,
                        Value::from(d.stages.iter().enumerate().map(|(i, s)| stage_json(s, i)).collect::<Vec<_>>()),
                    ),
                ],
                blocked: None,
            });
            continue;
        };
        let mut changes = Vec::new();
        if o.label != d.label {
            changes.push(change("label", Value::from(o.label.as_str()), Value::from(d.label.as_str())));
        }
        if o.display_order != order {
            changes.push(change("displayOrder", Value::from(o.display_order), Value::from(order)));
        }
        if !changes.is_empty() {
            out.push(Action { target: Target::Pipeline(d.id.clone()), op: Op::Update, changes, blocked: None });
        }
        plan_stages(d, o, ids, used, &observed.stage_deals, out);
    }

    // Mapped pipelines no longer desired (removed from the config).
    let desired_ids: BTreeSet<&str> = desired.pipelines.iter().map(|p| p.id.as_str()).collect();
    for (id, mapped) in &ids.pipelines {
        if desired_ids.contains(id.as_str()) {
            continue;
        }
        let Some(o) = find_observed(&mapped.hubspot_id) else {
            continue;
        };
        let in_use = o.stages.iter().any(|s| used.contains(&(o.hubspot_id.clone(), s.hubspot_id.clone())));
        out.push(Action {
            target: Target::Pipeline(id.clone()),
            op: Op::Archive,
            changes: Vec::new(),
            blocked: in_use.then(|| Blocked {
                reason: "pipeline has stages still used by deals".to_string(),
                safe_alternative: "move its deals to another pipeline first, then archive".to_string(),
            }),
        });
    }
}

fn plan_stages(
    d: &Pipeline,
    o: &ObservedPipeline,
    ids: &PipelineIdMap,
    used: &DealsInStages,
    counted: &[StageDeals],
    out: &mut Vec<Action>,
) {
    for (index, s) in d.stages.iter().enumerate() {
        let target = Target::Stage(d.id.clone(), s.id.clone());
        let current = ids.hubspot_stage(&d.id, &s.id).and_then(|h| o.stages.iter().find(|x| x.hubspot_id == h));
        let Some(os) = current else {
            let mut fields = stage_json(s, index);
            if let Value::Object(map) = &mut fields {
                map.remove("id");
            }
            let changes = match fields {
                Value::Object(map) => map.into_iter().map(|(k, v)| change(&k, Value::Null, v)).collect(),
                _ => Vec::new(),
            };
            out.push(Action { target, op: Op::Create, changes, blocked: None });
            continue;
        };
        let mut changes = Vec::new();
        if os.label != s.label {
            changes.push(change("label", Value::from(os.label.as_str()), Value::from(s.label.as_str())));
        }
        let order = order_or_index(s.display_order, index);
        if os.display_order != order {
            changes.push(change("displayOrder", Value::from(os.display_order), Value::from(order)));
        }
        let (before, after) = (canonical_observed_probability(&os.probability), s.probability_string());
        if before != after {
            changes.push(change("probability", probability_value(&before), probability_value(&after)));
        }
        if os.is_closed != s.closed {
            changes.push(change("closed", Value::from(os.is_closed), Value::from(s.closed)));
        }
        if !changes.is_empty() {
            out.push(Action { target, op: Op::Update, changes, blocked: None });
        }
    }

    // Mapped stages that the config dropped. Unmapped stages (made by hand) are not ours.
    let Some(mapped) = ids.pipelines.get(&d.id) else {
        return;
    };
    for (stage_id, hubspot_stage) in &mapped.stages {
        if d.stages.iter().any(|s| &s.id == stage_id) || !o.stages.iter().any(|x| &x.hubspot_id == hubspot_stage) {
            continue;
        }
        let in_use = used.contains(&(o.hubspot_id.clone(), hubspot_stage.clone()));
        // Deals declared to move (to a stage HubSpot already has) and counted: moved first,
        // so the deletion is no longer blocked.
        let moved = in_use
            .then(|| d.removed_stages.iter().find(|r| &r.id == stage_id))
            .flatten()
            .filter(|r| ids.hubspot_stage(&d.id, &r.move_deals_to).is_some())
            .zip(counted.iter().find(|c| c.pipeline == o.hubspot_id && &c.stage == hubspot_stage));
        if let Some((removed, count)) = moved
            && count.deals > 0
        {
            out.push(Action {
                target: Target::StageDeals(d.id.clone(), stage_id.clone()),
                op: Op::Update,
                changes: vec![
                    change("dealstage", Value::from(stage_id.as_str()), Value::from(removed.move_deals_to.as_str())),
                    change("deals", Value::from(count.deals), Value::from(0)),
                ],
                blocked: None,
            });
        }
        let blocks = in_use && moved.is_none();
        out.push(Action {
            target: Target::Stage(d.id.clone(), stage_id.clone()),
            op: Op::Archive,
            changes: Vec::new(),
            blocked: if blocks { blocked(REASON_STAGE_IN_USE, ALTERNATIVE_STAGE_IN_USE) } else { None },
        });
    }
}
