//! Validation of a document, collecting every error with the path that caused it.

use crate::effective::{Sourced, SourcedConfig, sourced};
use crate::model::{
    API_VERSIONS, CompanyOverlay, DealProperty, Document, FieldType, HubSpotSettings, Pipeline, PortfolioStage,
    PropertyGroup, PropertyType, StageKind,
};
use std::collections::{BTreeMap, BTreeSet};

/// HubSpot's own deal properties: GoMark must never declare them.
pub const HUBSPOT_DEAL_PROPERTIES: [&str; 8] =
    ["dealname", "amount", "dealstage", "pipeline", "closedate", "createdate", "hubspot_owner_id", "dealtype"];

/// HubSpot's default deal property groups: properties may use them without declaring them.
pub const HUBSPOT_DEFAULT_GROUPS: [&str; 1] = ["dealinformation"];

pub(crate) const PROPERTY_NAME_PATTERN: &str = "^[a-z][a-z0-9_]{0,99}$";
pub(crate) const PIPELINE_ID_PATTERN: &str = "^[a-z][a-z0-9_-]{0,63}$";
pub(crate) const COMPANY_KEY_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

// The patterns are simple enough to check by hand, which keeps this crate free of
// lazily-compiled regexes (and of any panic path).
fn matches_name(s: &str, first: fn(char) -> bool, rest: fn(char) -> bool, max: usize) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if first(c) => {}
        _ => return false,
    }
    s.chars().count() <= max && chars.all(rest)
}

pub(crate) fn is_property_name(s: &str) -> bool {
    matches_name(s, |c| c.is_ascii_lowercase(), |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_', 100)
}

pub(crate) fn is_pipeline_id(s: &str) -> bool {
    matches_name(
        s,
        |c| c.is_ascii_lowercase(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
        64,
    )
}

fn is_company_key(s: &str) -> bool {
    matches_name(
        s,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
        64,
    )
}

/// True when `p` is one of 0.0, 0.1, …, 1.0 (within float noise).
pub(crate) fn is_valid_probability(p: f64) -> bool {
    p.is_finite() && (0.0..=1.0).contains(&p) && ((p * 10.0).round() - p * 10.0).abs() < 1e-9
}

/// One problem, located by its document path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

/// Every problem found in a document, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{}", render(.errors))]
pub struct ValidationErrors {
    pub errors: Vec<ValidationError>,
}

fn render(errors: &[ValidationError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

impl ValidationErrors {
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.errors.iter()
    }

    /// True when some error has exactly this path.
    pub fn has_path(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }
}

/// Collects errors; the same error reached twice (once per company for a baseline item)
/// is kept once.
#[derive(Default)]
struct Collector {
    errors: Vec<ValidationError>,
    seen: BTreeSet<(String, String)>,
}

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let (path, message) = (path.into(), message.into());
        if self.seen.insert((path.clone(), message.clone())) {
            self.errors.push(ValidationError { path, message });
        }
    }
}

impl Document {
    /// Checks every rule and returns all errors at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        let b = &self.baseline;

        // The baseline alone is what a company without overlay gets, so it must stand alone.
        check_groups(&mut c, &b.property_groups, "baseline.propertyGroups");
        check_properties(&mut c, &b.deal_properties, "baseline.dealProperties");
        check_pipelines(&mut c, &b.pipelines, "baseline.pipelines");
        check_effective(&mut c, &sourced(b, None));
        for (path, message) in crate::outreach::check_suppression(&b.suppression_list) {
            c.push(path, message);
        }
        for (path, message) in crate::outreach::check_portfolio_contact(&b.portfolio_contact) {
            c.push(path, message);
        }
        check_portfolio_stages(&mut c, &b.portfolio_stages);
        check_rule_list(&mut c, &b.validation_rules, "baseline.validationRules");
        check_record_writers(&mut c, &b.record_writers);
        check_hubspot(&mut c, &b.hubspot, "baseline.hubspot");
        check_currency(&mut c, b.reporting_currency.as_deref(), "baseline.reportingCurrency");
        check_currency(&mut c, b.currency.as_deref(), "baseline.currency");
        let portfolio_stages = b.effective_portfolio_stages();
        for (path, message) in b.metrics.check(&portfolio_stages) {
            c.push(path, message);
        }

        let mut company_ids: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, overlay) in &self.companies {
            let prefix = format!("companies.{key}");
            if !is_company_key(key) {
                c.push(&prefix, format!("company key must match {COMPANY_KEY_PATTERN}"));
            }
            check_overlay_header(&mut c, &prefix, overlay, &mut company_ids, key);
            check_groups(&mut c, &overlay.property_groups, &format!("{prefix}.propertyGroups"));
            check_properties(&mut c, &overlay.deal_properties, &format!("{prefix}.dealProperties"));
            check_pipelines(&mut c, &overlay.pipelines, &format!("{prefix}.pipelines"));
            check_removals(&mut c, &prefix, self, overlay);
            check_governance(&mut c, &prefix, b, overlay);
            for (path, message) in crate::outreach::check_calendar(&overlay.outreach, &format!("{prefix}.outreach")) {
                c.push(path, message);
            }
            check_rule_list(&mut c, &overlay.validation_rules, &format!("{prefix}.validationRules"));
            for (i, key) in overlay.remove_validation_rules.iter().enumerate() {
                if !b.validation_rules.iter().any(|r| &r.key() == key)
                    || overlay.validation_rules.iter().any(|r| &r.key() == key)
                {
                    c.push(
                        format!("{prefix}.removeValidationRules[{i}]"),
                        format!(
                            "\"{key}\" is not a baseline rule (property/RULE_TYPE), or is redeclared in this overlay"
                        ),
                    );
                }
            }
            check_hubspot(&mut c, &overlay.hubspot, &format!("{prefix}.hubspot"));
            check_currency(&mut c, overlay.currency.as_deref(), &format!("{prefix}.currency"));
            for (tag, value) in &overlay.tags {
                if !crate::metrics::is_tag_text(tag) || !crate::metrics::is_tag_text(value) {
                    c.push(format!("{prefix}.tags.{tag}"), "key and value must be 1 to 64 printable characters");
                }
            }
            if let Some(target) = &overlay.coverage_target
                && !crate::metrics::is_positive_amount(target)
            {
                c.push(format!("{prefix}.coverageTarget"), "must be a positive decimal amount, such as \"250000\"");
            }
            for (stage, target) in &overlay.stage_mapping {
                if !portfolio_stages.iter().any(|p| &p.id == target) {
                    c.push(format!("{prefix}.stageMapping.{stage}"), format!("{target:?} is not a portfolio stage"));
                }
            }
            check_effective(&mut c, &sourced(b, Some((key, overlay))));
        }

        if c.errors.is_empty() { Ok(()) } else { Err(ValidationErrors { errors: c.errors }) }
    }
}

