//! The API's description: the OpenAPI 3.1 document (`/openapi.json`), a page to browse it
//! (`/docs`), and `/healthz`.

use super::AppState;
use super::assets::Assets;
use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use std::sync::{Arc, OnceLock};
use utoipa::OpenApi;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response as DocResponse, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "GoMark API", description = "GoMark, the go-to-market control plane of a software portfolio. \
        Authenticate with `Authorization: Bearer <API key or OIDC token>`. Errors are RFC 9457 problem documents."),
    tags(
        (name = "companies", description = "The portfolio's companies"),
        (name = "deal-properties", description = "Desired HubSpot deal properties, applied asynchronously"),
        (name = "audit", description = "Who changed what, when, before and after"),
        (name = "config", description = "GTM configuration as code: revisions, diff, rollback, plan"),
        (name = "drift", description = "Changes made by hand in the portals, and how each company's policy handled them"),
        (name = "rollouts", description = "Applying a revision across the portfolio: durable, resumable, observable"),
        (name = "hubspot", description = "What GoMark sees of each portal: sync status, observed configuration"),
        (name = "upsell", description = "The upsell engine (dry run, runs, recorded decisions) and each company's Upso account"),
        (name = "api-keys", description = "Credentials for scripts"),
        (name = "legacy", description = "The previous GoMark's routes, kept for old callers"),
        (name = "webhooks", description = "Inbound HubSpot webhooks (signature-checked, no bearer token)"),
        (name = "health", description = "Liveness"),
    ),
    components(schemas(crate::problem::Problem, crate::problem::FieldError))
)]
struct ApiDoc;

pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(openapi_json)).routes(routes!(page))
}

/// The finished document, built once (it is the same for every gateway).
pub fn document() -> Arc<utoipa::openapi::OpenApi> {
    static DOC: OnceLock<Arc<utoipa::openapi::OpenApi>> = OnceLock::new();
    DOC.get_or_init(|| Arc::new(super::documented().1)).clone()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "getOpenApiDocument", tag = "health", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object)))]
async fn openapi_json() -> Json<Arc<utoipa::openapi::OpenApi>> {
    Json(document())
}

/// Liveness of the gateway's HTTP server.
#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "health", security(()),
    responses((status = 200, description = "Up", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// What an error status means, wherever it is documented.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed or invalid; `errors` names the fields",
        401 => "No valid credentials",
        403 => "The caller's role or scope does not allow this",
        404 => "Not found (or not visible to the caller)",
        409 => "Already exists, or a request with this Idempotency-Key is in progress",
        412 => "The resource changed since it was read (If-Match ETag no longer current)",
        413 => "The request body is too large",
        415 => "The body is not JSON",
        422 => "Cannot be done in the current state",
        429 => "Rate limited; see Retry-After",
        500 => "Internal error",
        501 => "Not implemented",
        503 => "A dependency is unavailable; retry later",
        504 => "Timed out",
        _ => "Error",
    }
}

/// What the document says about an operation that decides which errors it can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `GET` (reads) or not.
    pub read: bool,
    pub post: bool,
    /// Needs a bearer token (everything but the public routes).
    pub authenticated: bool,
    /// Has a path parameter naming a resource.
    pub resource_id: bool,
    /// Has any parameter or a body the gateway decodes.
    pub input: bool,
    /// Has a JSON body that `extract::ApiJson` decodes: every authenticated body. (The
    /// webhook reads its body as the raw bytes HubSpot signed, whatever the content type.)
    pub json_body: bool,
    pub if_match: bool,
}

/// The errors an operation answers, from its facts; handlers declare the rest (a role
/// check on a read, a state conflict) in their own `responses(...)`.
pub fn errors(f: Facts) -> Vec<u16> {
    let mut statuses = Vec::new();
    // ApiPath / ApiQuery / ApiJson / header checks refuse what they cannot decode.
    if f.input {
        statuses.push(400);
    }
    // `auth::require_caller`: no credentials, then the per-key rate limit.
    if f.authenticated {
        statuses.push(401);
    }
    // Every service checks the caller's role before a write.
    if f.authenticated && !f.read {
        statuses.push(403);
    }
    if f.resource_id {
        statuses.push(404);
    }
    // `idempotency::replay_or_record`: a repeated Idempotency-Key still in progress (409)
    // or used for another request (422).
    if f.authenticated && f.post {
        statuses.extend([409, 422]);
    }
    if f.if_match {
        statuses.push(412);
    }
    // `extract::ApiJson` and the body limit.
    if f.json_body {
        statuses.extend([413, 415]);
    }
    if f.authenticated {
        statuses.push(429);
    }
    // Anywhere: a bug, a service down, the request deadline.
    statuses.extend([500, 503, 504]);
    statuses.sort_unstable();
    statuses
}

