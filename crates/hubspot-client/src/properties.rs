//! CRM Properties API (CONTRACT.md §4). Deal properties are public today; the object-type
//! generic helpers below are what contacts/companies endpoints will reuse.

pub mod model;

use reqwest::Method;
use serde::Deserialize;

use crate::client::HubSpotClient;
use crate::error::{Error, Result};
use crate::token::AccessToken;
use model::{Property, PropertyCreate, PropertyUpdate};

/// Object type of deals in CRM paths (`0-3` is its numeric alias).
pub const DEALS_OBJECT_TYPE: &str = "deals";

const FAMILY: &str = "properties";

/// `{results: [...]}` envelope of list responses.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct Collection<T> {
    #[serde(default = "Vec::new", deserialize_with = "crate::serde_util::null_default")]
    results: Vec<T>,
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

    pub(crate) async fn list_properties(&self, token: &AccessToken, object_type: &str) -> Result<Vec<Property>> {
        let url = self.crm_url(FAMILY, &[object_type])?;
        let response = self.send_json::<()>(token, Method::GET, url, None).await?;
        Ok(response.json::<Collection<Property>>()?.results)
    }

    pub(crate) async fn get_property(
        &self,
        token: &AccessToken,
        object_type: &str,
        name: &str,
    ) -> Result<Option<Property>> {
        let url = self.crm_url(FAMILY, &[object_type, name])?;
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
        let url = self.crm_url(FAMILY, &[object_type])?;
        self.send_json(token, Method::POST, url, Some(input)).await?.json()
    }

    pub(crate) async fn update_property(
        &self,
        token: &AccessToken,
        object_type: &str,
        name: &str,
        input: &PropertyUpdate,
    ) -> Result<Property> {
        let url = self.crm_url(FAMILY, &[object_type, name])?;
        self.send_json(token, Method::PATCH, url, Some(input)).await?.json()
    }

    pub(crate) async fn archive_property(&self, token: &AccessToken, object_type: &str, name: &str) -> Result<()> {
        let url = self.crm_url(FAMILY, &[object_type, name])?;
        self.send_json::<()>(token, Method::DELETE, url, None).await.map(drop)
    }
}
