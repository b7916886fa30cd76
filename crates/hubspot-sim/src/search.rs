//! CRM search (`POST …/deals/search`, CONTRACT.md §6) and its lagging index.
//!
//! Filters are ANDed within a group and groups are ORed. Comparisons are numeric when both
//! sides parse as numbers (date strings count as their epoch milliseconds), otherwise
//! case-insensitive string comparisons. A missing value only satisfies `NOT_HAS_PROPERTY` and
//! the negative operators `NEQ`, `NOT_IN` and `NOT_CONTAINS_TOKEN`. Unknown property names are
//! treated as "no value" (HubSpot has many built-in properties the simulator lacks).
//!
//! Limits (400 when exceeded): 5 filter groups, 6 filters per group, 18 filters in total,
//! `limit` ≤ 200, `query` ≤ 3000 characters, one sort, and `after + limit` ≤ 10,000 (HubSpot
//! refuses to page past 10,000 results). Archived deals are never returned.
//!
//! With a non-zero index lag, every write is applied to the search index only once the lag has
//! passed, so search sees old values (or misses new deals) for that long.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::deals::{Selection, render_object};
use crate::error::ApiError;
use crate::model::parse_datetime_ms;
use crate::portal::Portal;

pub(crate) const MAX_FILTER_GROUPS: usize = 5;
pub(crate) const MAX_FILTERS_PER_GROUP: usize = 6;
pub(crate) const MAX_FILTERS_TOTAL: usize = 18;
pub(crate) const MAX_SEARCH_LIMIT: u64 = 200;
pub(crate) const MAX_SEARCH_RESULTS: u64 = 10_000;
const MAX_QUERY_CHARS: usize = 3000;
const DEFAULT_SEARCH_LIMIT: u64 = 10;

const OPERATORS: &[&str] = &[
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
];

/// A deal as the search index sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedDeal {
    pub props: BTreeMap<String, String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// The portal's search index when writes become searchable only after `lag`.
#[derive(Debug, Default)]
pub(crate) struct SearchIndex {
    lag: Duration,
    docs: BTreeMap<u64, IndexedDeal>,
    /// (due, deal id, new document or `None` for removal), in write order.
    pending: VecDeque<(Instant, u64, Option<IndexedDeal>)>,
}

impl SearchIndex {
    pub fn new(lag: Duration) -> Self {
        Self { lag, ..Self::default() }
    }

    /// Whether search reads an index (true) or the live deals (zero lag).
    pub fn is_lagging(&self) -> bool {
        !self.lag.is_zero()
    }

    /// Records a write made at `now`. Due entries are applied first, so `pending` only ever
    /// holds the writes of the last `lag`.
    pub fn record(&mut self, now: Instant, id: u64, doc: Option<IndexedDeal>) {
        if !self.is_lagging() {
            return;
        }
        self.promote(now);
        self.pending.push_back((now + self.lag, id, doc));
    }

    /// Makes `doc` searchable at once (a restored deal was indexed long ago).
    pub fn insert_indexed(&mut self, id: u64, doc: IndexedDeal) {
        self.docs.insert(id, doc);
    }

    /// Applies the writes whose lag has passed.
    pub fn promote(&mut self, now: Instant) {
        while self.pending.front().is_some_and(|(due, _, _)| *due <= now) {
            if let Some((_, id, doc)) = self.pending.pop_front() {
                match doc {
                    Some(doc) => self.docs.insert(id, doc),
                    None => self.docs.remove(&id),
                };
            }
        }
    }
}

