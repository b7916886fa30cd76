//! CRM property validations API: the validation rules a portal holds on deal properties.
//!
//! - `GET /crm/property-validations/{version}/0-3` → `{results: [{propertyName,
//!   propertyValidationRules: [{ruleType, ruleArguments, shouldApplyNormalization}]}]}`
//! - `PUT …/0-3/{propertyName}/rule-type/{ruleType}` `{ruleArguments, shouldApplyNormalization}`
//!   creates or replaces the property's rule of that type (other types are kept)
//! - `DELETE …/0-3/{propertyName}/rule-type/{ruleType}` removes it
//!
//! From API version 2026-09 HubSpot enforces these (and admins' conditional-required rules)
//! on record writes, answering 400 `VALIDATION_ERROR` ([`crate::Error::Validation`]).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::client::HubSpotClient;
use crate::error::{Error, Result};
use crate::serde_util::{Collection, null_default};
use crate::token::AccessToken;

const FAMILY: &str = "property-validations";
/// Deals' object type id (the validations API takes ids, not names).
const DEALS: &str = "0-3";

/// One rule on a property.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyValidationRule {
    pub rule_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub rule_arguments: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub should_apply_normalization: bool,
}

/// A property with its rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyValidations {
    pub property_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub property_validation_rules: Vec<PropertyValidationRule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuleBody<'a> {
    rule_arguments: &'a [String],
    should_apply_normalization: bool,
}

impl HubSpotClient {
    /// Every deal property that has validation rules, with them. A portal (or API version)
    /// without the validations API answers 404: that reads as no rules.
    pub async fn list_deal_property_validations(&self, token: &AccessToken) -> Result<Vec<PropertyValidations>> {
        let url = self.crm_url(token, FAMILY, &[DEALS])?;
        match self.send_json::<()>(token, Method::GET, url, None).await {
            Ok(response) => Ok(response.json::<Collection<PropertyValidations>>()?.results),
            Err(Error::Api { status: 404, .. }) => Ok(Vec::new()),
            Err(other) => Err(other),
        }
    }

    /// Creates or replaces the property's rule of `rule.rule_type`.
    pub async fn put_deal_property_validation(
        &self,
        token: &AccessToken,
        property: &str,
        rule: &PropertyValidationRule,
    ) -> Result<()> {
        let url = self.crm_url(token, FAMILY, &[DEALS, property, "rule-type", &rule.rule_type])?;
        let body = RuleBody {
            rule_arguments: &rule.rule_arguments,
            should_apply_normalization: rule.should_apply_normalization,
        };
        self.send_json(token, Method::PUT, url, Some(&body)).await.map(drop)
    }

    /// Removes the property's rule of `rule_type`; one already gone (404) is fine.
    pub async fn delete_deal_property_validation(
        &self,
        token: &AccessToken,
        property: &str,
        rule_type: &str,
    ) -> Result<()> {
        let url = self.crm_url(token, FAMILY, &[DEALS, property, "rule-type", rule_type])?;
        match self.send_json::<()>(token, Method::DELETE, url, None).await {
            Ok(_) | Err(Error::Api { status: 404, .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }
}
