//! A deal property definition as GoMark declares it, and the rules HubSpot will hold it to,
//! checked before anything is sent (CONTRACT.md §4).

use crate::{Error, Result};
use gomark_proto::common::v1::{DealPropertySpec, PropertyOption};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::LazyLock;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertySpec {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub field_type: String,
    pub group_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub options: Vec<PropertyOptionSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOptionSpec {
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub display_order: i32,
    #[serde(default)]
    pub hidden: bool,
}

/// HubSpot's internal-name rule (GoMark's stricter reading of it).
static NAME_RULE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^[a-z][a-z0-9_]{0,99}$").unwrap_or_else(|_| unreachable!("constant regex")));

pub const NAME_PATTERN: &str = "^[a-z][a-z0-9_]{0,99}$";

/// Deal properties every portal already has; declaring one would fight HubSpot.
const HUBSPOT_DEFINED: &[&str] =
    &["dealname", "amount", "dealstage", "pipeline", "closedate", "createdate", "hubspot_owner_id", "dealtype"];

/// The `type` → allowed `fieldType`s table.
pub fn field_types_for(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "enumeration" => &["select", "radio", "checkbox", "booleancheckbox", "calculation_equation"],
        "bool" => &["booleancheckbox", "calculation_equation"],
        "string" => &["text", "textarea", "html", "phonenumber", "file", "calculation_equation"],
        "number" => &["number", "calculation_equation"],
        "date" | "datetime" => &["date"],
        "phone_number" => &["phonenumber"],
        _ => return None,
    })
}

pub const TYPES: &[&str] = &["bool", "date", "datetime", "enumeration", "number", "phone_number", "string"];

/// Refuses control characters in `value` (NUL included); `multiline` text may hold line
/// breaks and tabs.
fn refuse_control(field: &str, value: &str, multiline: bool) -> Result<()> {
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

impl PropertySpec {
    /// Checks every rule; the error names the first field at fault.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.label.trim().is_empty() {
            return Err(Error::invalid("label", "must not be empty"));
        }
        if self.label.chars().count() > 400 {
            return Err(Error::invalid("label", "must be at most 400 characters"));
        }
        // NUL and other control characters break HubSpot, logs and terminals alike.
        refuse_control("label", &self.label, false)?;
        refuse_control("groupName", &self.group_name, false)?;
        refuse_control("description", &self.description, true)?;
        let Some(field_types) = field_types_for(&self.kind) else {
            return Err(Error::invalid("type", format!("must be one of {}", TYPES.join(", "))));
        };
        if !field_types.contains(&self.field_type.as_str()) {
            return Err(Error::invalid(
                "fieldType",
                format!(
                    "{:?} is not valid for type {:?}; use one of {}",
                    self.field_type,
                    self.kind,
                    field_types.join(", ")
                ),
            ));
        }
        if self.field_type == "calculation_equation" {
            return Err(Error::invalid("fieldType", "calculated properties are not managed by GoMark yet"));
        }
        if self.group_name.trim().is_empty() {
            return Err(Error::invalid("groupName", "must not be empty"));
        }
        if self.description.chars().count() > 1000 {
            return Err(Error::invalid("description", "must be at most 1000 characters"));
        }
        match (self.kind == "enumeration", self.options.is_empty()) {
            (true, true) => return Err(Error::invalid("options", "are required for an enumeration")),
            (false, false) if self.kind != "bool" => {
                return Err(Error::invalid(
                    "options",
                    format!("are only allowed for enumeration or bool, not {}", self.kind),
                ));
            }
            _ => {}
        }
        let mut seen = HashSet::new();
        for (i, option) in self.options.iter().enumerate() {
            if option.label.trim().is_empty() {
                return Err(Error::invalid(&format!("options[{i}].label"), "must not be empty"));
            }
            if option.value.is_empty() {
                return Err(Error::invalid(&format!("options[{i}].value"), "must not be empty"));
            }
            refuse_control(&format!("options[{i}].label"), &option.label, false)?;
            refuse_control(&format!("options[{i}].value"), &option.value, false)?;
            if !seen.insert(option.value.as_str()) {
                return Err(Error::invalid(
                    &format!("options[{i}].value"),
                    format!("{:?} appears twice", option.value),
                ));
            }
        }
        Ok(())
    }

    pub fn from_proto(p: DealPropertySpec) -> Self {
        Self {
            name: p.name,
            label: p.label,
            kind: p.r#type,
            field_type: p.field_type,
            group_name: p.group_name,
            description: p.description,
            options: p.options.into_iter().map(PropertyOptionSpec::from_proto).collect(),
        }
    }

    pub fn to_proto(&self) -> DealPropertySpec {
        DealPropertySpec {
            name: self.name.clone(),
            label: self.label.clone(),
            r#type: self.kind.clone(),
            field_type: self.field_type.clone(),
            group_name: self.group_name.clone(),
            description: self.description.clone(),
            options: self.options.iter().map(PropertyOptionSpec::to_proto).collect(),
        }
    }
}