/// A `sorts` entry: `{propertyName, direction}` or the spec's plain string (`"-name"` =
/// descending).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SortInput {
    Object {
        #[serde(rename = "propertyName")]
        property_name: String,
        #[serde(default)]
        direction: Option<String>,
    },
    Text(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct FilterInput {
    property_name: Option<String>,
    operator: Option<String>,
    value: Option<Value>,
    values: Option<Vec<Value>>,
    high_value: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct FilterGroupInput {
    filters: Vec<FilterInput>,
}

/// The search request body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct SearchRequest {
    filter_groups: Vec<FilterGroupInput>,
    sorts: Vec<SortInput>,
    properties: Vec<String>,
    limit: Option<i64>,
    after: Option<Value>,
    query: Option<String>,
}

#[derive(Debug, Clone)]
enum Condition {
    Eq(String),
    Neq(String),
    Cmp(Ordering, bool, String),
    Between(String, String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Has,
    NotHas,
    Token(String),
    NotToken(String),
}

#[derive(Debug, Clone)]
struct Filter {
    property: String,
    condition: Condition,
}

#[derive(Debug, Clone)]
struct Sort {
    property: String,
    descending: bool,
}

/// A validated search.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    groups: Vec<Vec<Filter>>,
    sort: Option<Sort>,
    properties: Vec<String>,
    limit: u64,
    offset: u64,
    query: Vec<String>,
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn need(value: Option<&Value>, what: &str, property: &str, operator: &str) -> Result<String, ApiError> {
    value.and_then(scalar).ok_or_else(|| {
        ApiError::validation(format!("Filter on '{property}' with operator {operator} requires '{what}'"))
    })
}

fn parse_filter(input: FilterInput) -> Result<Filter, ApiError> {
    let property = input
        .property_name
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| ApiError::validation("Every filter needs a 'propertyName'"))?;
    let operator = input.operator.unwrap_or_default();
    let value = || need(input.value.as_ref(), "value", &property, &operator);
    let values = || -> Result<Vec<String>, ApiError> {
        match &input.values {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|v| {
                    scalar(v).ok_or_else(|| ApiError::validation(format!("Invalid value in 'values' of '{property}'")))
                })
                .collect(),
            _ => Err(ApiError::validation(format!(
                "Filter on '{property}' with operator {operator} requires a non-empty 'values' list"
            ))),
        }
    };
    let condition = match operator.as_str() {
        "EQ" => Condition::Eq(value()?),
        "NEQ" => Condition::Neq(value()?),
        "LT" => Condition::Cmp(Ordering::Less, false, value()?),
        "LTE" => Condition::Cmp(Ordering::Less, true, value()?),
        "GT" => Condition::Cmp(Ordering::Greater, false, value()?),
        "GTE" => Condition::Cmp(Ordering::Greater, true, value()?),
        "BETWEEN" => Condition::Between(value()?, need(input.high_value.as_ref(), "highValue", &property, &operator)?),
        "IN" => Condition::In(values()?),
        "NOT_IN" => Condition::NotIn(values()?),
        "HAS_PROPERTY" => Condition::Has,
        "NOT_HAS_PROPERTY" => Condition::NotHas,
        "CONTAINS_TOKEN" => Condition::Token(value()?),
        "NOT_CONTAINS_TOKEN" => Condition::NotToken(value()?),
        other => {
            return Err(ApiError::validation(format!(
                "Unknown filter operator '{other}'. Allowed operators: {}",
                OPERATORS.join(", ")
            )));
        }
    };
    Ok(Filter { property, condition })
}

fn parse_sort(input: SortInput) -> Result<Sort, ApiError> {
    match input {
        SortInput::Object { property_name, direction } => {
            let descending = match direction.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("ASCENDING" | "ASC") => false,
                Some("DESCENDING" | "DESC") => true,
                Some(other) => {
                    return Err(ApiError::validation(format!(
                        "Invalid sort direction '{other}': use ASCENDING or DESCENDING"
                    )));
                }
            };
            Ok(Sort { property: property_name, descending })
        }
        SortInput::Text(text) => match text.strip_prefix('-') {
            Some(property) => Ok(Sort { property: property.to_owned(), descending: true }),
            None => Ok(Sort { property: text, descending: false }),
        },
    }
}

fn parse_after(after: Option<Value>) -> Result<u64, ApiError> {
    let invalid =
        |v: &Value| ApiError::validation(format!("Invalid 'after' value {v}: must be a numeric paging cursor"));
    match after {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| invalid(&Value::String(s))),
        Some(v @ Value::Number(_)) => v.as_u64().ok_or_else(|| invalid(&v)),
        Some(v) => Err(invalid(&v)),
    }
}