/// The facts of one operation, as documented.
pub fn facts(method: &str, path: &str, operation: &Operation) -> Facts {
    let parameters: Vec<&Parameter> = operation
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some(p),
            RefOr::Ref(_) => None,
        })
        .collect();
    let public = operation.security.as_ref().is_some_and(|requirements| {
        requirements.iter().all(|r| serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty())))
    });
    let json_body = operation.request_body.as_ref().is_some_and(|b| match b {
        RefOr::T(body) => body.content.keys().any(|c| c.contains("json")),
        RefOr::Ref(_) => true,
    });
    Facts {
        read: method == "get",
        post: method == "post",
        authenticated: !public,
        resource_id: path.contains('{'),
        input: !parameters.is_empty() || operation.request_body.is_some(),
        json_body: !public && json_body,
        if_match: parameters
            .iter()
            .any(|p| p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case("if-match")),
    }
}

/// Every operation with its method, in document order.
pub fn operations(doc: &mut utoipa::openapi::OpenApi) -> Vec<(String, &'static str, &mut Operation)> {
    let mut all = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations: [(&'static str, &mut Option<Operation>); 5] = [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation.as_mut() {
                all.push((path.clone(), method, operation));
            }
        }
    }
    all
}

fn problem_response(description: &str) -> RefOr<DocResponse> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/problem+json", content).build())
}

fn header(description: &str, schema: Type) -> RefOr<Header> {
    RefOr::T(
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(schema)))
            .description(Some(description))
            .build(),
    )
}

/// The rate-limit headers of an authenticated response (`limits::Quota::annotate`).
fn rate_limit_headers(response: &mut DocResponse) {
    let headers = [
        ("RateLimit-Limit", "Requests allowed per window", Type::Integer),
        ("RateLimit-Remaining", "Requests left in this window", Type::Integer),
        ("RateLimit-Reset", "Seconds until the window resets", Type::Integer),
        ("RateLimit-Policy", "The quota policy, e.g. `100;w=60` (100 requests per 60 s)", Type::String),
    ];
    for (name, description, schema) in headers {
        response.headers.entry(name.to_owned()).or_insert_with(|| header(description, schema));
    }
}

/// Adds what operations share: bearer authentication (except public routes), the problem
/// responses each operation can answer (see [`errors`]), and the rate-limit headers.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    for (path, method, operation) in operations(&mut doc) {
        let facts = facts(method, &path, operation);
        let responses = &mut operation.responses.responses;
        for status in errors(facts) {
            responses.entry(status.to_string()).or_insert_with(|| problem_response(error_description(status)));
        }
        for (status, response) in responses.iter_mut() {
            let RefOr::T(response) = response else { continue };
            let code = status.parse::<u16>().unwrap_or(0);
            // A handler's declared extra error: the problem body, like every other error.
            if code >= 400 && response.content.is_empty() {
                let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
                response.content.insert("application/problem+json".to_owned(), RefOr::T(content));
            }
            if code == 429 {
                response
                    .headers
                    .entry("Retry-After".to_owned())
                    .or_insert_with(|| header("Seconds until a retry may succeed", Type::Integer));
            }
            if facts.authenticated && code != 401 && code != 429 {
                rate_limit_headers(response);
            }
        }
    }
    doc
}

