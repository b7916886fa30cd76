//! GoMark's desired-state GTM configuration ("GTM config as code"), as pure data and
//! functions: no I/O, no async.
//!
//! - [`Document`]: a portfolio [`Baseline`] plus per-company [`CompanyOverlay`]s, read from
//!   YAML or JSON, with a canonical JSON form and a content hash.
//! - [`Document::validate`]: every rule, every error, each with its document path.
//! - [`Document::effective`]: one company's merged configuration ([`EffectiveConfig`]).
//! - [`diff`] / [`effective_diff`]: what changed between two revisions, keyed by names.
//! - [`plan()`]: what must change in a HubSpot portal ([`Observed`]) to match, including
//!   the changes HubSpot cannot make ([`Blocked`]) and what to do instead.
//! - [`import()`]: adopt what a portal already holds as revision 1.
//!
//! ```
//! use gtm_config::{DealsInStages, Document, Observed, PipelineIdMap, plan};
//! use std::collections::BTreeSet;
//!
//! let doc = Document::from_yaml(r#"
//! baseline:
//!   dealProperties:
//!     - {name: gomark_tier, label: Tier, type: string, fieldType: text, groupName: dealinformation}
//! companies:
//!   acme: {companyId: "c-1"}
//! "#)?;
//! doc.validate()?;
//! let desired = doc.effective("acme")?;
//! let p = plan(&desired, &Observed::default(), &PipelineIdMap::default(),
//!              &DealsInStages::new(), &BTreeSet::new());
//! assert_eq!(p.to_string().lines().next(), Some("+ deal property gomark_tier"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod diff;
mod effective;
mod import;
pub mod metrics;
mod model;
pub mod outreach;
mod plan;
mod rules;
mod validate;
pub mod wire;
pub mod zones;

pub use diff::{Change, ChangeKind, DocumentDiff, diff, effective_diff};
pub use effective::EffectiveConfig;
pub use import::{Imported, import};
pub use metrics::{MetricDefinitions, ResolvedMetrics};
pub use model::{
    API_VERSIONS, Baseline, CompanyOverlay, CompanySettings, DealProperty, Document, DriftPolicy, FieldType,
    HubSpotSettings, Pipeline, PortfolioStage, PropertyGroup, PropertyOption, PropertyType, RemovedStage, Stage,
    StageKind, canonical_probability, order_or_index,
};
pub use outreach::{
    Cadence, CadenceStep, CompanyCalendar, Criterion, CriterionOp, DayRange, Guardrails, PortfolioContact, QuietHours,
    RollingCap, SendWindow, StepType, UpsellRule,
};
pub use plan::{
    ALTERNATIVE_HUBSPOT_DEFINED, ALTERNATIVE_RENAME, ALTERNATIVE_STAGE_IN_USE, ALTERNATIVE_UNIQUE_VALUE, Action,
    Blocked, DealCount, DealsInStages, FieldChange, Observed, ObservedGroup, ObservedPipeline, ObservedProperty,
    ObservedRule, ObservedStage, Op, PipelineIdMap, PipelineIds, Plan, PlanSummary, REASON_HUBSPOT_DEFINED,
    REASON_RENAME, REASON_STAGE_IN_USE, REASON_UNIQUE_VALUE, StageDeals, Target, WARNING_RULE_REJECTS_WRITES, Warning,
    plan,
};
pub use rules::{
    ChangeSourceKind, GOMARK_DEAL_WRITES, PipelineRules, RecordWriter, RuleType, SourcePolicies, StageRule,
    ValidationRule, serves_pipeline_rules,
};
pub use validate::{HUBSPOT_DEAL_PROPERTIES, HUBSPOT_DEFAULT_GROUPS, ValidationError, ValidationErrors};

/// Errors other than validation (which returns [`ValidationErrors`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not a well-formed document; the message names the offending path.
    #[error("invalid {format} document: {message}")]
    Parse { format: &'static str, message: String },
    #[error("cannot serialise document: {0}")]
    Serialize(String),
    #[error("unknown company key {0:?}")]
    UnknownCompany(String),
}