impl SearchRequest {
    /// Checks HubSpot's limits and builds the search.
    pub fn validate(self) -> Result<Search, ApiError> {
        if self.filter_groups.len() > MAX_FILTER_GROUPS {
            return Err(ApiError::validation(format!(
                "Too many filter groups: {} (the maximum is {MAX_FILTER_GROUPS})",
                self.filter_groups.len()
            )));
        }
        let mut total = 0;
        let mut groups = Vec::with_capacity(self.filter_groups.len());
        for (index, group) in self.filter_groups.into_iter().enumerate() {
            if group.filters.len() > MAX_FILTERS_PER_GROUP {
                return Err(ApiError::validation(format!(
                    "Too many filters in filterGroups[{index}]: {} (the maximum is {MAX_FILTERS_PER_GROUP} per group)",
                    group.filters.len()
                )));
            }
            total += group.filters.len();
            groups.push(group.filters.into_iter().map(parse_filter).collect::<Result<Vec<_>, _>>()?);
        }
        if total > MAX_FILTERS_TOTAL {
            return Err(ApiError::validation(format!(
                "Too many filters: {total} in total (the maximum is {MAX_FILTERS_TOTAL} across all filter groups)"
            )));
        }
        if self.sorts.len() > 1 {
            return Err(ApiError::validation("Only one sort is supported per search request"));
        }
        let sort = self.sorts.into_iter().next().map(parse_sort).transpose()?;
        let limit = match self.limit {
            None => DEFAULT_SEARCH_LIMIT,
            Some(limit) => u64::try_from(limit).ok().filter(|l| *l <= MAX_SEARCH_LIMIT).ok_or_else(|| {
                ApiError::validation(format!("Invalid limit {limit}: must be between 0 and {MAX_SEARCH_LIMIT}"))
            })?,
        };
        let offset = parse_after(self.after)?;
        if offset.saturating_add(limit) > MAX_SEARCH_RESULTS {
            return Err(ApiError::validation(format!(
                "Paging past {MAX_SEARCH_RESULTS} results is not supported: after ({offset}) + limit ({limit}) \
                 exceeds the maximum of {MAX_SEARCH_RESULTS} results per query. Narrow the query instead."
            ))
            .with_sub_category("SEARCH_RESULT_LIMIT_EXCEEDED"));
        }
        let query = self.query.unwrap_or_default();
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(ApiError::validation(format!("'query' is longer than {MAX_QUERY_CHARS} characters")));
        }
        let query = query.split_whitespace().map(str::to_lowercase).collect();
        Ok(Search { groups, sort, properties: self.properties, limit, offset, query })
    }
}

/// A number for comparisons: a plain number, or a date/datetime as epoch milliseconds.
fn numeric(value: &str) -> Option<f64> {
    match value.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => Some(n),
        _ => parse_datetime_ms(value).map(|ms| ms as f64),
    }
}

fn compare(a: &str, b: &str) -> Ordering {
    match (numeric(a), numeric(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

/// Word tokens of a value (split on anything but letters, digits, `_`, `@`, `.` and `-`).
fn tokens(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '@' | '.' | '-')))
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn contains_token(value: &str, wanted: &str) -> bool {
    let wanted = wanted.trim().to_lowercase();
    if wanted.contains('*') {
        return glob(&wanted, &value.to_lowercase()) || tokens(value).any(|t| glob(&wanted, &t));
    }
    let wanted_tokens: Vec<String> = tokens(&wanted).collect();
    if wanted_tokens.is_empty() {
        return false;
    }
    let have: Vec<String> = tokens(value).collect();
    // A multi-word value matches when the words appear consecutively.
    have.windows(wanted_tokens.len()).any(|w| w == wanted_tokens.as_slice())
}

impl Condition {
    fn matches(&self, value: Option<&str>) -> bool {
        let Some(v) = value else {
            return matches!(self, Self::Neq(_) | Self::NotIn(_) | Self::NotHas | Self::NotToken(_));
        };
        match self {
            Self::Eq(x) => compare(v, x) == Ordering::Equal,
            Self::Neq(x) => compare(v, x) != Ordering::Equal,
            Self::Cmp(direction, or_equal, x) => {
                let ord = compare(v, x);
                ord == *direction || (*or_equal && ord == Ordering::Equal)
            }
            Self::Between(low, high) => compare(v, low) != Ordering::Less && compare(v, high) != Ordering::Greater,
            Self::In(list) => list.iter().any(|x| compare(v, x) == Ordering::Equal),
            Self::NotIn(list) => !list.iter().any(|x| compare(v, x) == Ordering::Equal),
            Self::Has => true,
            Self::NotHas => false,
            Self::Token(x) => contains_token(v, x),
            Self::NotToken(x) => !contains_token(v, x),
        }
    }
}

/// A searchable document: a live deal or an index snapshot.
struct Doc<'a> {
    id: u64,
    props: &'a BTreeMap<String, String>,
    created_ms: i64,
    updated_ms: i64,
}

