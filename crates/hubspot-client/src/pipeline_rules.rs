//! Pipeline Rules API (HubSpot beta, `2026-09-beta`): a deal pipeline's governance rules.
//!
//! - `GET /crm/pipelines-rules/{version}-beta/0-3/{pipelineId}` →
//!   `{"governanceValidationRules": {"noBackwardsMovementRule"?: {"enabledForAllStages",
//!   "pipelineStageIds"}, "noSkippingStagesRule"?: {..}, "objectCreationRule"?: {"pipelineStageIds"}}}`
//! - `PUT` the same body replaces them all.
//!
//! The path carries the portal's pinned version (`v3` for a v3 pin). Only 2026-09 serves the
//! API; an older pin gets 404, read as "not served" (`None`), which the planner reports as a
//! blocked action instead of failing the plan.

use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use crate::client::HubSpotClient;
use crate::config::ApiVersion;
use crate::error::{Error, Result};
use crate::serde_util::null_default;
use crate::token::AccessToken;

/// A movement rule and the stages (HubSpot ids) it covers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRuleSpec {
    #[serde(default, deserialize_with = "null_default")]
    pub enabled_for_all_stages: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub pipeline_stage_ids: Vec<String>,
}

/// The stages (HubSpot ids) deals may be created in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationRuleSpec {
    #[serde(default, deserialize_with = "null_default")]
    pub pipeline_stage_ids: Vec<String>,
}

/// A pipeline's `governanceValidationRules`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GovernanceRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_backwards_movement_rule: Option<StageRuleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_skipping_stages_rule: Option<StageRuleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_creation_rule: Option<CreationRuleSpec>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    governance_validation_rules: GovernanceRules,
}

impl HubSpotClient {
    fn pipeline_rules_url(&self, token: &AccessToken, pipeline_id: &str) -> Result<Url> {
        let version = match self.api_version_for(token) {
            ApiVersion::V3 => "v3".to_owned(),
            dated => format!("{}-beta", dated.as_str()),
        };
        self.root_url(&["crm", "pipelines-rules", &version, "0-3", pipeline_id])
    }

    /// The deal pipeline's rules; `None` when the portal's API version does not serve the
    /// Pipeline Rules API (404).
    pub async fn get_deal_pipeline_rules(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
    ) -> Result<Option<GovernanceRules>> {
        let url = self.pipeline_rules_url(token, pipeline_id)?;
        match self.send_json::<()>(token, Method::GET, url, None).await {
            Ok(response) => Ok(Some(response.json::<Body>()?.governance_validation_rules)),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Replaces the deal pipeline's rules.
    pub async fn put_deal_pipeline_rules(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
        rules: &GovernanceRules,
    ) -> Result<()> {
        let url = self.pipeline_rules_url(token, pipeline_id)?;
        let body = Body { governance_validation_rules: rules.clone() };
        self.send_json(token, Method::PUT, url, Some(&body)).await.map(drop)
    }
}
