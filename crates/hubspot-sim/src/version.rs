//! HubSpot API versions the simulator serves, and what differs between them.
//!
//! Every CRM router is mounted once per version (`/crm/v3/properties/…`,
//! `/crm/properties/2026-03/…`, `/crm/properties/2026-09/…`, …) with the version attached to
//! the request as an extension, so one handler serves all versions and asks the version what
//! it must enforce. The differences (CONTRACT.md "Versioning" and the 2026 section):
//!
//! | rule | v3 | 2026-03 | 2026-09 |
//! |---|---|---|---|
//! | property `options[].displayOrder` required on create/update | no | yes | yes |
//! | pipeline/stage delete-safety checks (`validateReferencesBeforeDelete`, `validateDealStageUsagesBeforeDelete`) | off unless `=true` | off unless `=true` | **on unless `=false`** |
//! | portal validation rules enforced on record writes (`VALIDATION_ERROR`) | no | no | **yes** |
//! | Pipeline Rules API (`/crm/pipelines-rules/2026-09-beta/…`) served, its rules enforced on deal writes | no (404) | no (404) | **yes** |
//!
//! Responses have the same shape in every version (stages always carry `writePermissions`).

/// One served API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiVersion {
    /// The numbered `v3` (`v4` for associations) paths.
    V3,
    /// `2026-03`.
    V2026_03,
    /// `2026-09`, the current stable version.
    V2026_09,
}

impl ApiVersion {
    /// Every version served, oldest first.
    pub const ALL: [ApiVersion; 3] = [ApiVersion::V3, ApiVersion::V2026_03, ApiVersion::V2026_09];

    /// The date versions (`2026-03`, `2026-09`).
    pub const DATED: [ApiVersion; 2] = [ApiVersion::V2026_03, ApiVersion::V2026_09];

    /// The path segment: `v3`, `2026-03` or `2026-09`.
    pub fn segment(self) -> &'static str {
        match self {
            Self::V3 => "v3",
            Self::V2026_03 => "2026-03",
            Self::V2026_09 => "2026-09",
        }
    }

    /// Whether enumeration option inputs must carry `displayOrder` (2026-03 and later).
    pub fn option_display_order_required(self) -> bool {
        self >= Self::V2026_03
    }

    /// Whether pipeline and stage deletes are validated unless the caller opts out (2026-09).
    pub fn delete_safety_by_default(self) -> bool {
        self >= Self::V2026_09
    }

    /// Whether the portal's validation rules are enforced on record writes (2026-09).
    pub fn enforces_write_validation(self) -> bool {
        self >= Self::V2026_09
    }
}

tokio::task_local! {
    static CURRENT: ApiVersion;
}

/// Runs `future` (a request's handler) as a request to `version`.
pub(crate) async fn scope<F: std::future::Future>(version: ApiVersion, future: F) -> F::Output {
    CURRENT.scope(version, future).await
}

/// The version of the request being handled; `None` outside a request (library calls).
pub(crate) fn current() -> Option<ApiVersion> {
    CURRENT.try_with(|v| *v).ok()
}

/// Axum middleware: runs the rest of the request inside [`scope`] so portal code deep in a
/// write can ask which version's rules apply.
pub(crate) async fn layer(
    axum::extract::State(version): axum::extract::State<ApiVersion>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    scope(version, next.run(request)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences() {
        assert!(!ApiVersion::V3.option_display_order_required());
        assert!(ApiVersion::V2026_03.option_display_order_required());
        assert!(!ApiVersion::V2026_03.delete_safety_by_default());
        assert!(ApiVersion::V2026_09.delete_safety_by_default());
        assert!(ApiVersion::V2026_09.enforces_write_validation());
        assert_eq!(ApiVersion::ALL.map(ApiVersion::segment), ["v3", "2026-03", "2026-09"]);
    }
}