impl Doc<'_> {
    fn value(&self, name: &str) -> Option<&str> {
        self.props.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

impl Search {
    fn matches(&self, doc: &Doc<'_>) -> bool {
        let text_ok = self.query.is_empty() || {
            let name = doc.value("dealname").unwrap_or_default().to_lowercase();
            self.query.iter().all(|word| name.contains(word.as_str()))
        };
        let filters_ok = self.groups.is_empty()
            || self.groups.iter().any(|group| group.iter().all(|f| f.condition.matches(doc.value(&f.property))));
        text_ok && filters_ok
    }

    fn order(&self, a: &Doc<'_>, b: &Doc<'_>) -> Ordering {
        let by_value = self.sort.as_ref().map_or(Ordering::Equal, |sort| {
            match (a.value(&sort.property), b.value(&sort.property)) {
                (Some(x), Some(y)) if sort.descending => compare(y, x),
                (Some(x), Some(y)) => compare(x, y),
                // Documents without the sort property go last either way.
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        });
        by_value.then(a.id.cmp(&b.id))
    }
}

impl Portal {
    /// Runs a search against the index (or the live deals when there is no lag).
    pub fn search_deals(&mut self, search: &Search, now: Instant) -> Value {
        self.index.promote(now);
        let mut hits: Vec<Doc<'_>> = if self.index.is_lagging() {
            self.index
                .docs
                .iter()
                .map(|(id, d)| Doc { id: *id, props: &d.props, created_ms: d.created_ms, updated_ms: d.updated_ms })
                .filter(|doc| search.matches(doc))
                .collect()
        } else {
            self.deals
                .values()
                .filter(|d| !d.archived)
                .map(|d| Doc { id: d.id, props: &d.props, created_ms: d.created_ms, updated_ms: d.updated_ms })
                .filter(|doc| search.matches(doc))
                .collect()
        };
        hits.sort_by(|a, b| search.order(a, b));
        let total = hits.len() as u64;
        let start = usize::try_from(search.offset).unwrap_or(usize::MAX).min(hits.len());
        let end = usize::try_from(search.offset.saturating_add(search.limit)).unwrap_or(usize::MAX).min(hits.len());
        let names: Vec<String> = search.properties.clone();
        let selection = if names.is_empty() { Selection::Default } else { Selection::Named(&names) };
        let results: Vec<Value> = hits[start..end]
            .iter()
            .map(|doc| render_object(self, doc.id, doc.props, doc.created_ms, doc.updated_ms, None, selection))
            .collect();
        let mut body = json!({ "total": total, "results": results });
        let next = search.offset.saturating_add(search.limit);
        if search.limit > 0 && next < total {
            body["paging"] = json!({ "next": { "after": next.to_string(), "link": format!("?after={next}") } });
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons() {
        assert_eq!(compare("10", "9"), Ordering::Greater);
        assert_eq!(compare("abc", "ABC"), Ordering::Equal);
        assert_eq!(compare("2026-01-02", "1767225600000"), Ordering::Greater);
        assert!(contains_token("Big Renewal deal", "renewal"));
        assert!(contains_token("Big Renewal deal", "renewal deal"));
        assert!(!contains_token("Big Renewals", "renewal"));
        assert!(contains_token("ops@example.com", "*@example.com"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abde"));
    }

    #[test]
    fn limits() {
        let group = json!({"filters": [{"propertyName": "amount", "operator": "HAS_PROPERTY"}]});
        let req = |body: Value| serde_json::from_value::<SearchRequest>(body).expect("request").validate();
        assert!(req(json!({"filterGroups": vec![group.clone(); 5]})).is_ok());
        assert!(req(json!({"filterGroups": vec![group.clone(); 6]})).is_err());
        let seven = json!({"filters": vec![json!({"propertyName": "amount", "operator": "HAS_PROPERTY"}); 7]});
        assert!(req(json!({"filterGroups": [seven]})).is_err());
        let six = json!({"filters": vec![json!({"propertyName": "amount", "operator": "HAS_PROPERTY"}); 6]});
        assert!(req(json!({"filterGroups": vec![six.clone(); 3]})).is_ok());
        assert!(req(json!({"filterGroups": vec![six; 4]})).is_err());
        assert!(req(json!({"limit": 201})).is_err());
        assert!(req(json!({"limit": 200, "after": "9800"})).is_ok());
        assert!(req(json!({"limit": 200, "after": "9801"})).is_err());
        assert!(req(json!({"after": "abc"})).is_err());
        assert!(req(json!({"sorts": ["a", "b"]})).is_err());
        assert!(req(json!({"sorts": ["-createdate"]})).is_ok());
        assert!(
            req(json!({"filterGroups": [{"filters": [{"propertyName": "a", "operator": "LIKE", "value": "x"}]}]}))
                .is_err()
        );
        assert!(req(json!({"filterGroups": [{"filters": [{"propertyName": "a", "operator": "IN"}]}]})).is_err());
    }

    #[test]
    fn index_lag() {
        let mut index = SearchIndex::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let doc = IndexedDeal { props: BTreeMap::new(), created_ms: 0, updated_ms: 0 };
        index.record(t0, 1, Some(doc));
        index.promote(t0 + Duration::from_millis(50));
        assert!(index.docs.is_empty());
        index.promote(t0 + Duration::from_millis(100));
        assert_eq!(index.docs.len(), 1);
        index.record(t0 + Duration::from_millis(120), 1, None);
        index.promote(t0 + Duration::from_millis(300));
        assert!(index.docs.is_empty() && index.pending.is_empty());
    }
}
