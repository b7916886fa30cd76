//! Property validation rules (HubSpot's property validations API) and their enforcement on
//! 2026-09 record writes.
//!
//! Rules are stored per portal and property, one per `ruleType`:
//! `{"ruleType", "ruleArguments": [..], "shouldApplyNormalization": bool}`. Enforced types:
//!
//! | ruleType | arguments | a written value must |
//! |---|---|---|
//! | `MIN_LENGTH` / `MAX_LENGTH` | `[n]` | have at least / at most n characters |
//! | `MIN_NUMBER` / `MAX_NUMBER` | `[x]` | be a number ≥ / ≤ x |
//! | `DECIMAL` | `[places]` | have at most that many decimal places |
//! | `ALPHANUMERIC` | `["NUMERIC_ONLY"]`, `["ALPHA_ONLY"]` or `["ALPHANUMERIC"]` | use only those characters |
//! | `REGEX` | `[pattern]` | match the pattern (whole value) |
//! | `BEFORE_DATETIME` / `AFTER_DATETIME` | `[ISO or epoch ms]` | be a date before / after it |
//! | `CONDITIONALLY_REQUIRED` (simulator convention for HubSpot's admin "conditional required property" rule) | `[controllingProperty, value, …]` | be present whenever the record's `controllingProperty` is one of the values |
//!
//! Only 2026-09 writes are checked (v3 and 2026-03 writes are not, as in HubSpot's rollout),
//! and only the properties a write touches: a value rule on the values it sets, a conditional
//! rule when the write sets the controlling property or clears the required one. A violation
//! is a 400 `VALIDATION_ERROR` naming the property and rule:
//! `{"category": "VALIDATION_ERROR", "subCategory": "MISSING_CONDITIONAL_REQUIRED_PROPERTY" |
//! "PROPERTY_VALIDATION_RULE_VIOLATION", "message", "context": {"propertyName": [..]},
//! "errors": [{"code": <same as subCategory>, "message", "context": {"propertyName": [..],
//! "ruleType": [..], "ruleArguments": [..]}}]}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::model::parse_datetime_ms;

/// Rule types the API accepts.
pub const RULE_TYPES: &[&str] = &[
    "MIN_LENGTH",
    "MAX_LENGTH",
    "MIN_NUMBER",
    "MAX_NUMBER",
    "DECIMAL",
    "ALPHANUMERIC",
    "REGEX",
    "BEFORE_DATETIME",
    "AFTER_DATETIME",
    "CONDITIONALLY_REQUIRED",
];

const MISSING_CONDITIONAL: &str = "MISSING_CONDITIONAL_REQUIRED_PROPERTY";
const RULE_VIOLATION: &str = "PROPERTY_VALIDATION_RULE_VIOLATION";

/// One rule on one property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rule {
    pub rule_type: String,
    pub rule_arguments: Vec<String>,
    #[serde(default)]
    pub should_apply_normalization: bool,
}

/// Rule body of a PUT.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RuleInput {
    pub rule_arguments: Option<Vec<Value>>,
    pub should_apply_normalization: Option<bool>,
}

/// property name → rule type → rule.
pub(crate) type Rules = BTreeMap<String, BTreeMap<String, Rule>>;

