//! Deal pipelines and their stages (CONTRACT.md §5).
//!
//! Every portal starts with HubSpot's `default` "Sales Pipeline". Pipelines created through the
//! API get HubSpot-style numeric-string ids; DELETE archives a pipeline (PATCH
//! `{"archived": false}` restores it) while stages are removed outright. Deal-stage
//! `metadata.probability` is stored normalised to one decimal (`"0.2"`, `"1.0"`), the form
//! HubSpot returns, and `isClosed` as `"true"`/`"false"`.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::now_timestamp;
use crate::portal::Portal;

/// Id of the pipeline every portal starts with (and that deals default to).
pub(crate) const DEFAULT_PIPELINE_ID: &str = "default";

/// HubSpot's default deal stages: (id, label, probability, isClosed).
const DEFAULT_STAGES: &[(&str, &str, &str, bool)] = &[
    ("appointmentscheduled", "Appointment Scheduled", "0.2", false),
    ("qualifiedtobuy", "Qualified To Buy", "0.4", false),
    ("presentationscheduled", "Presentation Scheduled", "0.6", false),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", false),
    ("contractsent", "Contract Sent", "0.9", false),
    ("closedwon", "Closed Won", "1.0", true),
    ("closedlost", "Closed Lost", "0.0", true),
];

/// Pipeline and stage ids are global in HubSpot, so one process-wide counter keeps generated
/// ids unique across portals (and across simulators in one test binary).
static NEXT_PIPELINE_OBJECT_ID: AtomicU64 = AtomicU64::new(75_000_001);

fn generate_id() -> String {
    NEXT_PIPELINE_OBJECT_ID.fetch_add(1, Ordering::Relaxed).to_string()
}

/// One stage of a pipeline (response shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stage {
    pub id: String,
    pub label: String,
    pub display_order: i64,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
    #[serde(skip_deserializing, default = "write_permissions")]
    pub write_permissions: &'static str,
}

fn write_permissions() -> &'static str {
    "CRM_PERMISSIONS_ENFORCEMENT"
}

/// After a restore: ids handed out from now on are above every restored one.
pub(crate) fn reserve_ids_through(pipelines: &[Pipeline]) {
    let highest = pipelines
        .iter()
        .flat_map(|p| std::iter::once(&p.id).chain(p.stages.iter().map(|s| &s.id)))
        .filter_map(|id| id.parse::<u64>().ok())
        .max();
    if let Some(highest) = highest {
        NEXT_PIPELINE_OBJECT_ID.fetch_max(highest + 1, Ordering::Relaxed);
    }
}

/// A deal pipeline (response shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Pipeline {
    pub id: String,
    pub label: String,
    pub display_order: i64,
    pub stages: Vec<Stage>,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
}

impl Pipeline {
    /// The non-archived stage `id`, if this pipeline has it.
    pub fn stage(&self, id: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// HubSpot orders by `displayOrder`, ties broken alphabetically by label.
    fn sort_stages(&mut self) {
        self.stages.sort_by(|a, b| a.display_order.cmp(&b.display_order).then_with(|| a.label.cmp(&b.label)));
    }
}

/// The `default` "Sales Pipeline" every new portal starts with.
pub(crate) fn default_pipeline() -> Pipeline {
    let now = now_timestamp();
    let stages = DEFAULT_STAGES
        .iter()
        .zip(0_i64..)
        .map(|((id, label, probability, closed), order)| Stage {
            id: (*id).to_owned(),
            label: (*label).to_owned(),
            display_order: order,
            metadata: BTreeMap::from([
                ("isClosed".to_owned(), closed.to_string()),
                ("probability".to_owned(), (*probability).to_owned()),
            ]),
            created_at: now.clone(),
            updated_at: now.clone(),
            archived: false,
            write_permissions: "CRM_PERMISSIONS_ENFORCEMENT",
        })
        .collect();
    Pipeline {
        id: DEFAULT_PIPELINE_ID.to_owned(),
        label: "Sales Pipeline".to_owned(),
        display_order: 0,
        stages,
        created_at: now.clone(),
        updated_at: now,
        archived: false,
        archived_at: None,
    }
}

/// Stage body of create/PUT/PATCH requests (and the entries of a pipeline's `stages`).
/// Everything is optional at the serde level so that missing fields give HubSpot-style 400s.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct StageInput {
    pub label: Option<String>,
    pub display_order: Option<i64>,
    pub metadata: Option<Map<String, Value>>,
    pub stage_id: Option<String>,
    /// Accepted as an alias of `stageId` so a GET response can be PUT back unchanged.
    pub id: Option<String>,
    pub archived: Option<bool>,
}

