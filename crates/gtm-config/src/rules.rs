//! Write validation as desired state: HubSpot's property validation rules, who writes deal
//! records (so a plan can warn before a rule starts refusing them), and who changed a
//! portal (so drift can be handled per source).
//!
//! HubSpot (API version 2026-09 on) enforces a portal's admin rules on every CRM record
//! write, API writes included, answering 400 `VALIDATION_ERROR`. A rule declared here is
//! applied through the property validations API
//! (`/crm/property-validations/2026-03/{objectType}/{property}/rule-type/{ruleType}`).

use crate::model::DriftPolicy;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One validation rule on one deal property (HubSpot's own properties included:
/// `closedate` required when `dealstage` is `closedwon` is the classic one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationRule {
    /// The property the rule constrains.
    pub property: String,
    pub rule_type: RuleType,
    /// The rule's arguments, as HubSpot takes them (e.g. `["NUMERIC_ONLY"]`, `["10"]`);
    /// for [`RuleType::ConditionallyRequired`]: the property it depends on, then the values
    /// that make `property` required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_arguments: Vec<String>,
    /// Whether HubSpot normalises the input before checking it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub should_apply_normalization: bool,
}

impl ValidationRule {
    /// The key a rule is merged, overridden, removed and planned by: HubSpot keeps one rule
    /// of each type per property.
    pub fn key(&self) -> String {
        format!("{}/{}", self.property, self.rule_type)
    }

    /// For a conditional-required rule: the property and values that make it required.
    pub fn condition(&self) -> Option<(&str, &[String])> {
        match (self.rule_type, self.rule_arguments.split_first()) {
            (RuleType::ConditionallyRequired, Some((when, values))) => Some((when.as_str(), values)),
            _ => None,
        }
    }
}

macro_rules! rule_types {
    ($($variant:ident => $wire:literal),+ $(,)?) => {
        /// HubSpot's `ruleType` values (property validations API), plus conditional-required.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum RuleType {
            $(#[serde(rename = $wire)] $variant,)+
        }

        impl RuleType {
            pub const ALL: &'static [RuleType] = &[$(RuleType::$variant,)+];

            /// HubSpot's wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(RuleType::$variant => $wire,)+ }
            }
        }
    };
}

rule_types! {
    AfterDatetimeDuration => "AFTER_DATETIME_DURATION",
    AfterDuration => "AFTER_DURATION",
    Alphanumeric => "ALPHANUMERIC",
    BeforeDatetimeDuration => "BEFORE_DATETIME_DURATION",
    BeforeDuration => "BEFORE_DURATION",
    // Admin-configured "required when another property has one of these values" (enforced
    // on API writes from 2026-09). HubSpot's published ruleType enum does not list it yet;
    // this is the name the simulator (crates/hubspot-sim, rules.rs) serves and enforces it
    // under, through the same API. Check it against a real 2026-09 portal.
    ConditionallyRequired => "CONDITIONALLY_REQUIRED",
    DaysOfWeek => "DAYS_OF_WEEK",
    Decimal => "DECIMAL",
    Domain => "DOMAIN",
    Email => "EMAIL",
    EmailAllowedDomains => "EMAIL_ALLOWED_DOMAINS",
    EmailBlockedDomains => "EMAIL_BLOCKED_DOMAINS",
    EndDate => "END_DATE",
    EndDatetime => "END_DATETIME",
    Format => "FORMAT",
    MaxLength => "MAX_LENGTH",
    MaxNumber => "MAX_NUMBER",
    MinLength => "MIN_LENGTH",
    MinNumber => "MIN_NUMBER",
    PhoneNumberWithExplicitCountryCode => "PHONE_NUMBER_WITH_EXPLICIT_COUNTRY_CODE",
    Regex => "REGEX",
    SpecialCharacters => "SPECIAL_CHARACTERS",
    StartDate => "START_DATE",
    StartDatetime => "START_DATETIME",
    Url => "URL",
    UrlAllowedDomains => "URL_ALLOWED_DOMAINS",
    UrlBlockedDomains => "URL_BLOCKED_DOMAINS",
    Whitespace => "WHITESPACE",
}

impl RuleType {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// Rules whose arguments are numbers (lengths, bounds, durations).
    pub fn takes_number(self) -> bool {
        matches!(
            self,
            Self::MaxLength
                | Self::MinLength
                | Self::MaxNumber
                | Self::MinNumber
                | Self::Decimal
                | Self::AfterDuration
                | Self::BeforeDuration
                | Self::AfterDatetimeDuration
                | Self::BeforeDatetimeDuration
        )
    }
}

impl fmt::Display for RuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that writes deal records in the portfolio's portals, and which properties
/// its writes set. A rule that would refuse such writes makes `plan` warn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordWriter {
    /// e.g. `stripe-sync`; `gomark` is GoMark itself ([`GOMARK_DEAL_WRITES`]).
    pub name: String,
    /// The deal properties each of its writes sets.
    pub sets: Vec<String>,
}

/// The deal properties GoMark's own deal-record writes set, checked like any declared
/// writer's when a rule changes. GoMark's one deal write, moving a removed stage's deals
/// (`dealstage`), is not listed: it is checked deal by deal where it is planned (the plan
/// counts the deals a rule at the destination would refuse), which says more than a
/// warning on every conditional rule would.
pub const GOMARK_DEAL_WRITES: &[&str] = &[];

