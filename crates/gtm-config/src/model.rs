//! The desired-state document: a portfolio baseline plus per-company overlays.

use crate::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A whole GTM configuration document (one revision).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub baseline: Baseline,
    /// Overlays keyed by company key (a slug). A BTreeMap so serialisation order is stable.
    #[serde(default)]
    pub companies: BTreeMap<String, CompanyOverlay>,
}

/// What applies to every company.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Baseline {
    #[serde(default)]
    pub property_groups: Vec<PropertyGroup>,
    #[serde(default)]
    pub deal_properties: Vec<DealProperty>,
    #[serde(default)]
    pub pipelines: Vec<Pipeline>,
    /// Upso cadences every company gets (upso-cadence applies them).
    #[serde(default)]
    pub cadences: Vec<crate::outreach::Cadence>,
    /// Upsell rules every company gets (upso-cadence's engine runs them).
    #[serde(default)]
    pub upsell_rules: Vec<crate::outreach::UpsellRule>,
    /// Addresses (`a@b.com`) or domains (`@b.com`) no company may ever email.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppression_list: Vec<String>,
    /// Rules for one person across every company (portfolio cap, gap, exclusivity).
    #[serde(default, skip_serializing_if = "is_default")]
    pub portfolio_contact: crate::outreach::PortfolioContact,
    /// The stages the portfolio roll-up sums every company's stages onto, in funnel
    /// order; empty means [`PortfolioStage::defaults`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub portfolio_stages: Vec<PortfolioStage>,
    /// Validation rules on deal properties, every company's (override by property and
    /// rule type in an overlay).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_rules: Vec<crate::rules::ValidationRule>,
    /// The integrations that write deal records, and what they set: `plan` warns when a
    /// rule would start refusing their writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record_writers: Vec<crate::rules::RecordWriter>,
    /// HubSpot platform settings every portal gets (an overlay may override them).
    #[serde(default, skip_serializing_if = "HubSpotSettings::is_empty")]
    pub hubspot: HubSpotSettings,
    /// The currency (ISO 4217) the portfolio roll-up totals are in; USD when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_currency: Option<String>,
    /// The currency a company's figures are in unless its overlay says otherwise; USD
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// How each portfolio metric is computed ([`crate::MetricDefinitions`]); the
    /// defaults when unset.
    #[serde(default, skip_serializing_if = "is_default")]
    pub metrics: crate::metrics::MetricDefinitions,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// HubSpot platform settings of a portal, as desired state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HubSpotSettings {
    /// The HubSpot API version the portal is called with ([`API_VERSIONS`]). Moving it is
    /// planned as an action, applied after a conformance probe of the portal on the new
    /// version, and rolled out in waves like any change. Unset: the portal keeps its pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

impl HubSpotSettings {
    pub fn is_empty(&self) -> bool {
        self.api_version.is_none()
    }
}

/// The HubSpot API versions a portal can be pinned to, oldest first (v3 is the fallback;
/// numbered versions stop working in September 2027).
pub const API_VERSIONS: [&str; 3] = ["v3", "2026-03", "2026-09"];

/// A canonical portfolio stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortfolioStage {
    pub id: String,
    pub label: String,
    /// 0.0 ..= 1.0: unmapped open stages go to the open stage nearest in probability.
    pub probability: f64,
    pub kind: StageKind,
}

/// Whether deals in a stage are still open, won or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

impl PortfolioStage {
    /// Early, middle and late open stages, then won and lost.
    pub fn defaults() -> Vec<PortfolioStage> {
        let stage = |id: &str, label: &str, probability, kind| PortfolioStage {
            id: id.into(),
            label: label.into(),
            probability,
            kind,
        };
        vec![
            stage("early", "Early", 0.2, StageKind::Open),
            stage("middle", "Middle", 0.5, StageKind::Open),
            stage("late", "Late", 0.8, StageKind::Open),
            stage("won", "Won", 1.0, StageKind::Won),
            stage("lost", "Lost", 0.0, StageKind::Lost),
        ]
    }
}

