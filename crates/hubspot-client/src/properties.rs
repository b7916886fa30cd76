//! CRM Properties API (CONTRACT.md §4). Deal properties are public today; the object-type
//! generic helpers below are what contacts/companies endpoints will reuse.

pub mod model;

use reqwest::Method;
use serde::Serialize;

use crate::batch::{self, BatchResult};
use crate::client::HubSpotClient;
use crate::error::{Error, Result};
use crate::serde_util::Collection;
use crate::token::AccessToken;
use model::{Property, PropertyCreate, PropertyGroup, PropertyGroupCreate, PropertyGroupUpdate, PropertyUpdate};

/// Object type of deals in CRM paths (`0-3` is its numeric alias).
pub const DEALS_OBJECT_TYPE: &str = "deals";

const FAMILY: &str = "properties";

/// Sensitivity sent with batch reads, where the field is required: the same set a plain list
/// returns by default.
const NON_SENSITIVE: &str = "non_sensitive";

#[derive(Serialize)]
struct Inputs<'a, T> {
    inputs: &'a [T],
}

#[derive(Serialize)]
struct NameInput<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchReadBody<'a> {
    archived: bool,
    data_sensitivity: &'static str,
    inputs: Vec<NameInput<'a>>,
}

fn name_inputs<S: AsRef<str>>(names: &[S]) -> Vec<NameInput<'_>> {
    names.iter().map(|n| NameInput { name: n.as_ref() }).collect()
}

impl HubSpotClient {
    /// `GET /crm/v3/properties/deals`: every (non-archived, non-sensitive) deal property.
    pub async fn list_deal_properties(&self, token: &AccessToken) -> Result<Vec<Property>> {
        self.list_properties(token, DEALS_OBJECT_TYPE).await
    }

    /// `GET /crm/v3/properties/deals/{name}`; `Ok(None)` when HubSpot answers 404.
    pub async fn get_deal_property(&self, token: &AccessToken, name: &str) -> Result<Option<Property>> {
        self.get_property(token, DEALS_OBJECT_TYPE, name).await
    }

    /// `POST /crm/v3/properties/deals` (201). An existing name gives
    /// `Error::Api { status: 409, .. }` (subCategory `Properties.PROPERTY_WITH_NAME_EXISTS`).
    ///
    /// Retried only after 5xx/423/477/429/timeouts/connection errors, so a retried create can
    /// come back 409 if the first attempt did land: diff against a fresh GET before writing.
    pub async fn create_deal_property(&self, token: &AccessToken, input: &PropertyCreate) -> Result<Property> {
        self.create_property(token, DEALS_OBJECT_TYPE, input).await
    }

    /// `PATCH /crm/v3/properties/deals/{name}` (200). Only the `Some` fields are sent; the
    /// internal name itself can never change (a "rename" is a label update).
    pub async fn update_deal_property(
        &self,
        token: &AccessToken,
        name: &str,
        input: &PropertyUpdate,
    ) -> Result<Property> {
        self.update_property(token, DEALS_OBJECT_TYPE, name, input).await
    }

    /// `DELETE /crm/v3/properties/deals/{name}` (204, moves it to the recycle bin). An unknown
    /// name gives `Error::Api { status: 404, .. }`.
    pub async fn archive_deal_property(&self, token: &AccessToken, name: &str) -> Result<()> {
        self.archive_property(token, DEALS_OBJECT_TYPE, name).await
    }

    /// `POST /crm/v3/properties/deals/batch/create`, 100 inputs per call, results merged.
    ///
    /// Each chunk answers 201, or 207 with the failed inputs in [`BatchResult::errors`] (e.g. an
    /// existing name). A chunk retried after a 5xx may have partly landed the first time, which
    /// then shows up as per-item errors: re-read before acting on them. A failing chunk aborts
    /// the remaining ones (earlier chunks stay created).
    pub async fn batch_create_deal_properties(
        &self,
        token: &AccessToken,
        inputs: &[PropertyCreate],
    ) -> Result<BatchResult<Property>> {
        let url = self.crm_url(token, FAMILY, &[DEALS_OBJECT_TYPE, "batch", "create"])?;
        let mut merged = BatchResult::default();
        for chunk in batch::chunks(inputs) {
            let response = self.send_json(token, Method::POST, url.clone(), Some(&Inputs { inputs: chunk })).await?;
            merged.merge(response.json()?);
        }
        Ok(merged)
    }

    /// `POST /crm/v3/properties/deals/batch/read` (non-sensitive properties), 100 names per
    /// call. Unknown names come back in [`BatchResult::errors`] (207).
    pub async fn batch_read_deal_properties<S: AsRef<str>>(
        &self,
        token: &AccessToken,
        names: &[S],
        archived: bool,
    ) -> Result<BatchResult<Property>> {
        let url = self.crm_url(token, FAMILY, &[DEALS_OBJECT_TYPE, "batch", "read"])?;
        let mut merged = BatchResult::default();
        for chunk in batch::chunks(names) {
            let body = BatchReadBody { archived, data_sensitivity: NON_SENSITIVE, inputs: name_inputs(chunk) };
            merged.merge(self.send_json(token, Method::POST, url.clone(), Some(&body)).await?.json()?);
        }
        Ok(merged)
    }