fn arg_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks a PUT body for `rule_type` and builds the rule.
pub(crate) fn build_rule(rule_type: &str, input: RuleInput) -> Result<Rule, ApiError> {
    if !RULE_TYPES.contains(&rule_type) {
        return Err(ApiError::validation(format!(
            "Unknown ruleType '{rule_type}'. Allowed values: {}",
            RULE_TYPES.join(", ")
        ))
        .with_context("ruleType", vec![rule_type.to_owned()]));
    }
    let args: Vec<String> = input
        .rule_arguments
        .ok_or_else(|| ApiError::validation("'ruleArguments' is required"))?
        .iter()
        .map(arg_text)
        .collect();
    let number = |i: usize| args.get(i).and_then(|a| a.trim().parse::<f64>().ok());
    let ok = match rule_type {
        "MIN_LENGTH" | "MAX_LENGTH" | "DECIMAL" => args.len() == 1 && args[0].trim().parse::<usize>().is_ok(),
        "MIN_NUMBER" | "MAX_NUMBER" => args.len() == 1 && number(0).is_some(),
        "ALPHANUMERIC" => args.len() == 1 && ["NUMERIC_ONLY", "ALPHA_ONLY", "ALPHANUMERIC"].contains(&args[0].as_str()),
        "REGEX" => args.len() == 1 && regex::Regex::new(&args[0]).is_ok(),
        "BEFORE_DATETIME" | "AFTER_DATETIME" => args.len() == 1 && parse_datetime_ms(&args[0]).is_some(),
        "CONDITIONALLY_REQUIRED" => args.len() >= 2,
        _ => false,
    };
    if !ok {
        return Err(ApiError::validation(format!("Invalid ruleArguments {args:?} for ruleType {rule_type}"))
            .with_context("ruleType", vec![rule_type.to_owned()]));
    }
    Ok(Rule {
        rule_type: rule_type.to_owned(),
        rule_arguments: args,
        should_apply_normalization: input.should_apply_normalization.unwrap_or(false),
    })
}

/// Whether `value` satisfies a value rule (conditional rules are checked elsewhere).
fn value_ok(rule: &Rule, value: &str) -> bool {
    let arg = rule.rule_arguments.first().map(String::as_str).unwrap_or_default();
    let value = if rule.should_apply_normalization { value.trim() } else { value };
    let num = |s: &str| s.trim().parse::<f64>().ok();
    match rule.rule_type.as_str() {
        "MIN_LENGTH" => arg.parse::<usize>().is_ok_and(|n| value.chars().count() >= n),
        "MAX_LENGTH" => arg.parse::<usize>().is_ok_and(|n| value.chars().count() <= n),
        "MIN_NUMBER" => num(value).zip(num(arg)).is_some_and(|(v, min)| v >= min),
        "MAX_NUMBER" => num(value).zip(num(arg)).is_some_and(|(v, max)| v <= max),
        "DECIMAL" => {
            arg.parse::<usize>().is_ok_and(|places| value.split_once('.').is_none_or(|(_, frac)| frac.len() <= places))
        }
        "ALPHANUMERIC" => match arg {
            "NUMERIC_ONLY" => value.chars().all(|c| c.is_ascii_digit()),
            "ALPHA_ONLY" => value.chars().all(char::is_alphabetic),
            _ => value.chars().all(char::is_alphanumeric),
        },
        "REGEX" => regex::Regex::new(&format!("^(?:{arg})$")).is_ok_and(|re| re.is_match(value)),
        "BEFORE_DATETIME" => parse_datetime_ms(value).zip(parse_datetime_ms(arg)).is_some_and(|(v, at)| v < at),
        "AFTER_DATETIME" => parse_datetime_ms(value).zip(parse_datetime_ms(arg)).is_some_and(|(v, at)| v > at),
        _ => true,
    }
}

fn violation(code: &'static str, property: &str, rule: &Rule, message: String) -> ApiError {
    let detail = json!({
        "code": code,
        "message": message,
        "context": {
            "propertyName": [property],
            "ruleType": [rule.rule_type],
            "ruleArguments": rule.rule_arguments,
        },
    });
    ApiError::validation(message)
        .with_sub_category(code)
        .with_context("propertyName", vec![property.to_owned()])
        .with_errors(vec![detail])
}

