//! The API's description: the OpenAPI 3.1 document (`/openapi.json`), a page to browse it
//! (`/docs`), and `/healthz`.

use super::AppState;
use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use std::sync::{Arc, OnceLock};
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
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

/// Every error an operation can answer, beyond the successes it documents itself.
const ERRORS: &[(&str, &str)] = &[
    ("400", "The request is malformed or invalid; `errors` names the fields"),
    ("401", "No valid credentials"),
    ("403", "The caller's role does not allow this"),
    ("404", "Not found (or not visible to the caller)"),
    ("405", "Method not allowed"),
    ("409", "Already exists, or a request with this Idempotency-Key is in progress"),
    ("412", "The If-Match ETag is no longer current"),
    ("413", "The request body is too large"),
    ("415", "The body is not JSON"),
    ("422", "Cannot be done in the current state"),
    ("429", "Rate limited; see Retry-After"),
    ("500", "Internal error"),
    ("501", "Not implemented yet"),
    ("503", "A dependency is unavailable; retry later"),
    ("504", "Timed out"),
];

/// Adds what every operation shares: bearer authentication (except public routes) and the
/// problem responses.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    for item in doc.paths.paths.values_mut() {
        let operations: [&mut Option<Operation>; 5] =
            [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            for (status, description) in ERRORS {
                operation.responses.responses.entry((*status).to_owned()).or_insert_with(|| {
                    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
                    RefOr::T(
                        ResponseBuilder::new()
                            .description(*description)
                            .content("application/problem+json", content)
                            .build(),
                    )
                });
            }
        }
    }
    doc
}

/// A page to browse this API: self-contained (no CDN), it lists every operation of
/// `/openapi.json`.
#[utoipa::path(get, path = "/docs", operation_id = "getDocs", tag = "health", security(()),
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
async fn page() -> Response {
    let mut response = Html(DOCS_PAGE).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    response
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GoMark API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:960px;padding:0 1rem;color:#1d2430}
h1{margin-bottom:.2rem} .op{border:1px solid #d8dde6;border-radius:6px;margin:.6rem 0;padding:.5rem .8rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}
.get{color:#0b7a3e}.post{color:#1f5fbf}.patch{color:#9a5b00}.put{color:#7a3fbf}.delete{color:#b3261e}
code{background:#f2f4f7;padding:0 .25rem;border-radius:3px} details{margin-top:.3rem} pre{background:#f7f8fa;padding:.6rem;overflow:auto}
</style></head><body>
<h1>GoMark API</h1><p id="about"></p>
<p>The machine-readable description is <a href="/openapi.json"><code>/openapi.json</code></a> (OpenAPI 3.1).</p>
<div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  document.getElementById('about').textContent=doc.info.description||'';
  const ops=document.getElementById('ops'); ops.textContent='';
  for(const [path,item] of Object.entries(doc.paths)){
    for(const m of ['get','post','put','patch','delete']){
      const op=item[m]; if(!op) continue;
      const d=document.createElement('div'); d.className='op';
      const h=document.createElement('div');
      const ms=document.createElement('span'); ms.className='m '+m; ms.textContent=m;
      const p=document.createElement('code'); p.textContent=path;
      h.append(ms,p); d.append(h);
      if(op.description||op.summary){const s=document.createElement('div'); s.textContent=op.summary||op.description; d.append(s);}
      const det=document.createElement('details'); const sum=document.createElement('summary'); sum.textContent='details';
      const pre=document.createElement('pre'); pre.textContent=JSON.stringify({parameters:op.parameters,requestBody:op.requestBody,responses:Object.keys(op.responses)},null,2);
      det.append(sum,pre); d.append(det); ops.append(d);
    }
  }
}).catch(e=>{document.getElementById('ops').textContent='Could not load /openapi.json: '+e});
</script></body></html>"#;
