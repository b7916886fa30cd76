//! CRM Deals API (CONTRACT.md §6): records, batches and search.

pub mod model;

use std::collections::BTreeMap;

use reqwest::{Method, Url};
use serde::Serialize;

use crate::batch::{self, BatchResult};
use crate::budget::RequestKind;
use crate::client::{HubSpotClient, get_optional, with_query};
use crate::error::{Error, Result};
use crate::properties::DEALS_OBJECT_TYPE;
use crate::search::{SearchPage, SearchRequest};
use crate::token::AccessToken;
use model::{Deal, Page, PagedBody};

const FAMILY: &str = "objects";

/// Largest `limit` of a deal list page.
pub const MAX_LIST_LIMIT: u32 = 100;

#[derive(Serialize)]
struct Inputs<T> {
    inputs: Vec<T>,
}

#[derive(Serialize)]
struct IdInput<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct BatchReadBody<'a> {
    inputs: Vec<IdInput<'a>>,
    properties: &'a [&'a str],
}

/// Create body. `associations` is sent (empty) because some spec versions require it.
#[derive(Serialize)]
struct CreateBody<'a> {
    properties: &'a BTreeMap<String, String>,
    associations: [(); 0],
}

#[derive(Serialize)]
struct UpdateBody<'a> {
    properties: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct BatchUpdateInput<'a> {
    id: &'a str,
    properties: &'a BTreeMap<String, String>,
}

impl HubSpotClient {
    fn deals_url(&self, token: &AccessToken, tail: &[&str]) -> Result<Url> {
        let mut segments = vec![DEALS_OBJECT_TYPE];
        segments.extend_from_slice(tail);
        self.crm_url(token, FAMILY, &segments)
    }

    /// `GET /crm/v3/objects/deals?limit&after&properties&archived=false`: one page of deals.
    ///
    /// `limit` must be 1..=100 (checked locally, [`Error::InvalidRequest`]). Pass the returned
    /// [`Page::next_after`] as `after` until it is `None`. Empty `properties` gives HubSpot's
    /// defaults (dealname, amount, closedate, pipeline, dealstage, …).
    pub async fn list_deals(
        &self,
        token: &AccessToken,
        properties: &[&str],
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<Deal>> {
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(Error::InvalidRequest(format!("list limit must be 1..={MAX_LIST_LIMIT}, got {limit}")));
        }
        let limit = limit.to_string();
        let joined = properties.join(",");
        let mut query = vec![("limit", limit.as_str()), ("archived", "false")];
        if let Some(after) = after {
            query.push(("after", after));
        }
        if !joined.is_empty() {
            query.push(("properties", joined.as_str()));
        }
        let url = with_query(self.deals_url(token, &[])?, &query);
        let body: PagedBody<Deal> = self.send_json::<()>(token, Method::GET, url, None).await?.json()?;
        Ok(body.into())
    }

    /// `GET /crm/v3/objects/deals/{id}?properties=…`; `Ok(None)` on 404.
    pub async fn get_deal(&self, token: &AccessToken, id: &str, properties: &[&str]) -> Result<Option<Deal>> {
        let joined = properties.join(",");
        let query: &[(&str, &str)] = if joined.is_empty() { &[] } else { &[("properties", joined.as_str())] };
        let url = with_query(self.deals_url(token, &[id])?, query);
        get_optional(self.send_json::<()>(token, Method::GET, url, None).await)
    }

    /// `POST /crm/v3/objects/deals` (201). Needs `dealname` and `dealstage` (a stage id), plus
    /// `pipeline` when the portal has several pipelines.
    ///
    /// Retried after 5xx/429/timeouts like every call, so a retry can create a duplicate if the
    /// first attempt landed: use a unique property to de-duplicate when that matters.
    pub async fn create_deal(&self, token: &AccessToken, properties: &BTreeMap<String, String>) -> Result<Deal> {
        let url = self.deals_url(token, &[])?;
        let body = CreateBody { properties, associations: [] };
        self.send_json(token, Method::POST, url, Some(&body)).await?.json()
    }