impl Baseline {
    /// The roll-up's currency: the declared one, or USD.
    pub fn effective_reporting_currency(&self) -> &str {
        self.reporting_currency.as_deref().unwrap_or(DEFAULT_CURRENCY)
    }

    /// The metric definitions in force: the declared ones, defaults filled in.
    pub fn effective_metrics(&self) -> crate::metrics::ResolvedMetrics {
        self.metrics.resolve(&self.effective_portfolio_stages())
    }

    /// The portfolio stages in force: the declared ones, or the defaults.
    pub fn effective_portfolio_stages(&self) -> Vec<PortfolioStage> {
        if self.portfolio_stages.is_empty() { PortfolioStage::defaults() } else { self.portfolio_stages.clone() }
    }
}

/// The currency of figures and totals nobody declared one for.
pub const DEFAULT_CURRENCY: &str = "USD";

impl CompanyOverlay {
    /// The currency this company's figures are in: its own, the baseline's, or USD.
    pub fn effective_currency<'a>(&'a self, baseline: &'a Baseline) -> &'a str {
        self.currency.as_deref().or(baseline.currency.as_deref()).unwrap_or(DEFAULT_CURRENCY)
    }
}

/// One company's additions, overrides and removals on top of the baseline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompanyOverlay {
    /// The GoMark company id; ties the overlay to a registered company.
    pub company_id: String,
    #[serde(default)]
    pub settings: CompanySettings,
    /// Overrides the baseline's HubSpot platform settings for this portal.
    #[serde(default, skip_serializing_if = "HubSpotSettings::is_empty")]
    pub hubspot: HubSpotSettings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub property_groups: Vec<PropertyGroup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deal_properties: Vec<DealProperty>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_deal_properties: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<Pipeline>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_pipelines: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cadences: Vec<crate::outreach::Cadence>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_cadences: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsell_rules: Vec<crate::outreach::UpsellRule>,
    /// The company's outreach calendar: time zone and holidays.
    #[serde(default, skip_serializing_if = "is_default")]
    pub outreach: crate::outreach::CompanyCalendar,
    /// HubSpot stage id → portfolio stage id, for the roll-up; stages not listed go by
    /// their probability.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stage_mapping: BTreeMap<String, String>,
    /// The currency (ISO 4217) this company's figures are in (its HubSpot company
    /// currency); the baseline's `currency` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Company attributes benchmarks group by (`salesMotion: plg`, `arrBand: 10-50m`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The open pipeline this company should carry (coverage = open ÷ target), a
    /// positive decimal in its currency; written as text or a number.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "amount_text")]
    pub coverage_target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_rules: Vec<crate::rules::ValidationRule>,
    /// Baseline rules this company does not get, as `property/RULE_TYPE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_validation_rules: Vec<String>,
}

