//! CRM Pipelines API for deals (CONTRACT.md §5): pipelines and their stages.
//!
//! Destructive calls (pipeline PUT/DELETE, stage DELETE) always carry HubSpot's
//! validate-before-delete flags, which default to `false` server-side: without them HubSpot
//! would silently drop stages that deals or workflows still use.

pub mod model;

use reqwest::{Method, Url};

use crate::client::{HubSpotClient, get_optional, with_query};
use crate::error::Result;
use crate::properties::DEALS_OBJECT_TYPE;
use crate::serde_util::Collection;
use crate::token::AccessToken;
use model::{
    Pipeline, PipelineCreate, PipelineReplace, PipelineStage, PipelineStageInput, PipelineStageUpdate, PipelineUpdate,
};

const FAMILY: &str = "pipelines";
const STAGES: &str = "stages";

/// Flags of pipeline PUT and DELETE: refuse to drop stages still referenced or used by deals.
const PIPELINE_DELETE_GUARDS: &[(&str, &str)] =
    &[("validateReferencesBeforeDelete", "true"), ("validateDealStageUsagesBeforeDelete", "true")];
/// The only flag stage DELETE takes.
const STAGE_DELETE_GUARDS: &[(&str, &str)] = &[("validateReferencesBeforeDelete", "true")];

impl HubSpotClient {
    fn pipeline_url(&self, token: &AccessToken, tail: &[&str]) -> Result<Url> {
        let mut segments = vec![DEALS_OBJECT_TYPE];
        segments.extend_from_slice(tail);
        self.crm_url(token, FAMILY, &segments)
    }

    /// `GET /crm/v3/pipelines/deals`.
    pub async fn list_deal_pipelines(&self, token: &AccessToken) -> Result<Vec<Pipeline>> {
        let url = self.pipeline_url(token, &[])?;
        Ok(self.send_json::<()>(token, Method::GET, url, None).await?.json::<Collection<Pipeline>>()?.results)
    }

    /// `GET /crm/v3/pipelines/deals/{pipelineId}`; `Ok(None)` on 404 (unknown or archived).
    pub async fn get_deal_pipeline(&self, token: &AccessToken, pipeline_id: &str) -> Result<Option<Pipeline>> {
        let url = self.pipeline_url(token, &[pipeline_id])?;
        get_optional(self.send_json::<()>(token, Method::GET, url, None).await)
    }

    /// `POST /crm/v3/pipelines/deals` (201); returns the pipeline with HubSpot's ids.
    pub async fn create_deal_pipeline(&self, token: &AccessToken, input: &PipelineCreate) -> Result<Pipeline> {
        let url = self.pipeline_url(token, &[])?;
        self.send_json(token, Method::POST, url, Some(input)).await?.json()
    }

    /// `PATCH /crm/v3/pipelines/deals/{pipelineId}` (label, display order, restore).
    pub async fn update_deal_pipeline(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
        input: &PipelineUpdate,
    ) -> Result<Pipeline> {
        let url = self.pipeline_url(token, &[pipeline_id])?;
        self.send_json(token, Method::PATCH, url, Some(input)).await?.json()
    }

    /// `PUT /crm/v3/pipelines/deals/{pipelineId}?validateReferencesBeforeDelete=true&validateDealStageUsagesBeforeDelete=true`:
    /// replaces the whole definition. Stages missing from `input` are deleted, unless still in
    /// use, in which case HubSpot refuses.
    pub async fn replace_deal_pipeline(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
        input: &PipelineReplace,
    ) -> Result<Pipeline> {
        let url = with_query(self.pipeline_url(token, &[pipeline_id])?, PIPELINE_DELETE_GUARDS);
        self.send_json(token, Method::PUT, url, Some(input)).await?.json()
    }

    /// `DELETE /crm/v3/pipelines/deals/{pipelineId}?validateReferencesBeforeDelete=true&validateDealStageUsagesBeforeDelete=true` (204).
    pub async fn delete_deal_pipeline(&self, token: &AccessToken, pipeline_id: &str) -> Result<()> {
        let url = with_query(self.pipeline_url(token, &[pipeline_id])?, PIPELINE_DELETE_GUARDS);
        self.send_json::<()>(token, Method::DELETE, url, None).await.map(drop)
    }

    /// `GET /crm/v3/pipelines/deals/{pipelineId}/stages`.
    pub async fn list_deal_pipeline_stages(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
    ) -> Result<Vec<PipelineStage>> {
        let url = self.pipeline_url(token, &[pipeline_id, STAGES])?;
        Ok(self.send_json::<()>(token, Method::GET, url, None).await?.json::<Collection<PipelineStage>>()?.results)
    }

    /// `GET /crm/v3/pipelines/deals/{pipelineId}/stages/{stageId}`; `Ok(None)` on 404.
    pub async fn get_deal_pipeline_stage(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
        stage_id: &str,
    ) -> Result<Option<PipelineStage>> {
        let url = self.pipeline_url(token, &[pipeline_id, STAGES, stage_id])?;
        get_optional(self.send_json::<()>(token, Method::GET, url, None).await)
    }

    /// `POST /crm/v3/pipelines/deals/{pipelineId}/stages` (201).
    pub async fn create_deal_pipeline_stage(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
        input: &PipelineStageInput,
    ) -> Result<PipelineStage> {
        let url = self.pipeline_url(token, &[pipeline_id, STAGES])?;
        self.send_json(token, Method::POST, url, Some(input)).await?.json()
    }

    /// `PATCH /crm/v3/pipelines/deals/{pipelineId}/stages/{stageId}` (metadata is required).
    pub async fn update_deal_pipeline_stage(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
        stage_id: &str,
        input: &PipelineStageUpdate,
    ) -> Result<PipelineStage> {
        let url = self.pipeline_url(token, &[pipeline_id, STAGES, stage_id])?;
        self.send_json(token, Method::PATCH, url, Some(input)).await?.json()
    }

    /// `PUT /crm/v3/pipelines/deals/{pipelineId}/stages/{stageId}`: replaces the stage.
    pub async fn replace_deal_pipeline_stage(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
        stage_id: &str,
        input: &PipelineStageInput,
    ) -> Result<PipelineStage> {
        let url = self.pipeline_url(token, &[pipeline_id, STAGES, stage_id])?;
        self.send_json(token, Method::PUT, url, Some(input)).await?.json()
    }

    /// `DELETE /crm/v3/pipelines/deals/{pipelineId}/stages/{stageId}?validateReferencesBeforeDelete=true` (204).
    pub async fn delete_deal_pipeline_stage(
        &self,
        token: &AccessToken,
        pipeline_id: &str,
        stage_id: &str,
    ) -> Result<()> {
        let url = with_query(self.pipeline_url(token, &[pipeline_id, STAGES, stage_id])?, STAGE_DELETE_GUARDS);
        self.send_json::<()>(token, Method::DELETE, url, None).await.map(drop)
    }
}