/// A currency, when declared, is an ISO 4217 code as HubSpot writes it ("EUR").
fn check_currency(c: &mut Collector, code: Option<&str>, path: &str) {
    if let Some(code) = code
        && (code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()))
    {
        c.push(path, "must be an ISO 4217 currency code in capitals, such as USD or EUR");
    }
}

/// Validation rules: a property name, one rule of each type per property, arguments the
/// rule type takes.
fn check_rule_list(c: &mut Collector, rules: &[crate::rules::ValidationRule], path: &str) {
    use crate::rules::RuleType;
    let mut keys = BTreeSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !is_property_name(&rule.property) {
            c.push(format!("{p}.property"), format!("must match {PROPERTY_NAME_PATTERN}"));
        }
        if !keys.insert(rule.key()) {
            c.push(format!("{p}.ruleType"), format!("{} already has a {} rule", rule.property, rule.rule_type));
        }
        for (j, arg) in rule.rule_arguments.iter().enumerate() {
            refuse_control(c, format!("{p}.ruleArguments[{j}]"), arg, false);
            if arg.chars().count() > 1000 {
                c.push(format!("{p}.ruleArguments[{j}]"), "must be at most 1000 characters");
            }
        }
        match rule.rule_type {
            RuleType::ConditionallyRequired => match rule.condition() {
                Some((when, values)) if !values.is_empty() => {
                    if !is_property_name(when) {
                        c.push(
                            format!("{p}.ruleArguments[0]"),
                            format!("must be a property name ({PROPERTY_NAME_PATTERN})"),
                        );
                    } else if when == rule.property {
                        c.push(format!("{p}.ruleArguments[0]"), "a property cannot be required on its own value");
                    }
                }
                _ => c.push(
                    format!("{p}.ruleArguments"),
                    "CONDITIONALLY_REQUIRED takes the property it depends on, then at least one value",
                ),
            },
            t if t.takes_number() => {
                if rule.rule_arguments.is_empty() {
                    c.push(format!("{p}.ruleArguments"), format!("{t} needs a number"));
                }
                for (j, arg) in rule.rule_arguments.iter().enumerate() {
                    if arg.trim().parse::<f64>().map_or(true, |n| !n.is_finite()) {
                        c.push(format!("{p}.ruleArguments[{j}]"), format!("{t} takes numbers, not {arg:?}"));
                    }
                }
            }
            _ => {}
        }
    }
}