/// Checks a write against `rules`: `values` are the written `(name, value)` pairs (`None`
/// clears), `current` reads the record's value before the write (`None` for a new record).
pub(crate) fn check_write<'a>(
    rules: &Rules,
    values: &[(String, Option<String>)],
    current: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), ApiError> {
    let written = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_deref());
    let after = |name: &str| written(name).unwrap_or_else(|| current(name)).filter(|v| !v.is_empty());
    for (property, by_type) in rules {
        for rule in by_type.values() {
            if rule.rule_type == "CONDITIONALLY_REQUIRED" {
                let Some((controlling, trigger_values)) = rule.rule_arguments.split_first() else { continue };
                let touched = written(controlling).is_some() || written(property).is_some();
                let triggered = after(controlling).is_some_and(|v| trigger_values.iter().any(|t| t == v));
                if touched && triggered && after(property).is_none() {
                    let shown = after(controlling).unwrap_or_default();
                    return Err(violation(
                        MISSING_CONDITIONAL,
                        property,
                        rule,
                        format!(
                            "Property \"{property}\" is required when \"{controlling}\" is \"{shown}\" \
                             (portal validation rule CONDITIONALLY_REQUIRED on {property})"
                        ),
                    ));
                }
            } else if let Some(Some(value)) = written(property).filter(|v| v.is_some_and(|v| !v.is_empty())) {
                if !value_ok(rule, value) {
                    return Err(violation(
                        RULE_VIOLATION,
                        property,
                        rule,
                        format!(
                            "Property \"{property}\" value \"{value}\" violates the portal's validation rule {} {:?}",
                            rule.rule_type, rule.rule_arguments
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: &str, args: &[&str]) -> Rule {
        build_rule(
            kind,
            RuleInput { rule_arguments: Some(args.iter().map(|a| json!(a)).collect()), ..RuleInput::default() },
        )
        .expect("valid rule")
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (!v.is_empty()).then(|| (*v).to_owned()))).collect()
    }

    #[test]
    fn value_rules() {
        assert!(value_ok(&rule("MAX_LENGTH", &["3"]), "abc"));
        assert!(!value_ok(&rule("MAX_LENGTH", &["3"]), "abcd"));
        assert!(!value_ok(&rule("MIN_NUMBER", &["1"]), "0.5"));
        assert!(value_ok(&rule("ALPHANUMERIC", &["NUMERIC_ONLY"]), "0123"));
        assert!(!value_ok(&rule("ALPHANUMERIC", &["NUMERIC_ONLY"]), "12a"));
        assert!(!value_ok(&rule("REGEX", &["[A-Z]{2}-\\d+"]), "xx-1"));
        assert!(value_ok(&rule("DECIMAL", &["2"]), "1.25"));
        assert!(!value_ok(&rule("AFTER_DATETIME", &["2026-01-01T00:00:00Z"]), "2025-12-31"));
        assert!(build_rule("NOPE", RuleInput::default()).is_err());
        assert!(
            build_rule("MAX_LENGTH", RuleInput { rule_arguments: Some(vec![json!("x")]), ..RuleInput::default() })
                .is_err()
        );
    }

    #[test]
    fn conditional_required() {
        let mut rules = Rules::new();
        rules
            .entry("closedate".into())
            .or_default()
            .insert("CONDITIONALLY_REQUIRED".into(), rule("CONDITIONALLY_REQUIRED", &["dealstage", "closedwon"]));
        let none = |_: &str| None;
        let err = check_write(&rules, &set(&[("dealstage", "closedwon")]), none).expect_err("required");
        assert_eq!(err.sub_category, Some(MISSING_CONDITIONAL));
        assert!(err.message.contains("closedate") && err.message.contains("dealstage"), "{}", err.message);
        assert!(check_write(&rules, &set(&[("dealstage", "closedwon"), ("closedate", "2026-01-01")]), none).is_ok());
        assert!(check_write(&rules, &set(&[("dealstage", "qualifiedtobuy")]), none).is_ok());
        // An untouched record that already violates is not re-checked on unrelated writes.
        let current = |n: &str| (n == "dealstage").then_some("closedwon");
        assert!(check_write(&rules, &set(&[("amount", "5")]), current).is_ok());
        assert!(check_write(&rules, &set(&[("closedate", "")]), current).is_err());
    }
}
