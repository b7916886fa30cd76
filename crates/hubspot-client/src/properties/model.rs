//! Property schemas (CONTRACT.md §4). Response types tolerate missing, `null` and unknown fields.

use serde::{Deserialize, Serialize};

use crate::serde_util::null_default;

/// A property definition as HubSpot returns it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    /// Internal name (immutable).
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Display label (the only "renameable" part).
    #[serde(default, deserialize_with = "null_default")]
    pub label: String,
    /// Data type: `bool, date, datetime, enumeration, number, phone_number, string` (also
    /// read-only `object_coordinates`, `json`).
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub r#type: String,
    /// UI control, e.g. `text`, `select`, `booleancheckbox`.
    #[serde(default, deserialize_with = "null_default")]
    pub field_type: String,
    /// Property group.
    #[serde(default, deserialize_with = "null_default")]
    pub group_name: String,
    /// Description (may be empty).
    #[serde(default, deserialize_with = "null_default")]
    pub description: String,
    /// Options of enumeration properties.
    #[serde(default, deserialize_with = "null_default")]
    pub options: Vec<PropertyOption>,
    /// Position in its group; `-1` places it after the positive ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
    /// Whether values must be unique (set once at creation).
    #[serde(default, deserialize_with = "null_default")]
    pub has_unique_value: bool,
    /// Hidden from the HubSpot UI.
    #[serde(default, deserialize_with = "null_default")]
    pub hidden: bool,
    /// Usable in forms.
    #[serde(default, deserialize_with = "null_default")]
    pub form_field: bool,
    /// Calculated property.
    #[serde(default, deserialize_with = "null_default")]
    pub calculated: bool,
    /// `true` for HubSpot's built-in properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hubspot_defined: Option<bool>,
    /// What may be changed about this property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modification_metadata: Option<ModificationMetadata>,
    /// ISO-8601 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// ISO-8601 last-update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// In the recycle bin.
    #[serde(default, deserialize_with = "null_default")]
    pub archived: bool,
    /// ISO-8601 archive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
}

/// One option of an enumeration property (request and response).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    /// Display label.
    #[serde(default, deserialize_with = "null_default")]
    pub label: String,
    /// Stored value.
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Position (required by the 2026-03 `OptionInput` schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
    /// Hidden in forms.
    #[serde(default, deserialize_with = "null_default")]
    pub hidden: bool,
}

impl PropertyOption {
    /// A visible option without description or order.
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Self {
        Self { label: label.into(), value: value.into(), ..Self::default() }
    }
}

/// `modificationMetadata` of a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModificationMetadata {
    /// Can be archived.
    #[serde(default, deserialize_with = "null_default")]
    pub archivable: bool,
    /// Definition is read-only.
    #[serde(default, deserialize_with = "null_default")]
    pub read_only_definition: bool,
    /// Values are read-only.
    #[serde(default, deserialize_with = "null_default")]
    pub read_only_value: bool,
    /// Options are read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_options: Option<bool>,
}

/// Body of a property create. `None` fields and empty `options` are not sent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyCreate {
    /// Internal name, e.g. `gomark_score` (≤ 100 chars, immutable afterwards).
    pub name: String,
    /// Display label.
    pub label: String,
    /// Data type (see `Property::type`).
    #[serde(rename = "type")]
    pub r#type: String,
    /// UI control (see [`Property::field_type`]).
    pub field_type: String,
    /// Property group, e.g. `dealinformation`.
    pub group_name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Options; required for enumerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PropertyOption>,
    /// Position in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
    /// Unique values (cannot be changed later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_unique_value: Option<bool>,
    /// Hidden from the UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// Usable in forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_field: Option<bool>,
}

impl PropertyCreate {
    /// A create with the five required fields and nothing else.
    pub fn new(
        name: impl Into<String>,
        label: impl Into<String>,
        r#type: impl Into<String>,
        field_type: impl Into<String>,
        group_name: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            label: label.into(),
            r#type: r#type.into(),
            field_type: field_type.into(),
            group_name: group_name.into(),
            ..Self::default()
        }
    }
}