fn check_record_writers(c: &mut Collector, writers: &[crate::rules::RecordWriter]) {
    let mut names = BTreeSet::new();
    for (i, w) in writers.iter().enumerate() {
        let p = format!("baseline.recordWriters[{i}]");
        if w.name.trim().is_empty() {
            c.push(format!("{p}.name"), "must not be empty");
        } else if !names.insert(w.name.as_str()) {
            c.push(format!("{p}.name"), format!("duplicate record writer \"{}\"", w.name));
        }
        refuse_control(c, format!("{p}.name"), &w.name, false);
        for (j, prop) in w.sets.iter().enumerate() {
            if !is_property_name(prop) {
                c.push(format!("{p}.sets[{j}]"), format!("must match {PROPERTY_NAME_PATTERN}"));
            }
        }
    }
}

fn check_hubspot(c: &mut Collector, hubspot: &HubSpotSettings, path: &str) {
    if let Some(version) = &hubspot.api_version
        && !API_VERSIONS.contains(&version.as_str())
    {
        c.push(format!("{path}.apiVersion"), format!("{version:?} is not one of {}", API_VERSIONS.join(", ")));
    }
}

fn check_portfolio_stages(c: &mut Collector, stages: &[PortfolioStage]) {
    let path = "baseline.portfolioStages";
    if stages.is_empty() {
        return;
    }
    let mut ids = BTreeSet::new();
    for (i, s) in stages.iter().enumerate() {
        if s.id.trim().is_empty() {
            c.push(format!("{path}[{i}].id"), "must not be empty");
        } else if !ids.insert(s.id.as_str()) {
            c.push(format!("{path}[{i}].id"), format!("duplicate portfolio stage {:?}", s.id));
        }
        if !(0.0..=1.0).contains(&s.probability) {
            c.push(format!("{path}[{i}].probability"), "must be between 0.0 and 1.0");
        }
    }
    for kind in [StageKind::Open, StageKind::Won, StageKind::Lost] {
        if !stages.iter().any(|s| s.kind == kind) {
            c.push(path, format!("needs at least one {} stage", format!("{kind:?}").to_lowercase()));
        }
    }
}

fn check_overlay_header<'a>(
    c: &mut Collector,
    prefix: &str,
    overlay: &'a CompanyOverlay,
    company_ids: &mut BTreeMap<&'a str, &'a str>,
    key: &'a str,
) {
    let id = overlay.company_id.trim();
    if id.is_empty() {
        c.push(format!("{prefix}.companyId"), "must not be empty");
    } else if let Some(other) = company_ids.insert(&overlay.company_id, key) {
        c.push(format!("{prefix}.companyId"), format!("duplicate companyId (also used by companies.{other})"));
    }
    if overlay.settings.rollout_wave > 9 {
        c.push(format!("{prefix}.settings.rolloutWave"), "must be 0..=9 (0 = canary)");
    }
}