/// A page to browse and try this API: Swagger UI on `/openapi.json`, with "Authorize" for
/// the bearer token. Its assets are compiled in (see `assets/README.md`): no CDN.
#[utoipa::path(get, path = "/docs", operation_id = "getDocs", tag = "health", security(()),
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
async fn page() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let html = PAGE.get_or_init(|| DOCS_PAGE.replace("{version}", ASSETS.version()));
    let mut response = Html(html.as_str()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
    // The page is tiny and names the current assets: always revalidated.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Everything from this origin only. Images also from `data:` URIs: Swagger UI's
/// stylesheet draws its icons with them (they load nothing from anywhere).
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GoMark API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css?v={version}">
</head><body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js?v={version}"></script>
<script src="/docs/assets/gomark-init.js?v={version}"></script>
</body></html>"#;

/// The files under `/docs/assets/`, with their content types.
static ASSETS: Assets = Assets::new(&[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    ("swagger-ui.css", "text/css; charset=utf-8", include_bytes!("../../assets/swagger-ui/swagger-ui.css")),
    ("gomark-init.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/swagger-ui/gomark-init.js")),
    ("LICENSE", "text/plain; charset=utf-8", include_bytes!("../../assets/swagger-ui/LICENSE")),
    ("NOTICE", "text/plain; charset=utf-8", include_bytes!("../../assets/swagger-ui/NOTICE")),
    (
        "swagger-ui-bundle.js.LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js.LICENSE.txt"),
    ),
]);

