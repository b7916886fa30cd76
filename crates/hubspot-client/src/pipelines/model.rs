//! Pipeline and stage schemas (CONTRACT.md §5). Response types tolerate missing, `null` and
//! unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::serde_util::{lenient_string_map, null_default};

/// Stage metadata key holding the win probability (`"0.0"`..`"1.0"`, required for deal stages).
pub const PROBABILITY_KEY: &str = "probability";
/// Stage metadata key HubSpot returns as `"true"`/`"false"` (closed-won = closed with 1.0,
/// closed-lost = closed with 0.0).
pub const IS_CLOSED_KEY: &str = "isClosed";

/// A deal pipeline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// HubSpot-generated id (`default` for the default pipeline, numeric strings otherwise).
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Label, unique per object type.
    #[serde(default, deserialize_with = "null_default")]
    pub label: String,
    /// Position; ties sort by label.
    #[serde(default, deserialize_with = "null_default")]
    pub display_order: i64,
    /// Stages.
    #[serde(default, deserialize_with = "null_default")]
    pub stages: Vec<PipelineStage>,
    /// Archived pipelines can only be restored (PATCH `archived: false`).
    #[serde(default, deserialize_with = "null_default")]
    pub archived: bool,
    /// ISO-8601 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// ISO-8601 last-update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A pipeline stage. Deals store its `id` in `dealstage`, never the label.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStage {
    /// HubSpot-generated id (e.g. `closedwon`, or a numeric string).
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Label, unique within its pipeline.
    #[serde(default, deserialize_with = "null_default")]
    pub label: String,
    /// Position.
    #[serde(default, deserialize_with = "null_default")]
    pub display_order: i64,
    /// All-string metadata: `probability` (`"0.1"`), `isClosed` (`"true"`/`"false"`).
    #[serde(default, deserialize_with = "lenient_string_map")]
    pub metadata: BTreeMap<String, String>,
    /// Archived.
    #[serde(default, deserialize_with = "null_default")]
    pub archived: bool,
    /// `CRM_PERMISSIONS_ENFORCEMENT`, `READ_ONLY` or `INTERNAL_ONLY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_permissions: Option<String>,
    /// ISO-8601 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// ISO-8601 last-update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl PipelineStage {
    /// See [`probability`].
    pub fn probability(&self) -> Option<f64> {
        probability(self)
    }

    /// `metadata.isClosed` as a bool; `None` when absent or not `"true"`/`"false"`.
    pub fn is_closed(&self) -> Option<bool> {
        match self.metadata.get(IS_CLOSED_KEY).map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        }
    }
}

/// The stage's `metadata.probability` as a number; `None` when absent or not a finite number.
pub fn probability(stage: &PipelineStage) -> Option<f64> {
    stage.metadata.get(PROBABILITY_KEY)?.trim().parse::<f64>().ok().filter(|p| p.is_finite())
}

/// HubSpot's canonical probability string: clamped to `0.0..=1.0`, rounded to the nearest
/// tenth and written with one decimal (`"0.0"`, `"0.1"`, …, `"1.0"`), as HubSpot stores and
/// returns it, so a desired value compares equal to what a read gives back. NaN becomes `"0.0"`.
pub fn normalize_probability(p: f64) -> String {
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    format!("{:.1}", (p * 10.0).round() / 10.0)
}

/// Deal-stage metadata: `{probability: normalize_probability(p), isClosed: "true"|"false"}`.
pub fn stage_metadata(probability: f64, is_closed: bool) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PROBABILITY_KEY.to_owned(), normalize_probability(probability)),
        (IS_CLOSED_KEY.to_owned(), is_closed.to_string()),
    ])
}

/// A stage in a pipeline create/replace, or the body of a stage create/replace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStageInput {
    /// Label.
    pub label: String,
    /// Position.
    pub display_order: i64,
    /// Metadata; deal stages require `probability` (see [`stage_metadata`]).
    pub metadata: BTreeMap<String, String>,
    /// Keep an existing stage (replace) or choose the id (create); HubSpot generates one if
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_id: Option<String>,
}

impl PipelineStageInput {
    /// A stage with the given probability and closed flag.
    pub fn new(label: impl Into<String>, display_order: i64, probability: f64, is_closed: bool) -> Self {
        Self { label: label.into(), display_order, metadata: stage_metadata(probability, is_closed), stage_id: None }
    }
}