/// Cadences the baseline publishes centrally (`localizable`): an overlay may localise only
/// the listed fields, and may not remove them.
fn check_governance(c: &mut Collector, prefix: &str, base: &crate::model::Baseline, overlay: &CompanyOverlay) {
    for (i, cadence) in overlay.cadences.iter().enumerate() {
        let path = format!("{prefix}.cadences[{i}]");
        match base.cadences.iter().enumerate().find(|(_, b)| b.key == cadence.key) {
            Some((j, b)) => {
                for (p, m) in crate::outreach::check_governed(b, &format!("baseline.cadences[{j}]"), cadence, &path) {
                    c.push(p, m);
                }
            }
            None if cadence.localizable.is_some() => {
                c.push(format!("{path}.localizable"), "only the baseline governs a cadence");
            }
            None => {}
        }
    }
    for (i, key) in overlay.remove_cadences.iter().enumerate() {
        if base.cadences.iter().any(|b| &b.key == key && b.localizable.is_some()) {
            c.push(
                format!("{prefix}.removeCadences[{i}]"),
                format!("\"{key}\" is published centrally by the baseline and cannot be removed by a company"),
            );
        }
    }
}

fn check_removals(c: &mut Collector, prefix: &str, doc: &Document, overlay: &CompanyOverlay) {
    let base = &doc.baseline;
    let mut seen = BTreeSet::new();
    for (i, name) in overlay.remove_deal_properties.iter().enumerate() {
        let path = format!("{prefix}.removeDealProperties[{i}]");
        if !seen.insert(name.as_str()) {
            c.push(&path, format!("\"{name}\" is listed twice"));
        } else if !base.deal_properties.iter().any(|p| &p.name == name) {
            c.push(&path, format!("\"{name}\" is not a baseline deal property"));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, id) in overlay.remove_pipelines.iter().enumerate() {
        let path = format!("{prefix}.removePipelines[{i}]");
        if !seen.insert(id.as_str()) {
            c.push(&path, format!("\"{id}\" is listed twice"));
        } else if !base.pipelines.iter().any(|p| &p.id == id) {
            c.push(&path, format!("\"{id}\" is not a baseline pipeline"));
        }
    }
    for (i, key) in overlay.remove_cadences.iter().enumerate() {
        if !base.cadences.iter().any(|c| &c.key == key) || overlay.cadences.iter().any(|c| &c.key == key) {
            c.push(
                format!("{prefix}.removeCadences[{i}]"),
                format!("\"{key}\" is not a baseline cadence, or is redeclared in this overlay"),
            );
        }
    }
    // Removing and redeclaring in the same overlay is ambiguous (replace? move to the end?).
    for (i, p) in overlay.deal_properties.iter().enumerate() {
        if overlay.remove_deal_properties.contains(&p.name) {
            c.push(
                format!("{prefix}.dealProperties[{i}].name"),
                format!("\"{}\" is also in removeDealProperties", p.name),
            );
        }
    }
    for (i, p) in overlay.pipelines.iter().enumerate() {
        if overlay.remove_pipelines.contains(&p.id) {
            c.push(format!("{prefix}.pipelines[{i}].id"), format!("\"{}\" is also in removePipelines", p.id));
        }
    }
}

fn check_groups(c: &mut Collector, groups: &[PropertyGroup], path: &str) {
    let mut names = BTreeSet::new();
    for (i, g) in groups.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !is_property_name(&g.name) {
            c.push(format!("{p}.name"), format!("must match {PROPERTY_NAME_PATTERN}"));
        } else if HUBSPOT_DEFAULT_GROUPS.contains(&g.name.as_str()) {
            c.push(
                format!("{p}.name"),
                format!("\"{}\" is a HubSpot default group; use it without declaring it", g.name),
            );
        } else if !names.insert(g.name.as_str()) {
            c.push(format!("{p}.name"), format!("duplicate group name \"{}\"", g.name));
        }
        if g.label.trim().is_empty() {
            c.push(format!("{p}.label"), "must not be empty");
        }
        refuse_control(c, format!("{p}.label"), &g.label, false);
    }
}

fn check_properties(c: &mut Collector, props: &[DealProperty], path: &str) {
    let mut names = BTreeSet::new();
    for (i, prop) in props.iter().enumerate() {
        let p = format!("{path}[{i}]");
        check_property(c, prop, &p);
        if !names.insert(prop.name.as_str()) {
            c.push(format!("{p}.name"), format!("duplicate property name \"{}\"", prop.name));
        }
    }
}