    /// `POST /crm/v3/properties/deals/batch/archive`, 100 names per call. HubSpot answers 204
    /// whatever the prior state, so this is idempotent.
    pub async fn batch_archive_deal_properties<S: AsRef<str>>(&self, token: &AccessToken, names: &[S]) -> Result<()> {
        let url = self.crm_url(token, FAMILY, &[DEALS_OBJECT_TYPE, "batch", "archive"])?;
        for chunk in batch::chunks(names) {
            let body = Inputs { inputs: &name_inputs(chunk) };
            self.send_json(token, Method::POST, url.clone(), Some(&body)).await?;
        }
        Ok(())
    }

    /// `GET /crm/v3/properties/deals/groups`.
    pub async fn list_deal_property_groups(&self, token: &AccessToken) -> Result<Vec<PropertyGroup>> {
        let url = self.crm_url(token, FAMILY, &[DEALS_OBJECT_TYPE, "groups"])?;
        Ok(self.send_json::<()>(token, Method::GET, url, None).await?.json::<Collection<PropertyGroup>>()?.results)
    }

    /// `GET /crm/v3/properties/deals/groups/{name}`; `Ok(None)` on 404.
    pub async fn get_deal_property_group(&self, token: &AccessToken, name: &str) -> Result<Option<PropertyGroup>> {
        let url = self.crm_url(token, FAMILY, &[DEALS_OBJECT_TYPE, "groups", name])?;
        match self.send_json::<()>(token, Method::GET, url, None).await {
            Ok(response) => response.json().map(Some),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /crm/v3/properties/deals/groups` (201).
    pub async fn create_deal_property_group(
        &self,
        token: &AccessToken,
        input: &PropertyGroupCreate,
    ) -> Result<PropertyGroup> {
        let url = self.crm_url(token, FAMILY, &[DEALS_OBJECT_TYPE, "groups"])?;
        self.send_json(token, Method::POST, url, Some(input)).await?.json()
    }

    /// `PATCH /crm/v3/properties/deals/groups/{name}` (label and/or display order).
    pub async fn update_deal_property_group(
        &self,
        token: &AccessToken,
        name: &str,
        input: &PropertyGroupUpdate,
    ) -> Result<PropertyGroup> {
        let url = self.crm_url(token, FAMILY, &[DEALS_OBJECT_TYPE, "groups", name])?;
        self.send_json(token, Method::PATCH, url, Some(input)).await?.json()
    }

    /// `DELETE /crm/v3/properties/deals/groups/{name}` (204). A group that still holds active
    /// properties gives 400 (`GROUP_WITH_ACTIVE_PROPERTIES`).
    pub async fn archive_deal_property_group(&self, token: &AccessToken, name: &str) -> Result<()> {
        let url = self.crm_url(token, FAMILY, &[DEALS_OBJECT_TYPE, "groups", name])?;
        self.send_json::<()>(token, Method::DELETE, url, None).await.map(drop)
    }

    pub(crate) async fn list_properties(&self, token: &AccessToken, object_type: &str) -> Result<Vec<Property>> {
        let url = self.crm_url(token, FAMILY, &[object_type])?;
        let response = self.send_json::<()>(token, Method::GET, url, None).await?;
        Ok(response.json::<Collection<Property>>()?.results)
    }

    pub(crate) async fn get_property(
        &self,
        token: &AccessToken,
        object_type: &str,
        name: &str,
    ) -> Result<Option<Property>> {
        let url = self.crm_url(token, FAMILY, &[object_type, name])?;
        match self.send_json::<()>(token, Method::GET, url, None).await {
            Ok(response) => response.json().map(Some),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn create_property(
        &self,
        token: &AccessToken,
        object_type: &str,
        input: &PropertyCreate,
    ) -> Result<Property> {
        let url = self.crm_url(token, FAMILY, &[object_type])?;
        self.send_json(token, Method::POST, url, Some(input)).await?.json()
    }

    pub(crate) async fn update_property(
        &self,
        token: &AccessToken,
        object_type: &str,
        name: &str,
        input: &PropertyUpdate,
    ) -> Result<Property> {
        let url = self.crm_url(token, FAMILY, &[object_type, name])?;
        self.send_json(token, Method::PATCH, url, Some(input)).await?.json()
    }

    pub(crate) async fn archive_property(&self, token: &AccessToken, object_type: &str, name: &str) -> Result<()> {
        let url = self.crm_url(token, FAMILY, &[object_type, name])?;
        self.send_json::<()>(token, Method::DELETE, url, None).await.map(drop)
    }
}
