//! Pipeline rules (HubSpot's Pipeline Rules API, `2026-09-beta`) and their enforcement on
//! 2026-09 deal writes.
//!
//! A pipeline's `governanceValidationRules`:
//! `{"noBackwardsMovementRule": {"enabledForAllStages", "pipelineStageIds"},
//!   "noSkippingStagesRule": {"enabledForAllStages", "pipelineStageIds"},
//!   "objectCreationRule": {"pipelineStageIds"}}`, each optional. Enforced as:
//!
//! | rule | a 2026-09 deal write is refused when |
//! |---|---|
//! | `noBackwardsMovementRule` | it moves a deal out of a covered stage to an earlier stage (by `displayOrder`) of the same pipeline |
//! | `noSkippingStagesRule` | it moves a deal out of a covered stage past the next open stage (moving to a closed stage is always allowed) |
//! | `objectCreationRule` | it creates a deal in a stage not listed (an empty list allows every stage) |
//!
//! A stage is covered when `enabledForAllStages` is true or it is in `pipelineStageIds`
//! (the simulator's reading of the beta docs: the stage a deal moves *from*). A refusal is a
//! 400 `VALIDATION_ERROR` with `subCategory` `PIPELINE_RULE_VIOLATION` and an `errors[0]`
//! whose `context.ruleType` names the rule (`NO_BACKWARDS_MOVEMENT`, `NO_SKIPPING_STAGES`,
//! `OBJECT_CREATION`). Approvals and stage edit permissions are not simulated.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ApiError;
use crate::pipelines::Pipeline;

const RULE_VIOLATION: &str = "PIPELINE_RULE_VIOLATION";

/// A movement rule and the stages it covers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StageRule {
    #[serde(default)]
    pub enabled_for_all_stages: bool,
    #[serde(default)]
    pub pipeline_stage_ids: Vec<String>,
}

impl StageRule {
    fn covers(&self, stage: &str) -> bool {
        self.enabled_for_all_stages || self.pipeline_stage_ids.iter().any(|s| s == stage)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreationRule {
    #[serde(default)]
    pub pipeline_stage_ids: Vec<String>,
}

/// One pipeline's `governanceValidationRules`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PipelineRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_backwards_movement_rule: Option<StageRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_skipping_stages_rule: Option<StageRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_creation_rule: Option<CreationRule>,
}

impl PipelineRules {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Every stage id the rules name must be a stage of `pipeline`.
    pub fn check_stages(&self, pipeline: &Pipeline) -> Result<(), ApiError> {
        let named = [&self.no_backwards_movement_rule, &self.no_skipping_stages_rule]
            .into_iter()
            .flatten()
            .flat_map(|r| &r.pipeline_stage_ids)
            .chain(self.object_creation_rule.iter().flat_map(|r| &r.pipeline_stage_ids));
        for stage in named {
            if pipeline.stage(stage).is_none_or(|s| s.archived) {
                return Err(ApiError::validation(format!("Stage {stage} is not a stage of pipeline {}", pipeline.id)));
            }
        }
        Ok(())
    }
}

fn violation(rule_type: &str, pipeline: &str, message: String) -> ApiError {
    let detail = json!({
        "code": RULE_VIOLATION,
        "message": message,
        "context": {"pipelineId": [pipeline], "ruleType": [rule_type]},
    });
    ApiError::validation(message)
        .with_sub_category(RULE_VIOLATION)
        .with_context("pipelineId", vec![pipeline.to_owned()])
        .with_errors(vec![detail])
}

/// Checks a deal write against its pipeline's rules: `from` is the deal's stage before the
/// write (`None` for a new deal, or one that changes pipeline), `to` the stage it ends in.
pub(crate) fn check_move(
    rules: &PipelineRules,
    pipeline: &Pipeline,
    from: Option<&str>,
    to: &str,
) -> Result<(), ApiError> {
    let Some(from) = from else {
        if let Some(creation) = &rules.object_creation_rule
            && !creation.pipeline_stage_ids.is_empty()
            && !creation.pipeline_stage_ids.iter().any(|s| s == to)
        {
            return Err(violation(
                "OBJECT_CREATION",
                &pipeline.id,
                format!(
                    "Deals in pipeline {} cannot be created in stage {to} (pipeline rule OBJECT_CREATION)",
                    pipeline.id
                ),
            ));
        }
        return Ok(());
    };
    if from == to {
        return Ok(());
    }
    let open: Vec<&str> = pipeline
        .stages
        .iter()
        .filter(|s| !s.archived && s.metadata.get("isClosed").is_none_or(|c| c != "true"))
        .map(|s| s.id.as_str())
        .collect();
    let (Some(at), Some(target)) = (pipeline.stage(from), pipeline.stage(to)) else { return Ok(()) };
    if rules.no_backwards_movement_rule.as_ref().is_some_and(|r| r.covers(from))
        && target.display_order < at.display_order
    {
        return Err(violation(
            "NO_BACKWARDS_MOVEMENT",
            &pipeline.id,
            format!(
                "Deals in pipeline {} cannot move backwards from stage {from} to {to} (pipeline rule NO_BACKWARDS_MOVEMENT)",
                pipeline.id
            ),
        ));
    }
    let to_closed = target.metadata.get("isClosed").is_some_and(|c| c == "true");
    let position = |id: &str| open.iter().position(|s| *s == id);
    if rules.no_skipping_stages_rule.as_ref().is_some_and(|r| r.covers(from))
        && !to_closed
        && let (Some(a), Some(b)) = (position(from), position(to))
        && b > a + 1
    {
        return Err(violation(
            "NO_SKIPPING_STAGES",
            &pipeline.id,
            format!(
                "Deals in pipeline {} cannot skip stages from {from} to {to} (pipeline rule NO_SKIPPING_STAGES)",
                pipeline.id
            ),
        ));
    }
    Ok(())
}