/// An amount written as `"250000"` or `250000`, kept as the text it reads as (the
/// validator checks it is a positive decimal; floats are never stored).
fn amount_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Amount {
        Int(u64),
        Float(f64),
        Text(String),
    }
    Ok(Option::<Amount>::deserialize(d)?.map(|a| match a {
        Amount::Int(i) => i.to_string(),
        Amount::Float(f) => f.to_string(),
        Amount::Text(s) => s,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompanySettings {
    #[serde(default)]
    pub drift_policy: DriftPolicy,
    /// 0 is the canary wave; validated to 0..=9.
    #[serde(default = "default_rollout_wave")]
    pub rollout_wave: u8,
    /// `driftPolicy` per source of the change (who made it), where HubSpot says.
    #[serde(default, skip_serializing_if = "crate::rules::SourcePolicies::is_empty")]
    pub drift_policy_by_source: crate::rules::SourcePolicies,
}

fn default_rollout_wave() -> u8 {
    1
}

impl CompanySettings {
    /// The policy for drift made by `source`: its own, else the company's.
    pub fn drift_policy_for(&self, source: crate::rules::ChangeSourceKind) -> DriftPolicy {
        self.drift_policy_by_source.get(source).unwrap_or(self.drift_policy)
    }
}

impl Default for CompanySettings {
    fn default() -> Self {
        Self {
            drift_policy: DriftPolicy::default(),
            rollout_wave: default_rollout_wave(),
            drift_policy_by_source: crate::rules::SourcePolicies::default(),
        }
    }
}

/// What to do when HubSpot drifts from the desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Put it back.
    Enforce,
    /// Report only (the safe default: nothing is written without a human).
    #[default]
    Alert,
    /// Accept reality as a new revision.
    Adopt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PropertyGroup {
    pub name: String,
    pub label: String,
    /// None leaves the order to HubSpot (groups are created without one and never compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DealProperty {
    /// HubSpot internal name; immutable once created.
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub property_type: PropertyType,
    pub field_type: FieldType,
    pub group_name: String,
    /// None and "" mean the same to HubSpot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    /// HubSpot cannot change this after creation.
    #[serde(default)]
    pub has_unique_value: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PropertyOption {
    pub label: String,
    pub value: String,
    /// None means "position in the list".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
    #[serde(default)]
    pub hidden: bool,
}

/// HubSpot property `type` values that can be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PropertyType {
    #[serde(rename = "bool")]
    Bool,
    #[serde(rename = "date")]
    Date,
    #[serde(rename = "datetime")]
    Datetime,
    #[serde(rename = "enumeration")]
    Enumeration,
    #[serde(rename = "number")]
    Number,
    #[serde(rename = "phone_number")]
    PhoneNumber,
    #[serde(rename = "string")]
    String,
}

impl PropertyType {
    pub const ALL: [PropertyType; 7] =
        [Self::Bool, Self::Date, Self::Datetime, Self::Enumeration, Self::Number, Self::PhoneNumber, Self::String];

    /// HubSpot's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::Enumeration => "enumeration",
            Self::Number => "number",
            Self::PhoneNumber => "phone_number",
            Self::String => "string",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The field types GoMark accepts for this type. HubSpot also allows
    /// `calculation_equation`, but calculated properties are not managed here.
    pub fn allowed_field_types(self) -> &'static [FieldType] {
        use FieldType as F;
        match self {
            Self::Enumeration => &[F::Select, F::Radio, F::Checkbox, F::Booleancheckbox],
            Self::Bool => &[F::Booleancheckbox],
            Self::String => &[F::Text, F::Textarea, F::Html, F::Phonenumber, F::File],
            Self::Number => &[F::Number],
            Self::Date | Self::Datetime => &[F::Date],
            Self::PhoneNumber => &[F::Phonenumber],
        }
    }
}

/// HubSpot property `fieldType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Booleancheckbox,
    CalculationEquation,
    Checkbox,
    Date,
    File,
    Html,
    Number,
    Phonenumber,
    Radio,
    Select,
    Text,
    Textarea,
}

impl FieldType {
    pub const ALL: [FieldType; 12] = [
        Self::Booleancheckbox,
        Self::CalculationEquation,
        Self::Checkbox,
        Self::Date,
        Self::File,
        Self::Html,
        Self::Number,
        Self::Phonenumber,
        Self::Radio,
        Self::Select,
        Self::Text,
        Self::Textarea,
    ];

    /// HubSpot's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booleancheckbox => "booleancheckbox",
            Self::CalculationEquation => "calculation_equation",
            Self::Checkbox => "checkbox",
            Self::Date => "date",
            Self::File => "file",
            Self::Html => "html",
            Self::Number => "number",
            Self::Phonenumber => "phonenumber",
            Self::Radio => "radio",
            Self::Select => "select",
            Self::Text => "text",
            Self::Textarea => "textarea",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for PropertyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pipeline {
    /// GoMark's key; HubSpot generates its own id, mapped in [`crate::PipelineIdMap`].
    pub id: String,
    pub label: String,
    /// None means "position in the (effective) list".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Stages taken out of this pipeline whose deals GoMark moves elsewhere before deleting
    /// them (HubSpot refuses to delete a stage that still holds deals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_stages: Vec<RemovedStage>,
    /// The pipeline's rules (HubSpot's Pipeline Rules API); `None` leaves them alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<crate::rules::PipelineRules>,
}

/// A stage removed from its pipeline, and where its deals go: the plan moves them (a batch
/// update of their `dealstage`) before it deletes the stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemovedStage {
    /// The removed stage's GoMark id.
    pub id: String,
    /// The GoMark id of a stage of the same pipeline.
    pub move_deals_to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stage {
    /// GoMark's key, unique within its pipeline.
    pub id: String,
    pub label: String,
    /// None means "position in the stage list".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
    /// 0.0..=1.0 in steps of 0.1 (HubSpot stores it as the string "0.1").
    pub probability: f64,
    /// Closed-won (probability 1.0) or closed-lost (0.0).
    #[serde(default)]
    pub closed: bool,
}

impl Stage {
    /// HubSpot's canonical probability string ("0.2").
    pub fn probability_string(&self) -> String {
        canonical_probability(self.probability)
    }
}

/// Formats a probability the way HubSpot stores it: one decimal.
pub fn canonical_probability(p: f64) -> String {
    format!("{p:.1}")
}

/// The display order an item gets: explicit, else its position.
pub fn order_or_index(explicit: Option<i32>, index: usize) -> i32 {
    explicit.unwrap_or_else(|| i32::try_from(index).unwrap_or(i32::MAX))
}

impl Document {
    /// Parses YAML. Unknown keys fail with the path of the offending key.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse { format: "yaml", message: e.to_string() })
    }

    /// Parses JSON. Unknown keys fail with the path of the offending key.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        match serde_json::from_str::<Document>(text) {
            Ok(doc) => Ok(doc),
            Err(e) if e.is_data() => {
                // serde_json reports data errors without a path; replay the (syntactically
                // valid) JSON through the YAML deserializer, which tracks paths.
                let message = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| serde_yaml::to_string(&v).ok())
                    .and_then(|yaml| serde_yaml::from_str::<Document>(&yaml).err())
                    .map(|ye| strip_location(&ye.to_string()))
                    .unwrap_or_else(|| e.to_string());
                Err(ConfigError::Parse { format: "json", message })
            }
            Err(e) => Err(ConfigError::Parse { format: "json", message: e.to_string() }),
        }
    }

    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_yaml::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))
    }

    /// Compact JSON with object keys sorted at every level, so equal documents give equal
    /// bytes whatever the key order of the source (and whatever serde_json features are on).
    pub fn to_canonical_json(&self) -> Result<String, ConfigError> {
        let value = serde_json::to_value(self).map_err(|e| ConfigError::Serialize(e.to_string()))?;
        let mut out = String::new();
        write_canonical(&value, &mut out);
        Ok(out)
    }

    /// Hex SHA-256 of [`Self::to_canonical_json`].
    pub fn content_hash(&self) -> Result<String, ConfigError> {
        let json = self.to_canonical_json()?;
        Ok(hex::encode(Sha256::digest(json.as_bytes())))
    }
}