/// NUL and other control characters break HubSpot, logs and terminals alike; `multiline`
/// text may hold line breaks and tabs.
fn refuse_control(c: &mut Collector, path: String, value: &str, multiline: bool) {
    let allowed = |ch: char| multiline && matches!(ch, '\n' | '\r' | '\t');
    if value.chars().any(|ch| ch.is_control() && !allowed(ch)) {
        c.push(path, "must not contain control characters");
    }
}

fn check_property(c: &mut Collector, prop: &DealProperty, p: &str) {
    let name = prop.name.as_str();
    if !is_property_name(name) {
        c.push(format!("{p}.name"), format!("must match {PROPERTY_NAME_PATTERN}"));
    } else if name.starts_with("hs_") {
        c.push(format!("{p}.name"), "must not start with hs_ (reserved by HubSpot)");
    } else if HUBSPOT_DEAL_PROPERTIES.contains(&name) {
        c.push(format!("{p}.name"), format!("\"{name}\" is a HubSpot-defined deal property"));
    }
    if prop.label.trim().is_empty() {
        c.push(format!("{p}.label"), "must not be empty");
    } else if prop.label.chars().count() > 400 {
        c.push(format!("{p}.label"), "must be at most 400 characters");
    }
    refuse_control(c, format!("{p}.label"), &prop.label, false);
    refuse_control(c, format!("{p}.groupName"), &prop.group_name, false);
    refuse_control(c, format!("{p}.description"), prop.description.as_deref().unwrap_or_default(), true);
    if prop.field_type == FieldType::CalculationEquation {
        c.push(
            format!("{p}.fieldType"),
            "calculation_equation is not supported (GoMark does not manage calculated properties)",
        );
    } else if !prop.property_type.allowed_field_types().contains(&prop.field_type) {
        let allowed: Vec<&str> = prop.property_type.allowed_field_types().iter().map(|f| f.as_str()).collect();
        c.push(
            format!("{p}.fieldType"),
            format!(
                "\"{}\" is not valid for type \"{}\" (allowed: {})",
                prop.field_type,
                prop.property_type,
                allowed.join(", ")
            ),
        );
    }
    if prop.group_name.trim().is_empty() {
        c.push(format!("{p}.groupName"), "must not be empty");
    }
    if prop.property_type == PropertyType::Enumeration && prop.options.is_empty() {
        c.push(format!("{p}.options"), "required for type enumeration");
    }
    let mut values = BTreeSet::new();
    for (j, o) in prop.options.iter().enumerate() {
        let op = format!("{p}.options[{j}]");
        if o.label.trim().is_empty() {
            c.push(format!("{op}.label"), "must not be empty");
        }
        refuse_control(c, format!("{op}.label"), &o.label, false);
        refuse_control(c, format!("{op}.value"), &o.value, false);
        if o.value.is_empty() {
            c.push(format!("{op}.value"), "must not be empty");
        } else if !values.insert(o.value.as_str()) {
            c.push(format!("{op}.value"), format!("duplicate option value \"{}\"", o.value));
        }
    }
}

fn check_pipelines(c: &mut Collector, pipelines: &[Pipeline], path: &str) {
    let mut ids = BTreeSet::new();
    for (i, pipe) in pipelines.iter().enumerate() {
        let p = format!("{path}[{i}]");
        check_pipeline(c, pipe, &p);
        if !ids.insert(pipe.id.as_str()) {
            c.push(format!("{p}.id"), format!("duplicate pipeline id \"{}\"", pipe.id));
        }
    }
}

fn label_key(label: &str) -> String {
    // HubSpot's uniqueness is about what users see; treat case and padding as equal.
    label.trim().to_lowercase()
}