/// Body of a pipeline create.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineCreate {
    /// Label (unique).
    pub label: String,
    /// Position.
    pub display_order: i64,
    /// Stages.
    pub stages: Vec<PipelineStageInput>,
    /// Requested id; HubSpot generates one if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
}

/// Body of a pipeline PATCH: only `Some` fields are sent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineUpdate {
    /// New label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// New position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
    /// Only `Some(false)` is accepted, to restore an archived pipeline (otherwise 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

/// Body of a pipeline PUT: the full definition, stages included (stages not listed are
/// deleted, which is why the client always sends the validate-before-delete flags).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineReplace {
    /// Label.
    pub label: String,
    /// Position.
    pub display_order: i64,
    /// The complete stage list; pass `stage_id` to keep existing stages.
    pub stages: Vec<PipelineStageInput>,
}

/// Body of a stage PATCH. `metadata` is required by HubSpot, so it is always sent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStageUpdate {
    /// Metadata (required; deal stages need `probability`).
    pub metadata: BTreeMap<String, String>,
    /// New label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// New position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
    /// Restore (`Some(false)`) an archived stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_pipeline_payload() -> Result<(), serde_json::Error> {
        let p: Pipeline = serde_json::from_value(json!({
            "id": "default", "label": "Sales Pipeline", "displayOrder": 0, "archived": false,
            "createdAt": "2020-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
            "stages": [
                {"id": "closedwon", "label": "Closed won", "displayOrder": 5, "archived": false,
                 "metadata": {"isClosed": "true", "probability": "1.0"}, "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
                 "createdAt": "2020-01-01T00:00:00Z"},
                {"id": "1", "label": "Odd", "metadata": {"probability": 0.2, "isClosed": false, "x": null}}
            ]
        }))?;
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[0].probability(), Some(1.0));
        assert_eq!(p.stages[0].is_closed(), Some(true));
        assert_eq!(p.stages[0].write_permissions.as_deref(), Some("CRM_PERMISSIONS_ENFORCEMENT"));
        assert_eq!(p.stages[1].metadata.get("probability").map(String::as_str), Some("0.2"));
        assert_eq!(p.stages[1].is_closed(), Some(false));
        assert!(!p.stages[1].metadata.contains_key("x"));
        let bare: PipelineStage = serde_json::from_value(json!({"id": "x", "metadata": null}))?;
        assert_eq!(probability(&bare), None);
        assert_eq!(bare.is_closed(), None);
        Ok(())
    }

    #[test]
    fn probability_normalisation() {
        assert_eq!(normalize_probability(0.1), "0.1");
        assert_eq!(normalize_probability(1.0), "1.0");
        assert_eq!(normalize_probability(0.0), "0.0");
        assert_eq!(normalize_probability(0.3), "0.3");
        assert_eq!(normalize_probability(0.26), "0.3");
        assert_eq!(normalize_probability(0.7000000001), "0.7");
        assert_eq!(normalize_probability(1.7), "1.0");
        assert_eq!(normalize_probability(-0.2), "0.0");
        assert_eq!(normalize_probability(f64::NAN), "0.0");
        assert_eq!(normalize_probability(-0.01), "0.0");
        for tenths in 0..=10u8 {
            let s = normalize_probability(f64::from(tenths) / 10.0);
            assert_eq!(s.len(), 3, "{s}");
            assert_eq!(normalize_probability(s.parse().unwrap_or(f64::NAN)), s);
        }
    }

    #[test]
    fn request_bodies() -> Result<(), serde_json::Error> {
        let create = PipelineCreate {
            label: "GoMark".into(),
            display_order: 1,
            stages: vec![PipelineStageInput::new("Won", 0, 1.0, true)],
            pipeline_id: None,
        };
        assert_eq!(
            serde_json::to_value(&create)?,
            json!({"label":"GoMark","displayOrder":1,"stages":[{"label":"Won","displayOrder":0,"metadata":{"probability":"1.0","isClosed":"true"}}]})
        );
        assert_eq!(serde_json::to_value(PipelineUpdate::default())?, json!({}));
        let update = PipelineStageUpdate { metadata: stage_metadata(0.25, false), ..PipelineStageUpdate::default() };
        assert_eq!(serde_json::to_value(&update)?, json!({"metadata":{"probability":"0.3","isClosed":"false"}}));
        Ok(())
    }
}