/// Pipeline body of create/PUT/PATCH requests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PipelineInput {
    pub label: Option<String>,
    pub display_order: Option<i64>,
    pub stages: Option<Vec<StageInput>>,
    pub pipeline_id: Option<String>,
    pub archived: Option<bool>,
}

/// Validates a deal-stage probability ("0.0".."1.0" in steps of 0.1) and returns it the way
/// HubSpot stores it: one decimal place.
pub(crate) fn normalise_probability(raw: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::validation(format!(
            "Invalid deal stage probability '{raw}': metadata.probability must be a decimal between \
             0.0 and 1.0 in steps of 0.1 (e.g. \"0.2\")"
        ))
        .with_context("probability", vec![raw.to_owned()])
    };
    let value: f64 = raw.trim().parse().map_err(|_| invalid())?;
    let tenths = (value * 10.0).round();
    if !value.is_finite() || !(0.0..=10.0).contains(&tenths) || (value * 10.0 - tenths).abs() > 1e-6 {
        return Err(invalid());
    }
    Ok(format!("{:.1}", tenths / 10.0))
}

/// `metadata` as strings (HubSpot's map is string → string; numbers and booleans are
/// stringified for leniency), with `probability` and `isClosed` validated and normalised.
fn metadata_strings(metadata: Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (key, value) in metadata {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::validation(format!(
                    "Invalid stage metadata '{key}': values must be strings (got {other})"
                )));
            }
        };
        let text = match key.as_str() {
            "probability" => normalise_probability(&text)?,
            "isClosed" => match text.to_ascii_lowercase().as_str() {
                v @ ("true" | "false") => v.to_owned(),
                _ => {
                    return Err(ApiError::validation(format!(
                        "Invalid stage metadata isClosed '{text}': must be \"true\" or \"false\""
                    )));
                }
            },
            _ => text,
        };
        out.insert(key, text);
    }
    Ok(out)
}

/// Complete metadata of a new or replaced deal stage: `probability` is required, `isClosed`
/// defaults to `"false"`.
fn full_metadata(metadata: Option<Map<String, Value>>, label: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(metadata) = metadata else {
        return Err(ApiError::validation(format!(
            "Stage '{label}': 'metadata' is required (deal stages need metadata.probability)"
        )));
    };
    let mut metadata = metadata_strings(metadata)?;
    if !metadata.contains_key("probability") {
        return Err(ApiError::validation(format!(
            "Stage '{label}': metadata.probability is required for deal stages (\"0.0\"..\"1.0\" in steps of 0.1)"
        )));
    }
    metadata.entry("isClosed".to_owned()).or_insert_with(|| "false".to_owned());
    Ok(metadata)
}

fn required_label(label: Option<String>, what: &str) -> Result<String, ApiError> {
    match label {
        Some(label) if !label.trim().is_empty() => Ok(label),
        _ => Err(ApiError::validation(format!("{what}: 'label' is required and must not be empty"))),
    }
}

fn required_order(order: Option<i64>, what: &str) -> Result<i64, ApiError> {
    order.ok_or_else(|| ApiError::validation(format!("{what}: 'displayOrder' is required")))
}