impl PropertyOptionSpec {
    pub fn from_proto(o: PropertyOption) -> Self {
        Self {
            label: o.label,
            value: o.value,
            description: o.description,
            display_order: o.display_order,
            hidden: o.hidden,
        }
    }

    pub fn to_proto(&self) -> PropertyOption {
        PropertyOption {
            label: self.label.clone(),
            value: self.value.clone(),
            description: self.description.clone(),
            display_order: self.display_order,
            hidden: self.hidden,
        }
    }
}

pub fn validate_name(name: &str) -> Result<()> {
    if !NAME_RULE.is_match(name) {
        return Err(Error::invalid(
            "name",
            format!("{name:?} must match {NAME_PATTERN} (lower-case letters, digits, underscores; a letter first)"),
        ));
    }
    if name.starts_with("hs_") || HUBSPOT_DEFINED.contains(&name) {
        return Err(Error::invalid("name", format!("{name:?} is reserved by HubSpot")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PropertySpec {
        PropertySpec {
            name: "gomark_tier".into(),
            label: "Tier".into(),
            kind: "enumeration".into(),
            field_type: "select".into(),
            group_name: "dealinformation".into(),
            description: String::new(),
            options: vec![PropertyOptionSpec {
                label: "Gold".into(),
                value: "gold".into(),
                description: String::new(),
                display_order: 0,
                hidden: false,
            }],
        }
    }

    fn field_of(err: Error) -> String {
        err.to_public().field.unwrap_or_default()
    }

    #[test]
    fn a_valid_spec_passes() {
        spec().validate().expect("valid");
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutation = Box<dyn Fn(&mut PropertySpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.name = "Deal Stage".into()), "name"),
            (Box::new(|s| s.name = "9lives".into()), "name"),
            (Box::new(|s| s.name = "a".repeat(101)), "name"),
            (Box::new(|s| s.name = "hs_custom".into()), "name"),
            (Box::new(|s| s.name = "amount".into()), "name"),
            (Box::new(|s| s.label = " ".into()), "label"),
            (Box::new(|s| s.label = "Ti\0er".into()), "label"),
            (Box::new(|s| s.description = "a\0b".into()), "description"),
            (Box::new(|s| s.group_name = "deal\u{1b}info".into()), "groupName"),
            (Box::new(|s| s.options[0].label = "Go\0ld".into()), "options[0].label"),
            (Box::new(|s| s.kind = "text".into()), "type"),
            (Box::new(|s| s.field_type = "text".into()), "fieldType"),
            (Box::new(|s| s.group_name.clear()), "groupName"),
            (Box::new(|s| s.options.clear()), "options"),
            (Box::new(|s| s.options[0].value.clear()), "options[0].value"),
            (
                Box::new(|s| {
                    let dup = s.options[0].clone();
                    s.options.push(dup)
                }),
                "options[1].value",
            ),
        ];
        for (mutate, field) in cases {
            let mut s = spec();
            mutate(&mut s);
            assert_eq!(field_of(s.validate().expect_err(field)), field);
        }
    }

    #[test]
    fn type_pairs_follow_the_table() {
        let mut s = spec();
        s.options.clear();
        for (kind, field_type, ok) in [
            ("string", "text", true),
            ("string", "textarea", true),
            ("number", "number", true),
            ("number", "text", false),
            ("date", "date", true),
            ("datetime", "date", true),
            ("bool", "booleancheckbox", true),
            ("bool", "select", false),
            ("phone_number", "phonenumber", true),
            ("string", "select", false),
        ] {
            s.kind = kind.into();
            s.field_type = field_type.into();
            assert_eq!(s.validate().is_ok(), ok, "{kind}/{field_type}");
        }
    }

    #[test]
    fn proto_round_trip() {
        assert_eq!(PropertySpec::from_proto(spec().to_proto()), spec());
    }
}
