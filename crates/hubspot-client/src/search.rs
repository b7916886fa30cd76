//! CRM search requests (CONTRACT.md §6), validated locally against HubSpot's caps so a request
//! that HubSpot would reject costs no call from the portal's ≤ 5 req/s search budget.

use serde::{Deserialize, Serialize};

use crate::deals::model::PagedBody;
use crate::error::{Error, Result};
use crate::serde_util::null_default;

/// Most filter groups per request. Sources disagree (spec 6; changelog 5/10/25; docs 5/6/18), so
/// the strictest of each is enforced.
pub const MAX_FILTER_GROUPS: usize = 5;
/// Most filters in one group.
pub const MAX_FILTERS_PER_GROUP: usize = 6;
/// Most filters across all groups.
pub const MAX_FILTERS_TOTAL: usize = 18;
/// Largest page.
pub const MAX_SEARCH_LIMIT: u32 = 200;
/// Longest full-text `query`, in characters.
pub const MAX_QUERY_CHARS: usize = 3000;
/// HubSpot supports a single sort rule.
pub const MAX_SORTS: usize = 1;
/// No query can page past this many results (HubSpot answers 400).
pub const MAX_SEARCH_RESULTS: u32 = 10_000;

/// Filter operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    /// Equal (`value`).
    Eq,
    /// Not equal (`value`).
    Neq,
    /// Less than (`value`).
    Lt,
    /// Less than or equal (`value`).
    Lte,
    /// Greater than (`value`).
    Gt,
    /// Greater than or equal (`value`).
    Gte,
    /// Inclusive range (`value`..=`high_value`).
    Between,
    /// One of `values`.
    In,
    /// None of `values`.
    NotIn,
    /// Has any value.
    HasProperty,
    /// Has no value.
    NotHasProperty,
    /// Contains the token (`value`, `*` wildcards allowed).
    ContainsToken,
    /// Does not contain the token (`value`).
    NotContainsToken,
}

/// One filter; filters in a group are ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Property internal name.
    pub property_name: String,
    /// Operator.
    pub operator: Operator,
    /// Operand of single-value operators and the low end of `BETWEEN`. Dates are epoch-ms
    /// strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Operands of `IN` / `NOT_IN`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// High end of `BETWEEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_value: Option<String>,
}

impl Filter {
    /// A single-value filter (`EQ`, `GT`, `CONTAINS_TOKEN`, …).
    pub fn new(property_name: impl Into<String>, operator: Operator, value: impl Into<String>) -> Self {
        Self {
            property_name: property_name.into(),
            operator,
            value: Some(value.into()),
            values: Vec::new(),
            high_value: None,
        }
    }

    /// `EQ`.
    pub fn eq(property_name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(property_name, Operator::Eq, value)
    }

    /// `GT`.
    pub fn gt(property_name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(property_name, Operator::Gt, value)
    }

    /// `GTE`.
    pub fn gte(property_name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(property_name, Operator::Gte, value)
    }

    /// `LT`.
    pub fn lt(property_name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(property_name, Operator::Lt, value)
    }

    /// `LTE`.
    pub fn lte(property_name: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(property_name, Operator::Lte, value)
    }

    /// `BETWEEN low AND high` (inclusive).
    pub fn between(property_name: impl Into<String>, low: impl Into<String>, high: impl Into<String>) -> Self {
        Self { high_value: Some(high.into()), ..Self::new(property_name, Operator::Between, low) }
    }

    /// `IN` (`NOT_IN` with `negate`).
    pub fn in_list<I, S>(property_name: impl Into<String>, values: I, negate: bool) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            property_name: property_name.into(),
            operator: if negate { Operator::NotIn } else { Operator::In },
            value: None,
            values: values.into_iter().map(Into::into).collect(),
            high_value: None,
        }
    }

    /// `HAS_PROPERTY` (`NOT_HAS_PROPERTY` with `negate`).
    pub fn has_property(property_name: impl Into<String>, negate: bool) -> Self {
        Self {
            property_name: property_name.into(),
            operator: if negate { Operator::NotHasProperty } else { Operator::HasProperty },
            value: None,
            values: Vec::new(),
            high_value: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let invalid = |why: &str| Err(Error::InvalidRequest(format!("filter on {:?}: {why}", self.property_name)));
        if self.property_name.trim().is_empty() {
            return Err(Error::InvalidRequest("filter without a property name".to_owned()));
        }
        match self.operator {
            Operator::HasProperty | Operator::NotHasProperty => Ok(()),
            Operator::In | Operator::NotIn if self.values.is_empty() => invalid("IN/NOT_IN needs `values`"),
            Operator::In | Operator::NotIn => Ok(()),
            Operator::Between if self.value.is_none() || self.high_value.is_none() => {
                invalid("BETWEEN needs `value` and `high_value`")
            }
            _ if self.value.is_none() => invalid("operator needs a `value`"),
            _ => Ok(()),
        }
    }
}