/// A pipeline's rules, as HubSpot's Pipeline Rules API (`2026-09-beta`) holds them
/// (`governanceValidationRules`), with GoMark stage ids. HubSpot (API 2026-09 on) refuses a
/// deal write that breaks one with 400 `VALIDATION_ERROR`. Approvals and stage edit
/// permissions are not declared here.
///
/// Declaring `rules` on a pipeline makes all three desired state (`rules: {}` means none);
/// leaving it out leaves the pipeline's rules alone.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineRules {
    /// Deals may not move from these stages to an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_backwards_movement: Option<StageRule>,
    /// Deals may not move from these stages past the next open stage (closed stages stay
    /// reachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_skipping_stages: Option<StageRule>,
    /// The only stages deals may be created in; empty: any stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub creation_stages: Vec<String>,
}

/// Which stages a movement rule covers: every stage, or those listed (GoMark ids).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageRule {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_stages: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
}

impl StageRule {
    pub fn covers(&self, stage: &str) -> bool {
        self.all_stages || self.stages.iter().any(|s| s == stage)
    }
}

/// Whether a pinned API version serves the Pipeline Rules API (a 2026-09 beta).
pub fn serves_pipeline_rules(api_version: &str) -> bool {
    api_version.starts_with("20") && api_version >= "2026-09"
}

/// Who made a change in a portal, as HubSpot's `changeSource`/`sourceId` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChangeSourceKind {
    /// A person in HubSpot's UI (or its mobile app, an import).
    User,
    /// Another app or integration (an API write by a token that is not GoMark's).
    Integration,
    /// HubSpot's AI agents (Breeze).
    AiAgent,
    /// Workflows and other HubSpot automation.
    Automation,
    /// GoMark's own writes (its app id).
    Gomark,
    /// HubSpot did not say.
    #[default]
    Unknown,
}

impl ChangeSourceKind {
    pub const ALL: [ChangeSourceKind; 6] =
        [Self::User, Self::Integration, Self::AiAgent, Self::Automation, Self::Gomark, Self::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Integration => "integration",
            Self::AiAgent => "ai_agent",
            Self::Automation => "automation",
            Self::Gomark => "gomark",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Classifies HubSpot's `changeSource` (e.g. `CRM_UI`, `INTEGRATION`, `API`,
    /// `AUTOMATION_PLATFORM`, `AI_AGENT`) and `sourceId` (an app or user id). A write by
    /// GoMark's own app id is GoMark's, whatever HubSpot calls it.
    pub fn classify(change_source: &str, source_id: &str, gomark_app_ids: &[&str]) -> Self {
        let app = source_id.strip_prefix("app:").unwrap_or(source_id);
        if !app.is_empty() && gomark_app_ids.iter().any(|id| !id.is_empty() && *id == app) {
            return Self::Gomark;
        }
        let s = change_source.to_ascii_uppercase();
        match s.as_str() {
            "" => Self::Unknown,
            "CRM_UI" | "CRM" | "MOBILE_IOS" | "MOBILE_ANDROID" | "IMPORT" | "CRM_UI_BULK_ACTION" | "SALES" => {
                Self::User
            }
            "INTEGRATION" | "API" | "APP" | "INTEGRATIONS_SYNC" => Self::Integration,
            _ if s.contains("AI") || s.contains("BREEZE") || s.contains("AGENT") => Self::AiAgent,
            _ if s.contains("AUTOMATION") || s.contains("WORKFLOW") => Self::Automation,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for ChangeSourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drift policy per source, overriding the company's `driftPolicy` (e.g. adopt what admins
/// change in the UI, enforce against integrations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourcePolicies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<DriftPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<DriftPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_agent: Option<DriftPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automation: Option<DriftPolicy>,
}

impl SourcePolicies {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The policy declared for `source`, if any.
    pub fn get(&self, source: ChangeSourceKind) -> Option<DriftPolicy> {
        match source {
            ChangeSourceKind::User => self.user,
            ChangeSourceKind::Integration => self.integration,
            ChangeSourceKind::AiAgent => self.ai_agent,
            ChangeSourceKind::Automation => self.automation,
            ChangeSourceKind::Gomark | ChangeSourceKind::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_type_names_match_serde() {
        for t in RuleType::ALL {
            assert_eq!(serde_json::to_value(t).ok(), Some(serde_json::Value::from(t.as_str())));
            assert_eq!(RuleType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(RuleType::parse("NOPE"), None);
    }

    #[test]
    fn sources_are_classified() {
        let ours = ["4242"];
        assert_eq!(ChangeSourceKind::classify("CRM_UI", "userId:7", &ours), ChangeSourceKind::User);
        assert_eq!(ChangeSourceKind::classify("INTEGRATION", "1234", &ours), ChangeSourceKind::Integration);
        assert_eq!(ChangeSourceKind::classify("INTEGRATION", "4242", &ours), ChangeSourceKind::Gomark);
        assert_eq!(ChangeSourceKind::classify("API", "app:4242", &ours), ChangeSourceKind::Gomark);
        assert_eq!(ChangeSourceKind::classify("AI_AGENT", "", &ours), ChangeSourceKind::AiAgent);
        assert_eq!(ChangeSourceKind::classify("AUTOMATION_PLATFORM", "9", &ours), ChangeSourceKind::Automation);
        assert_eq!(ChangeSourceKind::classify("", "", &ours), ChangeSourceKind::Unknown);
        assert_eq!(ChangeSourceKind::classify("SOMETHING_NEW", "", &[]), ChangeSourceKind::Unknown);
    }

    #[test]
    fn conditional_rules_name_their_condition() {
        let rule = ValidationRule {
            property: "closedate".into(),
            rule_type: RuleType::ConditionallyRequired,
            rule_arguments: vec!["dealstage".into(), "closedwon".into()],
            should_apply_normalization: false,
        };
        assert_eq!(rule.condition(), Some(("dealstage", &["closedwon".to_string()][..])));
        assert_eq!(rule.key(), "closedate/CONDITIONALLY_REQUIRED");
    }
}
