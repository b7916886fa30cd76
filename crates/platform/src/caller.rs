//! Who is calling, and what they may do: the principal the gateway authenticated, carried
//! to every service in gRPC metadata and checked again there (defence in depth: a service
//! called directly with company A's scope can never touch company B).

use crate::error::{ErrorKind, PublicError};
use std::fmt;
use std::str::FromStr;

pub const ROLE_METADATA_KEY: &str = "x-gomark-role";
pub const SCOPE_METADATA_KEY: &str = "x-gomark-scope";
pub const ACTOR_METADATA_KEY: &str = "x-gomark-actor";

/// Ordered: each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads and changes desired state.
    Operator,
    /// Also manages companies and API keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = PublicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(PublicError::invalid("role", "must be viewer, operator or admin")),
        }
    }
}

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every company.
    Portfolio,
    /// One company only.
    Company(String),
}

impl Scope {
    /// `portfolio` or `company:<id>`.
    pub fn encode(&self) -> String {
        match self {
            Scope::Portfolio => "portfolio".into(),
            Scope::Company(id) => format!("company:{id}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        match s.split_once(':') {
            None if s == "portfolio" => Some(Scope::Portfolio),
            Some(("company", id)) if !id.is_empty() => Some(Scope::Company(id.to_owned())),
            _ => None,
        }
    }

    pub fn covers(&self, company_id: &str) -> bool {
        match self {
            Scope::Portfolio => true,
            Scope::Company(id) => id == company_id,
        }
    }

    /// The one company this scope is limited to, if any.
    pub fn company(&self) -> Option<&str> {
        match self {
            Scope::Portfolio => None,
            Scope::Company(id) => Some(id),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who, as the audit log names them (`apikey:…`, `oidc:…`, `system:…`).
    pub actor: String,
    pub role: Role,
    pub scope: Scope,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} on {})", self.actor, self.role.as_str(), self.scope.encode())
    }
}

impl Caller {
    /// GoMark itself acting (a service calling another, the demo loader): portfolio admin.
    pub fn system(component: &str) -> Self {
        Self { actor: format!("system:{component}"), role: Role::Admin, scope: Scope::Portfolio }
    }

    /// Allowed to act as `role` on `company_id`?
    pub fn require(&self, role: Role, company_id: &str) -> Result<(), PublicError> {
        if !self.scope.covers(company_id) {
            // Not found, not forbidden: a scoped caller learns nothing of other companies.
            return Err(PublicError::not_found(format!("company {company_id}")));
        }
        self.require_role(role)
    }

    /// Like [`Caller::require`], for a company id a request carries: an empty one is a
    /// bad request, not a company.
    pub fn require_company(&self, role: Role, company_id: &str) -> Result<(), PublicError> {
        if company_id.trim().is_empty() {
            return Err(PublicError::invalid("company_id", "is required"));
        }
        self.require(role, company_id)
    }

    /// Allowed to act as `role` across the whole portfolio?
    pub fn require_portfolio(&self, role: Role) -> Result<(), PublicError> {
        if self.scope != Scope::Portfolio {
            return Err(PublicError::new(ErrorKind::PermissionDenied, "this needs a portfolio-wide grant"));
        }
        self.require_role(role)
    }

    pub fn require_role(&self, role: Role) -> Result<(), PublicError> {
        if self.role < role {
            return Err(PublicError::new(
                ErrorKind::PermissionDenied,
                format!("this needs the {} role", role.as_str()),
            ));
        }
        Ok(())
    }

    /// 409 for a `what` (`HubSpot portal 123`) already bound to company `holder`: named when
    /// known and this caller may see that company, "another company" otherwise.
    pub fn already_bound(&self, what: &str, holder: Option<&str>) -> PublicError {
        let holder = match holder {
            Some(id) if self.scope.covers(id) => format!("company {id}"),
            _ => "another company".into(),
        };
        PublicError::new(ErrorKind::AlreadyExists, format!("{what} is already bound to {holder}"))
    }

    /// Writes this caller into outgoing gRPC metadata.
    pub fn to_metadata(&self, md: &mut tonic::metadata::MetadataMap) {
        let mut put = |key: &'static str, value: &str| {
            if let Ok(v) = value.parse() {
                md.insert(key, v);
            }
        };
        put(ACTOR_METADATA_KEY, &self.actor);
        put(ROLE_METADATA_KEY, self.role.as_str());
        put(SCOPE_METADATA_KEY, &self.scope.encode());
    }

    /// Reads the caller a service was called by; a call without one is unauthenticated.
    pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> Result<Self, PublicError> {
        let get = |key: &str| md.get(key).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        let unauthenticated = || PublicError::new(ErrorKind::Unauthenticated, "the call carries no valid caller");
        let role = get(ROLE_METADATA_KEY).and_then(|r| r.parse().ok()).ok_or_else(unauthenticated)?;
        let scope = get(SCOPE_METADATA_KEY).and_then(Scope::decode).ok_or_else(unauthenticated)?;
        let actor = get(ACTOR_METADATA_KEY).ok_or_else(unauthenticated)?.chars().take(200).collect();
        Ok(Self { actor, role, scope })
    }

    /// A gRPC request carrying this caller.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        self.to_metadata(req.metadata_mut());
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, scope: Scope) -> Caller {
        Caller { actor: "apikey:test".into(), role, scope }
    }

    #[test]
    fn a_company_scope_covers_only_its_company() {
        let a = caller(Role::Admin, Scope::Company("a".into()));
        assert!(a.require(Role::Admin, "a").is_ok());
        assert_eq!(a.require(Role::Viewer, "b").map_err(|e| e.kind), Err(ErrorKind::NotFound));
        assert_eq!(a.require_portfolio(Role::Viewer).map_err(|e| e.kind), Err(ErrorKind::PermissionDenied));
    }

    #[test]
    fn roles_are_ordered() {
        let viewer = caller(Role::Viewer, Scope::Portfolio);
        assert!(viewer.require(Role::Viewer, "x").is_ok());
        assert_eq!(viewer.require(Role::Operator, "x").map_err(|e| e.kind), Err(ErrorKind::PermissionDenied));
        assert!(caller(Role::Operator, Scope::Portfolio).require(Role::Operator, "x").is_ok());
    }

    #[test]
    fn metadata_round_trip_and_missing_is_unauthenticated() {
        let c = caller(Role::Operator, Scope::Company("c1".into()));
        let mut md = tonic::metadata::MetadataMap::new();
        c.to_metadata(&mut md);
        assert_eq!(Caller::from_metadata(&md), Ok(c));
        let empty = tonic::metadata::MetadataMap::new();
        assert_eq!(Caller::from_metadata(&empty).map_err(|e| e.kind), Err(ErrorKind::Unauthenticated));
        let mut forged = tonic::metadata::MetadataMap::new();
        forged.insert(ROLE_METADATA_KEY, "root".parse().expect("ascii"));
        assert_eq!(Caller::from_metadata(&forged).map_err(|e| e.kind), Err(ErrorKind::Unauthenticated));
    }
}
