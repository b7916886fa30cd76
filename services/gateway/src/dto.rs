//! The REST API's JSON shapes (camelCase, HubSpot's own names for property fields) and
//! their mapping to and from the gRPC contracts.

use gomark_proto::common::v1::Company;
use gomark_proto::config::v1 as config_pb;
use gomark_proto::config::v1::PropertyOption;
use gomark_proto::orchestrator::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanyCreate {
    pub name: String,
    pub hubspot_portal_id: String,
    /// Write-only: handed to hubspot-sync, never returned.
    pub hubspot_token: String,
    /// What `hubspotToken` is (default `privateApp`).
    #[serde(default)]
    pub hubspot_token_kind: TokenKindDto,
    /// Write-only, optional: the app's client credentials, to read the portal's webhooks
    /// journal (the change feed for portals on a service key, which gets no push webhooks).
    #[serde(default)]
    pub hubspot_journal: Option<ClientCredentialsDto>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TokenKindDto {
    #[default]
    PrivateApp,
    ServiceKey,
}

impl From<TokenKindDto> for gomark_proto::common::v1::TokenKind {
    fn from(k: TokenKindDto) -> Self {
        match k {
            TokenKindDto::PrivateApp => Self::PrivateApp,
            TokenKindDto::ServiceKey => Self::ServiceKey,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCredentialsDto {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for ClientCredentialsDto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientCredentials(client_id={}, ***)", self.client_id)
    }
}

impl From<ClientCredentialsDto> for gomark_proto::common::v1::ClientCredentials {
    fn from(c: ClientCredentialsDto) -> Self {
        Self { client_id: c.client_id, client_secret: c.client_secret }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompanyView {
    pub id: String,
    pub name: String,
    pub hubspot_portal_id: String,
    pub created_at: String,
}

impl From<Company> for CompanyView {
    fn from(c: Company) -> Self {
        Self { id: c.id, name: c.name, hubspot_portal_id: c.hubspot_portal_id, created_at: rfc3339(c.created_at) }
    }
}

/// One page of a list; pass `nextCursor` back as `cursor` for the next one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, next: String) -> Self {
        Self { items, next_cursor: (!next.is_empty()).then_some(next) }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn to_proto(&self) -> crate::problem::ApiResult<gomark_proto::common::v1::PageRequest> {
        if self.limit.is_some_and(|l| !(1..=500).contains(&l)) {
            return Err(crate::problem::Problem::invalid("limit", "must be between 1 and 500"));
        }
        Ok(gomark_proto::common::v1::PageRequest {
            page_size: self.limit.unwrap_or(0),
            page_token: self.cursor.clone().unwrap_or_default(),
        })
    }
}

impl PageQuery {
    /// The page size asked for, checked; 50 when none is given.
    pub fn size(&self) -> crate::problem::ApiResult<usize> {
        match self.limit {
            None => Ok(50),
            Some(l @ 1..=500) => Ok(l as usize),
            Some(_) => Err(crate::problem::Problem::invalid("limit", "must be between 1 and 500")),
        }
    }

    /// The key the cursor stands for: cursors are hex so that callers treat them as opaque.
    pub fn after(&self) -> crate::problem::ApiResult<Option<String>> {
        let Some(cursor) = self.cursor.as_deref().filter(|c| !c.is_empty()) else { return Ok(None) };
        hex::decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Some)
            .ok_or_else(|| crate::problem::Problem::invalid("cursor", "is not a cursor this API returned"))
    }

    /// A page of `items`, which arrive whole and are ordered by `key` here: for lists a
    /// service returns in one piece because they are small by nature (a company's deal
    /// properties), with the same `limit`/`cursor` contract as every other list.
    pub fn page_of<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> &str) -> crate::problem::ApiResult<Page<T>> {
        let size = self.size()?;
        let after = self.after()?;
        items.sort_by(|a, b| key(a).cmp(key(b)));
        let mut rest: Vec<T> =
            items.into_iter().filter(|item| after.as_deref().is_none_or(|a| key(item) > a)).collect();
        let more = rest.len() > size;
        rest.truncate(size);
        let next = match rest.last() {
            Some(last) if more => hex::encode(key(last)),
            _ => String::new(),
        };
        Ok(Page::new(rest, next))
    }
}

/// Audit listings: a page, optionally narrowed.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this actor's entries (`apikey:…`, `oidc:…`, `system:…`).
    pub actor: Option<String>,
    /// Only entries at or after this instant (RFC 3339).
    pub from: Option<String>,
    /// Only entries at or before this instant (RFC 3339).
    pub to: Option<String>,
    /// Only entries about resources starting with this (`deal_property/`, `rollout/`).
    pub resource: Option<String>,
    /// Only entries with exactly this action (`rollout.start`, `deal_property.create`).
    pub action: Option<String>,
}

impl AuditQuery {
    pub fn to_proto(&self, company_id: String) -> crate::problem::ApiResult<pb::ListAuditEntriesRequest> {
        Ok(pb::ListAuditEntriesRequest {
            company_id,
            page: Some(PageQuery { limit: self.limit, cursor: self.cursor.clone() }.to_proto()?),
            actor: self.actor.clone().unwrap_or_default(),
            resource_prefix: self.resource.clone().unwrap_or_default(),
            action: self.action.clone().unwrap_or_default(),
            from: self.from.as_deref().map(|t| instant("from", t)).transpose()?,
            to: self.to.as_deref().map(|t| instant("to", t)).transpose()?,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptionDto {
    pub label: String,
    pub value: String,
    /// Its place in the list; its position when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
    #[serde(default)]
    pub hidden: bool,
}

impl OptionDto {
    pub fn to_proto(&self) -> PropertyOption {
        PropertyOption {
            label: self.label.clone(),
            value: self.value.clone(),
            display_order: self.display_order,
            hidden: self.hidden,
        }
    }

    pub fn from_proto(o: PropertyOption) -> Self {
        Self { label: o.label, value: o.value, display_order: o.display_order, hidden: o.hidden }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyCreateDto {
    /// Internal name, immutable once created.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,99}$")]
    pub name: String,
    #[schema(min_length = 1, max_length = 400)]
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub field_type: String,
    pub group_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub options: Vec<OptionDto>,
    /// Values must be unique; HubSpot cannot change this later.
    #[serde(default)]
    pub has_unique_value: bool,
}

impl PropertyCreateDto {
    pub fn to_proto(&self) -> config_pb::DealProperty {
        config_pb::DealProperty {
            name: self.name.clone(),
            label: self.label.clone(),
            r#type: self.kind.clone(),
            field_type: self.field_type.clone(),
            group_name: self.group_name.clone(),
            description: (!self.description.is_empty()).then(|| self.description.clone()),
            options: self.options.iter().map(OptionDto::to_proto).collect(),
            has_unique_value: self.has_unique_value,
        }
    }
}

/// A partial update; `name` may be sent only unchanged (internal names are immutable).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyPatchDto {
    pub name: Option<String>,
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub field_type: Option<String>,
    pub group_name: Option<String>,
    pub description: Option<String>,
    pub options: Option<Vec<OptionDto>>,
}

/// Where a declared property stands with the portal.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncStateDto {
    /// Declared; the company's portal has not been brought to it yet.
    Pending,
    Applied,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncDto {
    /// `applied` once the revision last applied to the company holds this definition;
    /// `failed` when the company's last rollout step failed; `pending` in between.
    pub state: SyncStateDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PropertyView {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub field_type: String,
    pub group_name: String,
    pub description: String,
    pub options: Vec<OptionDto>,
    pub has_unique_value: bool,
    /// A baseline property this company's overlay removes (archived in the portal).
    pub archived: bool,
    /// The configuration revision this view was read from.
    pub revision: i64,
    /// The definition's ETag (also the `ETag` header): send it as `If-Match` to update.
    pub etag: String,
    pub sync: SyncDto,
    /// After a change: the rollout applying it to the portal (`/v1/rollouts/{rolloutId}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
}

impl From<pb::DealProperty> for PropertyView {
    fn from(p: pb::DealProperty) -> Self {
        let spec = p.spec.unwrap_or_default();
        let state = match pb::SyncState::try_from(p.sync_state) {
            Ok(pb::SyncState::Applied) => SyncStateDto::Applied,
            Ok(pb::SyncState::Failed) => SyncStateDto::Failed,
            _ => SyncStateDto::Pending,
        };
        Self {
            name: spec.name,
            label: spec.label,
            kind: spec.r#type,
            field_type: spec.field_type,
            group_name: spec.group_name,
            description: spec.description.unwrap_or_default(),
            options: spec.options.into_iter().map(OptionDto::from_proto).collect(),
            has_unique_value: spec.has_unique_value,
            archived: p.archived,
            revision: p.revision,
            etag: p.etag,
            sync: SyncDto { state, error: (!p.sync_error.is_empty()).then_some(p.sync_error) },
            rollout_id: (!p.rollout_id.is_empty()).then_some(p.rollout_id),
        }
    }
}

/// One field a planned action sets.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldChangeView {
    pub field: String,
    /// The field's value before: any JSON value (a string, number, list…); null for a create.
    pub before: serde_json::Value,
    /// The field's value after: any JSON value; null for a removal.
    pub after: serde_json::Value,
}

/// One action of a plan, as the service that owns the vendor computed it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionView {
    /// Names the action in a saved plan: applying the plan performs only these.
    pub id: String,
    /// `property_group`, `deal_property`, `pipeline`, `stage`, `validation_rule`,
    /// `stage_deals` (a removed stage's deals, moved) or `cadence`
    pub target_kind: String,
    pub target: String,
    /// `create`, `update` or `archive`
    pub op: String,
    pub changes: Vec<FieldChangeView>,
    /// Set when the vendor cannot do this; it is never applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_alternative: Option<String>,
    /// What applying it would start to break elsewhere (e.g. a validation rule HubSpot
    /// would refuse GoMark's or an integration's deal writes with); it is applied all the same.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<WarningView>,
}

/// A consequence of an action a person should know before applying it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarningView {
    /// Stable, for machines: `rule_rejects_writes`.
    pub code: String,
    pub message: String,
}

impl From<config_pb::PlannedAction> for ActionView {
    fn from(a: config_pb::PlannedAction) -> Self {
        let json =
            |v: Option<prost_types::Value>| v.as_ref().map_or(serde_json::Value::Null, gomark_proto::json::from_value);
        let op = match a.op() {
            config_pb::Op::Create => "create",
            config_pb::Op::Update => "update",
            config_pb::Op::Archive => "archive",
            config_pb::Op::Unspecified => "unspecified",
        };
        Self {
            id: a.id,
            target_kind: a.target_kind,
            target: a.target,
            op: op.to_owned(),
            changes: a
                .changes
                .into_iter()
                .map(|c| FieldChangeView { field: c.field, before: json(c.before), after: json(c.after) })
                .collect(),
            blocked: a.blocked.as_ref().map(|b| b.reason.clone()),
            safe_alternative: a.blocked.map(|b| b.safe_alternative),
            warnings: a.warnings.into_iter().map(|w| WarningView { code: w.code, message: w.message }).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    /// The resource before the change; null when it did not exist.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The resource after the change; null when it was removed.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    pub at: String,
}

impl From<pb::AuditEntry> for AuditEntryView {
    fn from(e: pb::AuditEntry) -> Self {
        Self {
            id: e.id,
            actor: e.actor,
            action: e.action,
            resource: e.resource,
            before: e.before.as_ref().map(gomark_proto::json::from_value),
            after: e.after.as_ref().map(gomark_proto::json::from_value),
            at: rfc3339(e.at),
        }
    }
}

/// One server-sent event as a stream route documents it: `event` names it, `data` holds
/// its JSON (one line).
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerSentEvent {
    pub event: String,
    pub data: String,
}

/// A REST instant (RFC 3339) as the services' Timestamp; `field` names it in the problem.
pub fn instant(field: &str, text: &str) -> crate::problem::ApiResult<gomark_proto::Timestamp> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| gomark_proto::time::timestamp(t.timestamp_millis()))
        .map_err(|_| crate::problem::Problem::invalid(field, "must be an RFC 3339 instant, e.g. 2026-11-21T10:00:00Z"))
}

/// An optional instant as RFC 3339, none when the service left it unset.
pub fn rfc3339_opt(ts: Option<gomark_proto::Timestamp>) -> Option<String> {
    ts.map(|t| rfc3339(Some(t)))
}

pub fn rfc3339(ts: Option<gomark_proto::Timestamp>) -> String {
    let ts = ts.unwrap_or_default();
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod page_tests {
    use super::PageQuery;

    fn query(limit: Option<u32>, cursor: Option<String>) -> PageQuery {
        PageQuery { limit, cursor }
    }

    #[test]
    fn a_whole_list_is_paged_by_key_with_opaque_cursors() {
        let items = vec!["delta", "alpha", "charlie", "echo", "bravo"];
        let first = query(Some(2), None).page_of(items.clone(), |s| s).expect("page");
        assert_eq!(first.items, ["alpha", "bravo"]);
        let cursor = first.next_cursor.expect("more follow");
        assert!(!cursor.contains("bravo"), "opaque: {cursor}");
        let second = query(Some(2), Some(cursor)).page_of(items.clone(), |s| s).expect("page");
        assert_eq!(second.items, ["charlie", "delta"]);
        let third = query(Some(2), second.next_cursor).page_of(items.clone(), |s| s).expect("page");
        assert_eq!(third.items, ["echo"]);
        assert!(third.next_cursor.is_none(), "the last page says so");
        let all = query(None, None).page_of(items.clone(), |s| s).expect("page");
        assert_eq!((all.items.len(), all.next_cursor), (5, None), "50 by default");
    }

    #[test]
    fn bad_limits_and_cursors_are_refused() {
        for bad in [query(Some(0), None), query(Some(501), None), query(None, Some("zz".into()))] {
            let Err(refused) = bad.page_of(vec!["a"], |s| s) else { panic!("accepted {:?}", bad.limit) };
            assert_eq!(refused.status, 400);
        }
    }
}