/// Filters ANDed together; groups are ORed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FilterGroup {
    /// The filters.
    pub filters: Vec<Filter>,
}

impl FilterGroup {
    /// A group of `filters`.
    pub fn new(filters: Vec<Filter>) -> Self {
        Self { filters }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortDirection {
    /// Smallest first.
    Ascending,
    /// Largest first.
    Descending,
}

/// A sort rule (HubSpot applies one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sort {
    /// Property internal name.
    pub property_name: String,
    /// Direction.
    pub direction: SortDirection,
}

impl Sort {
    /// Ascending by `property_name`.
    pub fn asc(property_name: impl Into<String>) -> Self {
        Self { property_name: property_name.into(), direction: SortDirection::Ascending }
    }

    /// Descending by `property_name`.
    pub fn desc(property_name: impl Into<String>) -> Self {
        Self { property_name: property_name.into(), direction: SortDirection::Descending }
    }
}

/// Body of `POST /crm/v3/objects/{type}/search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    /// ORed groups of ANDed filters (≤ 5 groups, ≤ 6 filters each, ≤ 18 in total).
    pub filter_groups: Vec<FilterGroup>,
    /// At most one sort rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sorts: Vec<Sort>,
    /// Properties to return (HubSpot's defaults when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
    /// Page size, 1..=200. Default 100.
    pub limit: u32,
    /// `paging.next.after` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Full-text query (≤ 3000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self {
            filter_groups: Vec::new(),
            sorts: Vec::new(),
            properties: Vec::new(),
            limit: 100,
            after: None,
            query: None,
        }
    }
}

