//! Wire types (camelCase JSON) and HubSpot's validation rules for property definitions.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Property `type` values HubSpot accepts on create.
pub const PROPERTY_TYPES: &[&str] = &["bool", "date", "datetime", "enumeration", "number", "phone_number", "string"];

/// Property `fieldType` values HubSpot accepts on create.
pub const FIELD_TYPES: &[&str] = &[
    "booleancheckbox",
    "calculation_equation",
    "checkbox",
    "date",
    "file",
    "html",
    "number",
    "phonenumber",
    "radio",
    "select",
    "text",
    "textarea",
];

const DATA_SENSITIVITIES: &[&str] = &["non_sensitive", "sensitive", "highly_sensitive"];
const NUMBER_DISPLAY_HINTS: &[&str] =
    &["currency", "duration", "formatted", "percentage", "probability", "unformatted"];

/// Maximum number of unique-value properties per object type.
pub const MAX_UNIQUE_PROPERTIES: usize = 10;

/// The fieldTypes allowed for a given type.
pub fn allowed_field_types(property_type: &str) -> &'static [&'static str] {
    match property_type {
        "enumeration" => &["select", "radio", "checkbox", "booleancheckbox", "calculation_equation"],
        "bool" => &["booleancheckbox", "calculation_equation"],
        "string" => &["text", "textarea", "html", "phonenumber", "file", "calculation_equation"],
        "number" => &["number", "calculation_equation"],
        "date" | "datetime" => &["date"],
        "phone_number" => &["phonenumber"],
        _ => &[],
    }
}

/// `^[a-z][a-z0-9_]{0,99}$`, used for property and group internal names.
pub fn is_valid_internal_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_lowercase() => {}
        _ => return false,
    }
    bytes.len() <= 100 && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Current time as HubSpot formats it: `2026-11-21T10:00:00.000Z`.
pub fn now_timestamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Current time in epoch milliseconds (the unit of record timestamps and webhook `occurredAt`).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Epoch milliseconds rendered like [`now_timestamp`].
pub fn iso_from_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Epoch milliseconds of a date/datetime value: an integer (already epoch ms), an RFC 3339
/// datetime or a `YYYY-MM-DD` date (midnight UTC), which are the forms HubSpot accepts.
pub fn parse_datetime_ms(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(value) {
        return Some(dt.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_millis())
}

/// One option of an enumeration property (response shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    pub label: String,
    pub value: String,
    pub hidden: bool,
    pub display_order: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `modificationMetadata` of a property.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModificationMetadata {
    pub archivable: bool,
    pub read_only_definition: bool,
    pub read_only_value: bool,
}

/// A property definition as returned by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub property_type: String,
    pub field_type: String,
    pub group_name: String,
    pub description: String,
    pub options: Vec<PropertyOption>,
    pub display_order: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calculation_formula: Option<String>,
    pub has_unique_value: bool,
    pub hidden: bool,
    pub form_field: bool,
    pub calculated: bool,
    pub external_options: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referenced_object_type: Option<String>,
    pub hubspot_defined: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_currency_symbol: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency_property_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_display_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_display_hint: Option<String>,
    pub data_sensitivity: String,
    pub modification_metadata: ModificationMetadata,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
}

/// A property group as returned by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub name: String,
    pub label: String,
    pub display_order: i64,
    pub archived: bool,
}

/// An option in a create/update request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionInput {
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub hidden: Option<bool>,
    #[serde(default)]
    pub display_order: Option<i64>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `PropertyCreate` request body. Every field is optional at the serde level so