    /// `PATCH /crm/v3/objects/deals/{id}`: sets the given properties (`""` clears a value).
    pub async fn update_deal(
        &self,
        token: &AccessToken,
        id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Deal> {
        let url = self.deals_url(token, &[id])?;
        self.send_json(token, Method::PATCH, url, Some(&UpdateBody { properties })).await?.json()
    }

    /// `DELETE /crm/v3/objects/deals/{id}` (204, moves it to the recycle bin).
    pub async fn archive_deal(&self, token: &AccessToken, id: &str) -> Result<()> {
        let url = self.deals_url(token, &[id])?;
        self.send_json::<()>(token, Method::DELETE, url, None).await.map(drop)
    }

    /// `POST /crm/v3/objects/deals/batch/read?archived=false`, 100 ids per call, merged. Unknown
    /// ids come back in [`BatchResult::errors`] (207, `OBJECT_NOT_FOUND`, `context.ids`).
    pub async fn batch_read_deals<S: AsRef<str>>(
        &self,
        token: &AccessToken,
        ids: &[S],
        properties: &[&str],
    ) -> Result<BatchResult<Deal>> {
        let url = with_query(self.deals_url(token, &["batch", "read"])?, &[("archived", "false")]);
        let mut merged = BatchResult::default();
        for chunk in batch::chunks(ids) {
            let body =
                BatchReadBody { inputs: chunk.iter().map(|id| IdInput { id: id.as_ref() }).collect(), properties };
            merged.merge(self.send_json(token, Method::POST, url.clone(), Some(&body)).await?.json()?);
        }
        Ok(merged)
    }

    /// `POST /crm/v3/objects/deals/batch/create`, 100 deals per call, merged (seeding/tests).
    /// A failing chunk aborts the remaining ones; earlier chunks stay created.
    pub async fn batch_create_deals(
        &self,
        token: &AccessToken,
        inputs: &[BTreeMap<String, String>],
    ) -> Result<BatchResult<Deal>> {
        let url = self.deals_url(token, &["batch", "create"])?;
        let mut merged = BatchResult::default();
        for chunk in batch::chunks(inputs) {
            let body =
                Inputs { inputs: chunk.iter().map(|properties| CreateBody { properties, associations: [] }).collect() };
            merged.merge(self.send_json(token, Method::POST, url.clone(), Some(&body)).await?.json()?);
        }
        Ok(merged)
    }

    /// `POST /crm/v3/objects/deals/batch/update`: sets `properties` on every deal of `ids`, 100
    /// deals per call, merged. A failing chunk aborts the remaining ones; earlier chunks stay
    /// written. From API 2026-09 a chunk breaking a portal rule fails whole with
    /// [`crate::Error::Validation`].
    pub async fn batch_update_deals<S: AsRef<str>>(
        &self,
        token: &AccessToken,
        ids: &[S],
        properties: &BTreeMap<String, String>,
    ) -> Result<BatchResult<Deal>> {
        let url = self.deals_url(token, &["batch", "update"])?;
        let mut merged = BatchResult::default();
        for chunk in batch::chunks(ids) {
            let body =
                Inputs { inputs: chunk.iter().map(|id| BatchUpdateInput { id: id.as_ref(), properties }).collect() };
            merged.merge(self.send_json(token, Method::POST, url.clone(), Some(&body)).await?.json()?);
        }
        Ok(merged)
    }

    /// `POST /crm/v3/objects/deals/search`, validated locally first (see
    /// [`SearchRequest::validate`]). Draws from the search budget ([`RequestKind::Search`]);
    /// its 429 ("secondly" limit) is retried after `rate_limit_backoff / 10 × n`. Search never
    /// returns archived deals, lags writes slightly, and cannot page past 10,000 results.
    pub async fn search_deals(&self, token: &AccessToken, request: &SearchRequest) -> Result<SearchPage<Deal>> {
        request.validate()?;
        let url = self.deals_url(token, &["search"])?;
        self.send_json_as(token, RequestKind::Search, Method::POST, url, Some(request)).await?.json()
    }
}