fn check_pipeline(c: &mut Collector, pipe: &Pipeline, p: &str) {
    if !is_pipeline_id(&pipe.id) {
        c.push(format!("{p}.id"), format!("must match {PIPELINE_ID_PATTERN}"));
    }
    if pipe.label.trim().is_empty() {
        c.push(format!("{p}.label"), "must not be empty");
    }
    if pipe.stages.is_empty() {
        c.push(format!("{p}.stages"), "must have at least one stage");
        return;
    }
    let mut ids = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for (j, s) in pipe.stages.iter().enumerate() {
        let sp = format!("{p}.stages[{j}]");
        if !is_pipeline_id(&s.id) {
            c.push(format!("{sp}.id"), format!("must match {PIPELINE_ID_PATTERN}"));
        } else if !ids.insert(s.id.as_str()) {
            c.push(format!("{sp}.id"), format!("duplicate stage id \"{}\" in this pipeline", s.id));
        }
        if s.label.trim().is_empty() {
            c.push(format!("{sp}.label"), "must not be empty");
        } else if !labels.insert(label_key(&s.label)) {
            c.push(format!("{sp}.label"), format!("duplicate stage label \"{}\" in this pipeline", s.label));
        }
        if !is_valid_probability(s.probability) {
            c.push(format!("{sp}.probability"), "must be 0.0..1.0 in steps of 0.1");
        } else if s.closed && s.probability != 0.0 && s.probability != 1.0 {
            c.push(
                format!("{sp}.probability"),
                "a closed stage must have probability 0.0 (closed-lost) or 1.0 (closed-won)",
            );
        }
    }
    if pipe.stages.iter().all(|s| s.closed) {
        c.push(format!("{p}.stages"), "needs at least one open (not closed) stage");
    }
    let mut removed = BTreeSet::new();
    for (j, r) in pipe.removed_stages.iter().enumerate() {
        let rp = format!("{p}.removedStages[{j}]");
        if !is_pipeline_id(&r.id) {
            c.push(format!("{rp}.id"), format!("must match {PIPELINE_ID_PATTERN}"));
        } else if ids.contains(r.id.as_str()) {
            c.push(format!("{rp}.id"), format!("stage \"{}\" is still in stages: remove it there", r.id));
        } else if !removed.insert(r.id.as_str()) {
            c.push(format!("{rp}.id"), format!("duplicate removed stage \"{}\"", r.id));
        }
        if !ids.contains(r.move_deals_to.as_str()) {
            c.push(format!("{rp}.moveDealsTo"), format!("{:?} is not a stage of this pipeline", r.move_deals_to));
        }
    }
    if let Some(rules) = &pipe.rules {
        let rp = format!("{p}.rules");
        let movement =
            [("noBackwardsMovement", &rules.no_backwards_movement), ("noSkippingStages", &rules.no_skipping_stages)];
        for (name, rule) in movement {
            let Some(rule) = rule else { continue };
            if !rule.all_stages && rule.stages.is_empty() {
                c.push(format!("{rp}.{name}"), "set allStages or list stages");
            }
            check_rule_stages(c, &ids, &rule.stages, &format!("{rp}.{name}.stages"));
        }
        check_rule_stages(c, &ids, &rules.creation_stages, &format!("{rp}.creationStages"));
    }
}

/// Stages a pipeline rule names: each a (kept) stage of the pipeline, once.
fn check_rule_stages(c: &mut Collector, ids: &BTreeSet<&str>, stages: &[String], path: &str) {
    let mut seen = BTreeSet::new();
    for (k, stage) in stages.iter().enumerate() {
        if !ids.contains(stage.as_str()) {
            c.push(format!("{path}[{k}]"), format!("{stage:?} is not a stage of this pipeline"));
        } else if !seen.insert(stage.as_str()) {
            c.push(format!("{path}[{k}]"), format!("duplicate stage {stage:?}"));
        }
    }
}

/// Rules that need the merged view: pipeline label uniqueness across baseline and overlay,
/// and property groups that must exist in the effective groups.
fn check_outreach(c: &mut Collector, cfg: &SourcedConfig<'_>) {
    let cadences: Vec<(String, &crate::outreach::Cadence)> =
        cfg.cadences.iter().map(|s| (s.path.clone(), s.item)).collect();
    let rules: Vec<(String, &crate::outreach::UpsellRule)> =
        cfg.upsell_rules.iter().map(|s| (s.path.clone(), s.item)).collect();
    for (path, message) in crate::outreach::check_cadences(&cadences) {
        c.push(path, message);
    }
    for (path, message) in crate::outreach::check_rules(&rules, &cadences) {
        c.push(path, message);
    }
}