/// that missing required fields produce a HubSpot-style validation message.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PropertyCreate {
    pub name: Option<String>,
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub property_type: Option<String>,
    pub field_type: Option<String>,
    pub group_name: Option<String>,
    pub description: Option<String>,
    pub options: Option<Vec<OptionInput>>,
    pub display_order: Option<i64>,
    pub has_unique_value: Option<bool>,
    pub hidden: Option<bool>,
    pub form_field: Option<bool>,
    pub calculation_formula: Option<String>,
    pub data_sensitivity: Option<String>,
    pub external_options: Option<bool>,
    pub referenced_object_type: Option<String>,
    pub currency_property_name: Option<String>,
    pub number_display_hint: Option<String>,
    pub text_display_hint: Option<String>,
    pub show_currency_symbol: Option<bool>,
}

/// `PropertyUpdate` request body (partial).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PropertyUpdate {
    pub label: Option<String>,
    pub description: Option<String>,
    pub group_name: Option<String>,
    pub display_order: Option<i64>,
    pub hidden: Option<bool>,
    pub form_field: Option<bool>,
    pub options: Option<Vec<OptionInput>>,
    #[serde(rename = "type")]
    pub property_type: Option<String>,
    pub field_type: Option<String>,
    pub calculation_formula: Option<String>,
    pub currency_property_name: Option<String>,
    pub number_display_hint: Option<String>,
    pub text_display_hint: Option<String>,
    pub show_currency_symbol: Option<bool>,
}

/// Group create body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupCreate {
    pub name: Option<String>,
    pub label: Option<String>,
    pub display_order: Option<i64>,
}

/// Group update body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupUpdate {
    pub label: Option<String>,
    pub display_order: Option<i64>,
}

/// `{name}` entry of batch read / archive inputs.
#[derive(Debug, Clone, Deserialize)]
pub struct NameInput {
    pub name: String,
}

/// Batch read body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRead {
    #[serde(default)]
    pub archived: bool,
    pub inputs: Vec<NameInput>,
}

/// Batch archive body.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchNames {
    pub inputs: Vec<NameInput>,
}

/// Batch create body.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchCreate {
    pub inputs: Vec<serde_json::Value>,
}

/// Checks `type`/`fieldType` against the enums and the allowed pairs.
pub fn validate_type_pair(property_type: &str, field_type: &str) -> Result<(), ApiError> {
    if !PROPERTY_TYPES.contains(&property_type) {
        return Err(ApiError::validation(format!(
            "Invalid property type '{property_type}'. Allowed values: {}",
            PROPERTY_TYPES.join(", ")
        )));
    }
    if !FIELD_TYPES.contains(&field_type) {
        return Err(ApiError::validation(format!(
            "Invalid fieldType '{field_type}'. Allowed values: {}",
            FIELD_TYPES.join(", ")
        )));
    }
    let allowed = allowed_field_types(property_type);
    if !allowed.contains(&field_type) {
        return Err(ApiError::validation(format!(
            "fieldType '{field_type}' is not valid for property type '{property_type}'. \
             Allowed fieldTypes for '{property_type}': {}",
            allowed.join(", ")
        )));
    }
    Ok(())
}

/// Validates option inputs and converts them to the response shape.
pub fn build_options(inputs: &[OptionInput]) -> Result<Vec<PropertyOption>, ApiError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        if input.label.trim().is_empty() {
            return Err(ApiError::validation(format!("options[{index}].label must not be empty")));
        }
        if input.value.is_empty() {
            return Err(ApiError::validation(format!("options[{index}].value must not be empty")));
        }
        if !seen.insert(input.value.as_str()) {
            return Err(ApiError::validation(format!("Duplicate option value '{}' (options[{index}])", input.value)));
        }
        out.push(PropertyOption {
            label: input.label.clone(),
            value: input.value.clone(),
            hidden: input.hidden.unwrap_or(false),
            display_order: input.display_order.unwrap_or_else(|| i64::try_from(index).unwrap_or(i64::MAX)),
            description: input.description.clone(),
        });
    }
    Ok(out)
}