/// Body of a property PATCH: only `Some` fields are sent and overwrite. There is deliberately
/// no `name` (internal names are immutable). `options: Some(..)` replaces the whole list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyUpdate {
    /// New label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// Full replacement option list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<PropertyOption>>,
    /// New data type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// New UI control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_type: Option<String>,
    /// New position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
    /// Hide/show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// Form usability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_field: Option<bool>,
}

/// A property group (the sections of the HubSpot record sidebar).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyGroup {
    /// Internal name (immutable).
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Display label.
    #[serde(default, deserialize_with = "null_default")]
    pub label: String,
    /// Position; `-1` places it after the positive ones.
    #[serde(default, deserialize_with = "null_default")]
    pub display_order: i64,
    /// In the recycle bin.
    #[serde(default, deserialize_with = "null_default")]
    pub archived: bool,
}

/// Body of a property-group create.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyGroupCreate {
    /// Internal name (cannot be changed later).
    pub name: String,
    /// Display label.
    pub label: String,
    /// Position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
}

impl PropertyGroupCreate {
    /// A create without a display order.
    pub fn new(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self { name: name.into(), label: label.into(), display_order: None }
    }
}

/// Body of a property-group PATCH: only `Some` fields are sent. The name cannot change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyGroupUpdate {
    /// New label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// New position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_real_payload_with_extras_and_nulls() -> Result<(), serde_json::Error> {
        let p: Property = serde_json::from_value(json!({
            "updatedAt": "2024-01-01T00:00:00Z",
            "createdAt": "2020-01-01T00:00:00Z",
            "name": "dealstage",
            "label": "Deal Stage",
            "type": "enumeration",
            "fieldType": "radio",
            "description": null,
            "groupName": "dealinformation",
            "options": [{"label":"Won","value":"closedwon","displayOrder":0,"hidden":false,"description":null}],
            "displayOrder": -1,
            "calculated": false,
            "externalOptions": false,
            "hasUniqueValue": false,
            "hidden": false,
            "hubspotDefined": true,
            "modificationMetadata": {"archivable": false, "readOnlyDefinition": true, "readOnlyValue": false},
            "formField": true,
            "dataSensitivity": "non_sensitive"
        }))?;
        assert_eq!(p.r#type, "enumeration");
        assert_eq!(p.field_type, "radio");
        assert_eq!(p.description, "");
        assert_eq!(p.options[0].value, "closedwon");
        assert_eq!(p.display_order, Some(-1));
        assert_eq!(p.hubspot_defined, Some(true));
        assert!(p.form_field);
        assert_eq!(
            p.modification_metadata,
            Some(ModificationMetadata {
                archivable: false,
                read_only_definition: true,
                read_only_value: false,
                read_only_options: None
            })
        );
        let minimal: Property = serde_json::from_value(json!({"name": "x"}))?;
        assert_eq!(minimal.name, "x");
        assert!(!minimal.archived);
        Ok(())
    }

    #[test]
    fn create_skips_empty_fields() -> Result<(), serde_json::Error> {
        let c = PropertyCreate::new("gomark_a", "A", "string", "text", "dealinformation");
        assert_eq!(
            serde_json::to_value(&c)?,
            json!({"name":"gomark_a","label":"A","type":"string","fieldType":"text","groupName":"dealinformation"})
        );
        Ok(())
    }

    #[test]
    fn groups() -> Result<(), serde_json::Error> {
        let g: PropertyGroup = serde_json::from_value(
            json!({"name":"dealinformation","label":"Deal information","displayOrder":-1,"archived":false}),
        )?;
        assert_eq!(g.display_order, -1);
        assert_eq!(
            serde_json::to_value(PropertyGroupCreate::new("gomark", "GoMark"))?,
            json!({"name":"gomark","label":"GoMark"})
        );
        let u = PropertyGroupUpdate { display_order: Some(3), ..PropertyGroupUpdate::default() };
        assert_eq!(serde_json::to_value(&u)?, json!({"displayOrder":3}));
        Ok(())
    }

    #[test]
    fn update_has_no_name_and_skips_none() -> Result<(), serde_json::Error> {
        let u = PropertyUpdate { label: Some("B".into()), hidden: Some(false), ..PropertyUpdate::default() };
        assert_eq!(serde_json::to_value(&u)?, json!({"label":"B","hidden":false}));
        assert_eq!(serde_json::to_value(PropertyUpdate::default())?, json!({}));
        Ok(())
    }
}