fn check_effective(c: &mut Collector, cfg: &SourcedConfig<'_>) {
    check_outreach(c, cfg);
    let mut labels: BTreeMap<String, &Sourced<'_, Pipeline>> = BTreeMap::new();
    for pipe in &cfg.pipelines {
        let key = label_key(&pipe.item.label);
        if key.is_empty() {
            continue;
        }
        match labels.get(&key) {
            None => {
                labels.insert(key, pipe);
            }
            Some(first) => {
                // Blame the overlay when it is involved: the baseline was fine on its own.
                let (blamed, other) =
                    if first.from_overlay && !pipe.from_overlay { (*first, pipe) } else { (pipe, *first) };
                c.push(
                    format!("{}.label", blamed.path),
                    format!("duplicate pipeline label \"{}\" (also {})", blamed.item.label, other.path),
                );
            }
        }
    }

    let groups: BTreeSet<&str> =
        cfg.property_groups.iter().map(|g| g.item.name.as_str()).chain(HUBSPOT_DEFAULT_GROUPS).collect();
    for prop in &cfg.deal_properties {
        let g = prop.item.group_name.as_str();
        if !g.trim().is_empty() && !groups.contains(g) {
            c.push(
                format!("{}.groupName", prop.path),
                format!("group \"{g}\" is not defined (declare it in propertyGroups or use dealinformation)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_patterns() {
        assert!(is_property_name("gomark_tier"));
        assert!(is_property_name(&format!("a{}", "b".repeat(99))));
        assert!(!is_property_name(&format!("a{}", "b".repeat(100))));
        assert!(!is_property_name(""));
        assert!(!is_property_name("gomark-tier"));
        assert!(!is_property_name("é"));
        assert!(is_pipeline_id("sales-2024_eu"));
        assert!(!is_pipeline_id("-sales"));
        assert!(!is_pipeline_id(&"a".repeat(65)));
        assert!(is_company_key("4acme"));
        assert!(!is_company_key("acme.eu"));
    }

    #[test]
    fn probability_steps() {
        for p in [0.0, 0.1, 0.3, 0.1 + 0.2, 0.7, 1.0] {
            assert!(is_valid_probability(p), "{p}");
        }
        for p in [-0.1, 0.05, 0.35, 1.1, f64::NAN, f64::INFINITY] {
            assert!(!is_valid_probability(p), "{p}");
        }
    }

    #[test]
    fn currencies_are_iso_codes_and_the_overlay_wins() {
        let doc = Document::from_yaml(
            r#"
baseline: {reportingCurrency: EUR, currency: usd}
companies:
  acme: {companyId: c-1, currency: GBP}
  beta: {companyId: c-2, currency: EURO}
  gamma: {companyId: c-3}
"#,
        )
        .expect("yaml");
        let errors = doc.validate().expect_err("two bad codes");
        let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["baseline.currency", "companies.beta.currency"]);
        assert_eq!(doc.baseline.effective_reporting_currency(), "EUR");
        assert_eq!(doc.companies["acme"].effective_currency(&doc.baseline), "GBP");
        assert_eq!(doc.companies["gamma"].effective_currency(&doc.baseline), "usd");
        assert_eq!(Document::default().baseline.effective_reporting_currency(), "USD");
    }

    #[test]
    fn portfolio_stages_and_mappings_are_checked() {
        let doc = Document::from_yaml(
            r#"
baseline:
  portfolioStages:
    - {id: early, label: Early, probability: 0.2, kind: open}
    - {id: early, label: Again, probability: 1.5, kind: open}
    - {id: won, label: Won, probability: 1.0, kind: won}
companies:
  acme:
    companyId: c-1
    stageMapping: {qualifiedtobuy: early, contractsent: nowhere}
"#,
        )
        .expect("parses");
        let errors = doc.validate().expect_err("invalid").errors;
        let has = |path: &str, text: &str| errors.iter().any(|e| e.path == path && e.message.contains(text));
        assert!(has("baseline.portfolioStages[1].id", "duplicate"), "{errors:?}");
        assert!(has("baseline.portfolioStages[1].probability", "between"), "{errors:?}");
        assert!(has("baseline.portfolioStages", "lost"), "{errors:?}");
        assert!(has("companies.acme.stageMapping.contractsent", "not a portfolio stage"), "{errors:?}");
        assert!(!errors.iter().any(|e| e.path.ends_with("qualifiedtobuy")), "{errors:?}");
    }
}