fn same_label(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

pub(crate) fn pipeline_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Unable to find pipeline {id} for object type deals"))
        .with_context("pipelineId", vec![id.to_owned()])
}

fn stage_not_found(pipeline_id: &str, stage_id: &str) -> ApiError {
    ApiError::not_found(format!("Unable to find stage {stage_id} in pipeline {pipeline_id}"))
        .with_context("stageId", vec![stage_id.to_owned()])
}

impl Portal {
    /// Non-archived pipelines (or only archived ones), ordered like HubSpot lists them.
    pub fn list_pipelines(&self, archived: bool) -> Vec<Pipeline> {
        let mut out: Vec<Pipeline> = self.pipelines.iter().filter(|p| p.archived == archived).cloned().collect();
        out.sort_by(|a, b| a.display_order.cmp(&b.display_order).then_with(|| a.label.cmp(&b.label)));
        out
    }

    /// Any pipeline by id, archived or not.
    pub fn raw_pipeline(&self, id: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }

    /// A pipeline; archived ones only with `archived = true` (else 404, like HubSpot).
    pub fn get_pipeline(&self, id: &str, archived: bool) -> Result<&Pipeline, ApiError> {
        match self.raw_pipeline(id) {
            Some(p) if !p.archived || archived => Ok(p),
            _ => Err(pipeline_not_found(id)),
        }
    }

    fn active_pipeline_mut(&mut self, id: &str) -> Result<&mut Pipeline, ApiError> {
        match self.pipelines.iter_mut().find(|p| p.id == id) {
            Some(p) if !p.archived => Ok(p),
            _ => Err(pipeline_not_found(id)),
        }
    }

    fn check_pipeline_label(&self, label: &str, except: Option<&str>) -> Result<(), ApiError> {
        let taken =
            self.pipelines.iter().any(|p| !p.archived && Some(p.id.as_str()) != except && same_label(&p.label, label));
        if taken {
            return Err(ApiError::conflict(format!("A pipeline with label '{label}' already exists for deals."))
                .with_context("label", vec![label.to_owned()]));
        }
        Ok(())
    }

    /// Whether stage `id` exists in any pipeline other than `except`.
    fn stage_id_taken(&self, id: &str, except: Option<&str>) -> bool {
        self.pipelines.iter().filter(|p| Some(p.id.as_str()) != except).any(|p| p.stage(id).is_some())
    }