/// `GET /docs/assets/{file}`: public, cached for a year. Not part of the API document.
pub async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    ASSETS.serve(&file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// operationId → (method, path, documented error statuses).
    fn error_statuses(doc: &mut utoipa::openapi::OpenApi) -> BTreeMap<String, (String, BTreeSet<u16>)> {
        operations(doc)
            .into_iter()
            .map(|(path, method, op)| {
                let statuses = op.responses.responses.keys().filter_map(|s| s.parse().ok()).filter(|s| *s >= 400);
                (op.operation_id.clone().unwrap_or_default(), (format!("{method} {path}"), statuses.collect()))
            })
            .collect()
    }

    fn is_camel(name: &str) -> bool {
        name.starts_with(|c: char| c.is_ascii_lowercase()) && name.chars().all(|c| c.is_ascii_alphanumeric())
    }

    #[test]
    fn operation_ids_are_present_camel_case_and_unique() {
        let mut doc = (*document()).clone();
        let mut seen = BTreeSet::new();
        let all = operations(&mut doc);
        assert!(all.len() >= 50, "{} operations", all.len());
        for (path, method, op) in all {
            let id = op.operation_id.clone().unwrap_or_default();
            assert!(is_camel(&id), "{method} {path}: operationId {id:?}");
            assert!(seen.insert(id.clone()), "operationId {id} is used twice");
        }
    }

    #[test]
    fn path_parameters_are_camel_case_and_documented() {
        let mut doc = (*document()).clone();
        for (path, method, op) in operations(&mut doc) {
            let in_path: BTreeSet<String> = path
                .split('{')
                .skip(1)
                .filter_map(|rest| rest.split_once('}'))
                .map(|(name, _)| name.to_owned())
                .collect();
            let documented: BTreeSet<String> = op
                .parameters
                .iter()
                .flatten()
                .filter_map(|p| match p {
                    RefOr::T(p) if p.parameter_in == ParameterIn::Path => Some(p.name.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(in_path, documented, "{method} {path}");
            for name in &in_path {
                assert!(is_camel(name), "{method} {path}: path parameter {name}");
                // An id parameter names its resource: `{companyId}`, never a bare `{id}`.
                assert_ne!(name, "id", "{method} {path}");
            }
        }
    }

    #[test]
    fn query_parameters_are_camel_case() {
        let mut doc = (*document()).clone();
        let mut checked = 0;
        for (path, method, op) in operations(&mut doc) {
            for param in op.parameters.iter().flatten() {
                if let RefOr::T(p) = param
                    && p.parameter_in == ParameterIn::Query
                {
                    assert!(is_camel(&p.name), "{method} {path}: query parameter {}", p.name);
                    checked += 1;
                }
            }
        }
        // Paging, filters and the like: enough that the check looked at something.
        assert!(checked >= 20, "only {checked} query parameters documented");
    }

    #[test]
    fn each_operation_documents_what_the_rule_and_its_handler_say() {
        let (_, mut declared) = super::super::declared();
        let mut finished = (*document()).clone();
        let declared_errors = error_statuses(&mut declared);
        let finished_errors = error_statuses(&mut finished);
        let facts_by_id: BTreeMap<String, Facts> = operations(&mut declared)
            .into_iter()
            .map(|(path, method, op)| (op.operation_id.clone().unwrap_or_default(), facts(method, &path, op)))
            .collect();
        for (id, (what, errors_documented)) in &finished_errors {
            let mut expected: BTreeSet<u16> = errors(facts_by_id[id]).into_iter().collect();
            expected.extend(&declared_errors[id].1);
            assert_eq!(errors_documented, &expected, "{id} ({what})");
        }
    }

    /// The rule itself, pinned on operations whose handlers were read.
    #[test]
    fn the_rule_matches_the_handlers() {
        let mut doc = (*document()).clone();
        let errors = error_statuses(&mut doc);
        let of = |id: &str| errors.get(id).map(|(_, s)| s.iter().copied().collect::<Vec<u16>>()).unwrap_or_default();
        // Public, no input: only what can happen anywhere.
        assert_eq!(of("getHealth"), [500, 503, 504]);
        assert_eq!(of("getDocs"), [500, 503, 504]);
        // A read by id: no role check (wrong company is 404), no body.
        assert_eq!(of("getCompany"), [400, 401, 404, 429, 500, 503, 504]);
        // A list without an id: nothing to be missing.
        assert_eq!(of("listCompanies"), [400, 401, 429, 500, 503, 504]);
        // A create with a body under a company.
        assert_eq!(of("createDealProperty"), [400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 500, 503, 504]);
        // An update with If-Match.
        assert_eq!(of("updateDealProperty"), [400, 401, 403, 404, 412, 413, 415, 429, 500, 503, 504]);
        // Reads with a role check the handler declares.
        assert!(of("listApiKeys").contains(&403));
        assert!(of("getRollout").contains(&403));
        // The webhook: its signature is its authentication; its body is raw signed bytes.
        assert_eq!(of("receiveHubspotWebhook"), [400, 401, 500, 503, 504]);
    }

    #[test]
    fn authenticated_responses_document_the_rate_limit_headers() {
        let mut doc = (*document()).clone();
        for (path, method, op) in operations(&mut doc) {
            let authenticated = facts(method, &path, op).authenticated;
            for (status, response) in &op.responses.responses {
                let RefOr::T(response) = response else { continue };
                let has_policy = response.headers.contains_key("RateLimit-Policy");
                let expected = authenticated && status != "401" && status != "429";
                assert_eq!(has_policy, expected, "{method} {path} {status}");
                if expected {
                    assert!(response.headers.contains_key("RateLimit-Reset"), "{method} {path} {status}");
                }
                if status == "429" {
                    assert!(response.headers.contains_key("Retry-After"), "{method} {path}");
                }
                if status.starts_with(['4', '5']) {
                    assert!(response.content.contains_key("application/problem+json"), "{method} {path} {status}");
                }
            }
        }
    }

    #[tokio::test]
    async fn assets_are_served_with_their_types_and_a_long_cache() {
        let response = asset(axum::extract::Path("swagger-ui-bundle.js".to_owned())).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(response.headers()[header::CACHE_CONTROL].to_str().unwrap_or_default().contains("max-age=31536000"));
        let css = asset(axum::extract::Path("swagger-ui.css".to_owned())).await;
        assert_eq!(css.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
        let missing = asset(axum::extract::Path("../Cargo.toml".to_owned())).await;
        assert_eq!(missing.status(), 404);
    }

    #[tokio::test]
    async fn the_page_loads_only_its_own_assets() {
        let response = page().await;
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap_or_default().to_owned();
        assert!(!csp.contains("http") && !csp.contains("unsafe") && !csp.contains('*'), "{csp}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let html = String::from_utf8_lossy(&body);
        assert!(!html.contains("http"), "no other origin: {html}");
        for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "gomark-init.js"] {
            assert!(html.contains(&format!("/docs/assets/{asset}?v={}", ASSETS.version())), "{asset}: {html}");
        }
        let init = ASSETS
            .files()
            .iter()
            .find(|(name, _, _)| *name == "gomark-init.js")
            .map(|(_, _, b)| *b)
            .unwrap_or_default();
        let init = String::from_utf8_lossy(init);
        assert!(init.contains("persistAuthorization: true") && init.contains("\"/openapi.json\""), "{init}");
    }
}