impl SearchRequest {
    /// Checks HubSpot's documented caps (see the `MAX_*` constants) and that every filter has
    /// the operands its operator needs; [`Error::InvalidRequest`] otherwise.
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidRequest(why));
        if self.filter_groups.len() > MAX_FILTER_GROUPS {
            return invalid(format!("{} filter groups, at most {MAX_FILTER_GROUPS} allowed", self.filter_groups.len()));
        }
        let mut total = 0;
        for (i, group) in self.filter_groups.iter().enumerate() {
            if group.filters.is_empty() {
                return invalid(format!("filter group {i} has no filters"));
            }
            if group.filters.len() > MAX_FILTERS_PER_GROUP {
                return invalid(format!(
                    "filter group {i} has {} filters, at most {MAX_FILTERS_PER_GROUP} allowed",
                    group.filters.len()
                ));
            }
            total += group.filters.len();
            group.filters.iter().try_for_each(Filter::validate)?;
        }
        if total > MAX_FILTERS_TOTAL {
            return invalid(format!("{total} filters in total, at most {MAX_FILTERS_TOTAL} allowed"));
        }
        if self.sorts.len() > MAX_SORTS {
            return invalid(format!("{} sorts, HubSpot applies at most {MAX_SORTS}", self.sorts.len()));
        }
        if !(1..=MAX_SEARCH_LIMIT).contains(&self.limit) {
            return invalid(format!("limit must be 1..={MAX_SEARCH_LIMIT}, got {}", self.limit));
        }
        if let Some(query) = &self.query {
            let chars = query.chars().count();
            if chars > MAX_QUERY_CHARS {
                return invalid(format!("query has {chars} characters, at most {MAX_QUERY_CHARS} allowed"));
            }
        }
        Ok(())
    }
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"), from = "SearchBody<T>")]
pub struct SearchPage<T> {
    /// Matches of the whole query (not just this page).
    pub total: u64,
    /// This page.
    pub results: Vec<T>,
    /// `paging.next.after`; `None` on the last page.
    pub next_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct SearchBody<T> {
    #[serde(default, deserialize_with = "null_default")]
    total: u64,
    #[serde(flatten)]
    page: PagedBody<T>,
}

impl<T> From<SearchBody<T>> for SearchPage<T> {
    fn from(body: SearchBody<T>) -> Self {
        Self { total: body.total, next_after: PagedBody::<T>::next_after(body.page.paging), results: body.page.results }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(n: usize) -> FilterGroup {
        FilterGroup::new((0..n).map(|i| Filter::eq(format!("p{i}"), "x")).collect())
    }

    fn request(groups: Vec<FilterGroup>) -> SearchRequest {
        SearchRequest { filter_groups: groups, ..SearchRequest::default() }
    }

    fn refused(r: &SearchRequest) -> bool {
        matches!(r.validate(), Err(Error::InvalidRequest(_)))
    }

    #[test]
    fn caps() {
        assert!(request(vec![group(6), group(6), group(6)]).validate().is_ok());
        assert!(request(vec![group(1); 5]).validate().is_ok());
        assert!(refused(&request(vec![group(1); 6])));
        assert!(refused(&request(vec![group(7)])));
        assert!(refused(&request(vec![group(6), group(6), group(6), group(1)])));
        assert!(refused(&request(vec![group(0)])));
        assert!(refused(&SearchRequest { limit: 201, ..SearchRequest::default() }));
        assert!(refused(&SearchRequest { limit: 0, ..SearchRequest::default() }));
        assert!(SearchRequest { limit: 200, ..SearchRequest::default() }.validate().is_ok());
        assert!(refused(&SearchRequest { query: Some("é".repeat(3001)), ..SearchRequest::default() }));
        assert!(SearchRequest { query: Some("é".repeat(3000)), ..SearchRequest::default() }.validate().is_ok());
        assert!(refused(&SearchRequest { sorts: vec![Sort::asc("a"), Sort::asc("b")], ..SearchRequest::default() }));
    }

    #[test]
    fn operands() {
        let ok = [
            Filter::between("amount", "1", "2"),
            Filter::in_list("dealstage", ["a", "b"], true),
            Filter::has_property("closedate", false),
            Filter::new("dealname", Operator::ContainsToken, "acme*"),
        ];
        assert!(request(vec![FilterGroup::new(ok.to_vec())]).validate().is_ok());
        let bad = [
            Filter { high_value: None, ..Filter::between("amount", "1", "2") },
            Filter::in_list("dealstage", Vec::<String>::new(), false),
            Filter { value: None, ..Filter::eq("dealname", "x") },
            Filter::eq(" ", "x"),
        ];
        for filter in bad {
            assert!(refused(&request(vec![FilterGroup::new(vec![filter.clone()])])), "{filter:?}");
        }
    }

    #[test]
    fn wire_format() -> std::result::Result<(), serde_json::Error> {
        let r = SearchRequest {
            filter_groups: vec![FilterGroup::new(vec![
                Filter::gte("hs_lastmodifieddate", "1000"),
                Filter::in_list("dealstage", ["a"], false),
                Filter::has_property("amount", true),
            ])],
            sorts: vec![Sort::asc("hs_lastmodifieddate")],
            properties: vec!["dealname".into()],
            limit: 200,
            after: Some("200".into()),
            query: None,
        };
        assert_eq!(
            serde_json::to_value(&r)?,
            json!({
                "filterGroups": [{"filters": [
                    {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1000"},
                    {"propertyName": "dealstage", "operator": "IN", "values": ["a"]},
                    {"propertyName": "amount", "operator": "NOT_HAS_PROPERTY"}
                ]}],
                "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
                "properties": ["dealname"],
                "limit": 200,
                "after": "200"
            })
        );
        assert_eq!(serde_json::to_value(Operator::NotContainsToken)?, json!("NOT_CONTAINS_TOKEN"));
        Ok(())
    }

    #[test]
    fn parses_response() -> std::result::Result<(), serde_json::Error> {
        let page: SearchPage<serde_json::Value> = serde_json::from_value(
            json!({"total": 250, "results": [{"id": "1"}], "paging": {"next": {"after": "1"}}}),
        )?;
        assert_eq!((page.total, page.results.len(), page.next_after.as_deref()), (250, 1, Some("1")));
        let last: SearchPage<serde_json::Value> = serde_json::from_value(json!({"total": 1, "results": []}))?;
        assert_eq!(last.next_after, None);
        Ok(())
    }
}