    /// Builds a full stage list from `inputs`, reusing ids (and `createdAt`) of `existing`
    /// stages that the inputs name.
    fn build_stages(
        &self,
        inputs: Vec<StageInput>,
        existing: Option<&Pipeline>,
        now: &str,
    ) -> Result<Vec<Stage>, ApiError> {
        if inputs.is_empty() {
            return Err(ApiError::validation("A pipeline must have at least one stage"));
        }
        let pipeline_id = existing.map(|p| p.id.as_str());
        let mut labels: Vec<String> = Vec::new();
        let mut ids = HashSet::new();
        let mut stages = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            let what = format!("stages[{index}]");
            let label = required_label(input.label, &what)?;
            let display_order = required_order(input.display_order, &what)?;
            if labels.iter().any(|l| same_label(l, &label)) {
                return Err(ApiError::validation(format!(
                    "Duplicate stage label '{label}': stage labels must be unique within a pipeline"
                )));
            }
            let metadata = full_metadata(input.metadata, &label)?;
            let requested = input.stage_id.or(input.id).filter(|id| !id.trim().is_empty());
            let previous = requested.as_deref().and_then(|id| existing.and_then(|p| p.stage(id)));
            let id = match (&requested, previous) {
                (Some(id), Some(_)) => id.clone(),
                (Some(id), None) => {
                    if self.stage_id_taken(id, pipeline_id) {
                        return Err(ApiError::conflict(format!("A deal stage with id '{id}' already exists."))
                            .with_context("stageId", vec![id.clone()]));
                    }
                    id.clone()
                }
                (None, _) => generate_id(),
            };
            if !ids.insert(id.clone()) {
                return Err(ApiError::validation(format!("Duplicate stage id '{id}' in stages")));
            }
            labels.push(label.clone());
            stages.push(Stage {
                id,
                label,
                display_order,
                metadata,
                created_at: previous.map_or_else(|| now.to_owned(), |s| s.created_at.clone()),
                updated_at: now.to_owned(),
                archived: false,
                write_permissions: "CRM_PERMISSIONS_ENFORCEMENT",
            });
        }
        Ok(stages)
    }

    /// Non-archived deals per stage of `pipeline_id`, for the stage ids given (zero counts
    /// omitted).
    fn stage_usage(&self, pipeline_id: &str, stage_ids: &[String]) -> Vec<(String, usize)> {
        stage_ids
            .iter()
            .filter_map(|stage| {
                let count = self
                    .deals
                    .values()
                    .filter(|d| {
                        !d.archived && d.prop("pipeline") == Some(pipeline_id) && d.prop("dealstage") == Some(stage)
                    })
                    .count();
                (count > 0).then(|| (stage.clone(), count))
            })
            .collect()
    }

    fn refuse_used_stages(&self, pipeline_id: &str, stage_ids: &[String]) -> Result<(), ApiError> {
        let used = self.stage_usage(pipeline_id, stage_ids);
        if used.is_empty() {
            return Ok(());
        }
        let detail: Vec<String> = used.iter().map(|(id, n)| format!("{id} ({n} deal(s))")).collect();
        Err(ApiError::validation(format!(
            "Cannot delete deal stage(s) of pipeline {pipeline_id} that are still used by deals: {}. \
             Move those deals to another stage first.",
            detail.join(", ")
        ))
        .with_sub_category("PIPELINE_STAGE_IN_USE")
        .with_context("stageId", used.into_iter().map(|(id, _)| id).collect()))
    }

    /// POST: a new pipeline with a generated (or the requested, if free) id.
    pub fn create_pipeline(&mut self, input: PipelineInput) -> Result<Pipeline, ApiError> {
        let label = required_label(input.label, "Pipeline")?;
        let display_order = required_order(input.display_order, "Pipeline")?;
        let Some(stage_inputs) = input.stages else {
            return Err(ApiError::validation("Pipeline: 'stages' is required"));
        };
        self.check_pipeline_label(&label, None)?;
        let id = match input.pipeline_id.filter(|id| !id.trim().is_empty()) {
            Some(id) if self.raw_pipeline(&id).is_some() => {
                return Err(ApiError::conflict(format!("A pipeline with id '{id}' already exists."))
                    .with_context("pipelineId", vec![id]));
            }
            Some(id) => id,
            None => generate_id(),
        };
        let now = now_timestamp();
        let stages = self.build_stages(stage_inputs, None, &now)?;
        let mut pipeline = Pipeline {
            id,
            label,
            display_order,
            stages,
            created_at: now.clone(),
            updated_at: now,
            archived: false,
            archived_at: None,
        };
        pipeline.sort_stages();
        self.pipelines.push(pipeline.clone());
        Ok(pipeline)
    }

    /// PATCH `{label?, displayOrder?, archived?}`; `archived` may only be `false`, to restore.
    pub fn update_pipeline(&mut self, id: &str, input: PipelineInput) -> Result<Pipeline, ApiError> {
        if input.stages.is_some() {
            return Err(ApiError::validation(
                "'stages' cannot be changed with PATCH; use PUT to replace the stage list or the stage endpoints",
            ));
        }
        let Some(current) = self.raw_pipeline(id) else {
            return Err(pipeline_not_found(id));
        };
        let restore = match input.archived {
            Some(true) => {
                return Err(ApiError::validation(
                    "'archived' can only be set to false (to restore an archived pipeline); use DELETE to archive",
                ));
            }
            Some(false) if !current.archived => {
                return Err(ApiError::validation(format!(
                    "Pipeline {id} is not archived; 'archived' may only be sent to restore an archived pipeline"
                )));
            }
            Some(false) => true,
            None if current.archived => return Err(pipeline_not_found(id)),
            None => false,
        };
        if let Some(label) = &input.label {
            if label.trim().is_empty() {
                return Err(ApiError::validation("label must not be empty"));
            }
        }
        let effective_label = input.label.clone().unwrap_or_else(|| current.label.clone());
        if restore || input.label.is_some() {
            self.check_pipeline_label(&effective_label, Some(id))?;
        }
        let now = now_timestamp();
        let Some(pipeline) = self.pipelines.iter_mut().find(|p| p.id == id) else {
            return Err(pipeline_not_found(id));
        };
        pipeline.label = effective_label;
        if let Some(order) = input.display_order {
            pipeline.display_order = order;
        }
        if restore {
            pipeline.archived = false;
            pipeline.archived_at = None;
        }
        pipeline.updated_at = now;
        Ok(pipeline.clone())
    }

    /// PUT: replaces label, displayOrder and the whole stage list. Stages left out are
    /// deleted; with `validate_usage` that is refused while non-archived deals use them.
    pub fn replace_pipeline(
        &mut self,
        id: &str,
        input: PipelineInput,
        validate_usage: bool,
    ) -> Result<Pipeline, ApiError> {
        let current = self.get_pipeline(id, false)?.clone();
        let label = required_label(input.label, "Pipeline")?;
        let display_order = required_order(input.display_order, "Pipeline")?;
        let Some(stage_inputs) = input.stages else {
            return Err(ApiError::validation("Pipeline: 'stages' is required (the full stage list)"));
        };
        self.check_pipeline_label(&label, Some(id))?;
        let now = now_timestamp();
        let stages = self.build_stages(stage_inputs, Some(&current), &now)?;
        if validate_usage {
            let dropped: Vec<String> = current
                .stages
                .iter()
                .filter(|old| !stages.iter().any(|s| s.id == old.id))
                .map(|s| s.id.clone())
                .collect();
            self.refuse_used_stages(id, &dropped)?;
        }
        let pipeline = self.active_pipeline_mut(id)?;
        pipeline.label = label;
        pipeline.display_order = display_order;
        pipeline.stages = stages;
        pipeline.updated_at = now;
        pipeline.sort_stages();
        Ok(pipeline.clone())
    }

    /// DELETE (archive). Refused for the last active pipeline, and with `validate_usage` while
    /// non-archived deals are in it.
    pub fn delete_pipeline(&mut self, id: &str, validate_usage: bool) -> Result<(), ApiError> {
        let current = self.get_pipeline(id, false)?;
        let stage_ids: Vec<String> = current.stages.iter().map(|s| s.id.clone()).collect();
        if self.pipelines.iter().filter(|p| !p.archived).count() <= 1 {
            return Err(ApiError::validation(format!(
                "Pipeline {id} is the only deal pipeline left; a portal needs at least one"
            )));
        }
        if validate_usage {
            self.refuse_used_stages(id, &stage_ids)?;
        }
        let now = now_timestamp();
        let pipeline = self.active_pipeline_mut(id)?;
        pipeline.archived = true;
        pipeline.archived_at = Some(now.clone());
        pipeline.updated_at = now;
        Ok(())
    }

    // ----- stages -----------------------------------------------------------

    pub fn list_stages(&self, pipeline_id: &str) -> Result<Vec<Stage>, ApiError> {
        Ok(self.get_pipeline(pipeline_id, false)?.stages.clone())
    }

    pub fn get_stage(&self, pipeline_id: &str, stage_id: &str) -> Result<Stage, ApiError> {
        let pipeline = self.get_pipeline(pipeline_id, false)?;
        pipeline.stage(stage_id).cloned().ok_or_else(|| stage_not_found(pipeline_id, stage_id))
    }

    fn check_stage_label(pipeline: &Pipeline, label: &str, except: Option<&str>) -> Result<(), ApiError> {
        if pipeline.stages.iter().any(|s| Some(s.id.as_str()) != except && same_label(&s.label, label)) {
            return Err(ApiError::conflict(format!(
                "A stage with label '{label}' already exists in pipeline {}.",
                pipeline.id
            ))
            .with_context("label", vec![label.to_owned()]));
        }
        Ok(())
    }

    /// POST a stage `{label*, displayOrder*, metadata*, stageId?}`.
    pub fn create_stage(&mut self, pipeline_id: &str, input: StageInput) -> Result<Stage, ApiError> {
        let pipeline = self.get_pipeline(pipeline_id, false)?;
        let label = required_label(input.label, "Stage")?;
        let display_order = required_order(input.display_order, "Stage")?;
        Self::check_stage_label(pipeline, &label, None)?;
        let metadata = full_metadata(input.metadata, &label)?;
        let id = match input.stage_id.filter(|id| !id.trim().is_empty()) {
            Some(id) if self.stage_id_taken(&id, None) => {
                return Err(ApiError::conflict(format!("A deal stage with id '{id}' already exists."))
                    .with_context("stageId", vec![id]));
            }
            Some(id) => id,
            None => generate_id(),
        };
        let now = now_timestamp();
        let stage = Stage {
            id,
            label,
            display_order,
            metadata,
            created_at: now.clone(),
            updated_at: now.clone(),
            archived: false,
            write_permissions: "CRM_PERMISSIONS_ENFORCEMENT",
        };
        let pipeline = self.active_pipeline_mut(pipeline_id)?;
        pipeline.stages.push(stage.clone());
        pipeline.updated_at = now;
        pipeline.sort_stages();
        Ok(stage)
    }

    /// PATCH a stage `{metadata*, label?, displayOrder?, archived?}`; metadata keys are merged.
    pub fn update_stage(&mut self, pipeline_id: &str, stage_id: &str, input: StageInput) -> Result<Stage, ApiError> {
        let Some(patch) = input.metadata else {
            return Err(ApiError::validation("'metadata' is required when updating a deal stage"));
        };
        if input.archived == Some(true) {
            return Err(ApiError::validation("Stages cannot be archived with PATCH; use DELETE"));
        }
        let pipeline = self.get_pipeline(pipeline_id, false)?;
        let current = pipeline.stage(stage_id).ok_or_else(|| stage_not_found(pipeline_id, stage_id))?;
        if let Some(label) = &input.label {
            if label.trim().is_empty() {
                return Err(ApiError::validation("label must not be empty"));
            }
            Self::check_stage_label(pipeline, label, Some(stage_id))?;
        }
        let mut metadata = current.metadata.clone();
        metadata.extend(metadata_strings(patch)?);
        let now = now_timestamp();
        let pipeline = self.active_pipeline_mut(pipeline_id)?;
        let Some(stage) = pipeline.stages.iter_mut().find(|s| s.id == stage_id) else {
            return Err(stage_not_found(pipeline_id, stage_id));
        };
        if let Some(label) = input.label {
            stage.label = label;
        }
        if let Some(order) = input.display_order {
            stage.display_order = order;
        }
        stage.metadata = metadata;
        stage.updated_at = now.clone();
        let stage = stage.clone();
        pipeline.updated_at = now;
        pipeline.sort_stages();
        Ok(stage)
    }

    /// PUT a stage `{label*, displayOrder*, metadata*}` (full replacement).
    pub fn replace_stage(&mut self, pipeline_id: &str, stage_id: &str, input: StageInput) -> Result<Stage, ApiError> {
        let pipeline = self.get_pipeline(pipeline_id, false)?;
        if pipeline.stage(stage_id).is_none() {
            return Err(stage_not_found(pipeline_id, stage_id));
        }
        let label = required_label(input.label, "Stage")?;
        let display_order = required_order(input.display_order, "Stage")?;
        Self::check_stage_label(pipeline, &label, Some(stage_id))?;
        let metadata = full_metadata(input.metadata, &label)?;
        let now = now_timestamp();
        let pipeline = self.active_pipeline_mut(pipeline_id)?;
        let Some(stage) = pipeline.stages.iter_mut().find(|s| s.id == stage_id) else {
            return Err(stage_not_found(pipeline_id, stage_id));
        };
        stage.label = label;
        stage.display_order = display_order;
        stage.metadata = metadata;
        stage.updated_at = now.clone();
        let stage = stage.clone();
        pipeline.updated_at = now;
        pipeline.sort_stages();
        Ok(stage)
    }

    /// DELETE a stage. Refused for a pipeline's last stage, and with `validate_usage` while
    /// non-archived deals are in it.
    pub fn delete_stage(&mut self, pipeline_id: &str, stage_id: &str, validate_usage: bool) -> Result<(), ApiError> {
        let pipeline = self.get_pipeline(pipeline_id, false)?;
        if pipeline.stage(stage_id).is_none() {
            return Err(stage_not_found(pipeline_id, stage_id));
        }
        if pipeline.stages.len() <= 1 {
            return Err(ApiError::validation(format!(
                "Stage {stage_id} is the last stage of pipeline {pipeline_id}; a pipeline needs at least one stage"
            )));
        }
        if validate_usage {
            self.refuse_used_stages(pipeline_id, &[stage_id.to_owned()])?;
        }
        let now = now_timestamp();
        let pipeline = self.active_pipeline_mut(pipeline_id)?;
        pipeline.stages.retain(|s| s.id != stage_id);
        pipeline.updated_at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(label: &str, probability: &str) -> StageInput {
        serde_json::from_value(json!({"label": label, "displayOrder": 0, "metadata": {"probability": probability}}))
            .expect("stage input")
    }

    #[test]
    fn probabilities() {
        assert_eq!(normalise_probability("0.2").expect("ok"), "0.2");
        assert_eq!(normalise_probability("1").expect("ok"), "1.0");
        assert_eq!(normalise_probability("0").expect("ok"), "0.0");
        assert_eq!(normalise_probability("0.30").expect("ok"), "0.3");
        for bad in ["0.25", "1.1", "-0.1", "abc", "", "NaN", "inf"] {
            assert!(normalise_probability(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_pipeline_shape() {
        let pipeline = default_pipeline();
        assert_eq!(pipeline.stages.len(), 7);
        let won = pipeline.stage("closedwon").expect("closedwon");
        assert_eq!(won.metadata["probability"], "1.0");
        assert_eq!(won.metadata["isClosed"], "true");
        assert_eq!(pipeline.stage("appointmentscheduled").expect("first").metadata["isClosed"], "false");
    }

    #[test]
    fn create_and_conflicts() {
        let mut portal = Portal::new(1);
        let input = PipelineInput {
            label: Some("Renewals".into()),
            display_order: Some(1),
            stages: Some(vec![stage("Open", "0.5"), stage("Won", "1.0")]),
            ..PipelineInput::default()
        };
        let created = portal.create_pipeline(input.clone()).expect("create");
        assert!(created.id.parse::<u64>().is_ok());
        assert_eq!(created.stages[0].metadata["isClosed"], "false");
        assert_eq!(portal.create_pipeline(input).expect_err("dup").status.as_u16(), 409);
        let mut dup_stage = PipelineInput {
            label: Some("Other".into()),
            display_order: Some(2),
            stages: Some(vec![stage("A", "0.1"), stage("a", "0.2")]),
            ..PipelineInput::default()
        };
        assert_eq!(portal.create_pipeline(dup_stage.clone()).expect_err("dup stage").status.as_u16(), 400);
        dup_stage.stages = Some(vec![]);
        assert_eq!(portal.create_pipeline(dup_stage).expect_err("no stages").status.as_u16(), 400);
    }
}