/// The YAML replay of a JSON document has its own line numbers, which would mislead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

pub(crate) fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_format_like_hubspot() {
        assert_eq!(canonical_probability(0.2), "0.2");
        assert_eq!(canonical_probability(1.0), "1.0");
        assert_eq!(canonical_probability(0.0), "0.0");
        assert_eq!(canonical_probability(0.1 + 0.2), "0.3");
    }

    #[test]
    fn type_names_match_serde() {
        for t in PropertyType::ALL {
            assert_eq!(serde_json::to_value(t).ok(), Some(Value::from(t.as_str())));
            assert_eq!(PropertyType::parse(t.as_str()), Some(t));
        }
        for f in FieldType::ALL {
            assert_eq!(serde_json::to_value(f).ok(), Some(Value::from(f.as_str())));
            assert_eq!(FieldType::parse(f.as_str()), Some(f));
        }
    }

    #[test]
    fn strip_location_only_removes_the_suffix() {
        assert_eq!(strip_location("a: bad at line 3 column 4"), "a: bad");
        assert_eq!(strip_location("a: bad"), "a: bad");
    }

    #[test]
    fn default_settings() {
        let s = CompanySettings::default();
        assert_eq!((s.drift_policy, s.rollout_wave), (DriftPolicy::Alert, 1));
    }
}