/// Checks rules that depend on the final (type, fieldType, options, formula) combination.
pub fn validate_shape(
    name: &str,
    property_type: &str,
    field_type: &str,
    options: &[PropertyOption],
    external_options: bool,
    calculation_formula: Option<&str>,
) -> Result<(), ApiError> {
    validate_type_pair(property_type, field_type)?;
    if property_type == "enumeration" && options.is_empty() && !external_options {
        return Err(ApiError::validation(format!(
            "Property '{name}' of type enumeration requires a non-empty 'options' list"
        )));
    }
    if field_type == "calculation_equation" && calculation_formula.is_none_or(|f| f.trim().is_empty()) {
        return Err(ApiError::validation(format!(
            "Property '{name}' with fieldType calculation_equation requires a 'calculationFormula'"
        )));
    }
    Ok(())
}

/// Validates optional enum-ish fields shared by create and update.
pub fn validate_hints(data_sensitivity: Option<&str>, number_display_hint: Option<&str>) -> Result<(), ApiError> {
    if let Some(value) = data_sensitivity.filter(|v| !DATA_SENSITIVITIES.contains(v)) {
        return Err(ApiError::validation(format!(
            "Invalid dataSensitivity '{value}'. Allowed values: {}",
            DATA_SENSITIVITIES.join(", ")
        )));
    }
    if let Some(value) = number_display_hint.filter(|v| !NUMBER_DISPLAY_HINTS.contains(v)) {
        return Err(ApiError::validation(format!(
            "Invalid numberDisplayHint '{value}'. Allowed values: {}",
            NUMBER_DISPLAY_HINTS.join(", ")
        )));
    }
    Ok(())
}

/// Identifiers referenced by a calculation formula (rough tokenisation).
pub fn formula_references(formula: &str, name: &str) -> bool {
    formula.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|token| token == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_name_rules() {
        assert!(is_valid_internal_name("gomark_score_2"));
        assert!(is_valid_internal_name("a"));
        assert!(is_valid_internal_name(&format!("a{}", "b".repeat(99))));
        assert!(!is_valid_internal_name(&format!("a{}", "b".repeat(100))));
        assert!(!is_valid_internal_name(""));
        assert!(!is_valid_internal_name("1abc"));
        assert!(!is_valid_internal_name("_abc"));
        assert!(!is_valid_internal_name("Abc"));
        assert!(!is_valid_internal_name("a-b"));
        assert!(!is_valid_internal_name("a b"));
    }

    #[test]
    fn type_pairs() {
        assert!(validate_type_pair("enumeration", "radio").is_ok());
        assert!(validate_type_pair("string", "file").is_ok());
        assert!(validate_type_pair("datetime", "date").is_ok());
        assert!(validate_type_pair("phone_number", "phonenumber").is_ok());
        assert!(validate_type_pair("number", "text").is_err());
        assert!(validate_type_pair("bool", "checkbox").is_err());
        assert!(validate_type_pair("json", "text").is_err());
        assert!(validate_type_pair("string", "dropdown").is_err());
    }

    #[test]
    fn options_are_checked() {
        let opt = |v: &str| OptionInput {
            label: v.to_uppercase(),
            value: v.into(),
            hidden: None,
            display_order: None,
            description: None,
        };
        let built = build_options(&[opt("a"), opt("b")]).expect("valid");
        assert_eq!(built[1].display_order, 1);
        assert!(!built[0].hidden);
        assert!(build_options(&[opt("a"), opt("a")]).is_err());
        assert!(validate_shape("x", "enumeration", "select", &[], false, None).is_err());
        assert!(validate_shape("x", "enumeration", "select", &[], true, None).is_ok());
        assert!(validate_shape("x", "number", "calculation_equation", &[], false, None).is_err());
    }

    #[test]
    fn timestamps_have_millis() {
        let ts = now_timestamp();
        assert_eq!(ts.len(), "2026-11-21T10:00:00.000Z".len());
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn formula_tokens() {
        assert!(formula_references("amount * 2 + other_x", "amount"));
        assert!(!formula_references("amount_total * 2", "amount"));
    }
}
