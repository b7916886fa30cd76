//! `/dashboard`: a self-contained page (no CDN): the portfolio table and each company's
//! funnel, updating live from the funnel event streams; trend lines with the configuration
//! revisions and rollouts drawn on the same time axis; the waterfall between two dates; the
//! benchmark table (each company against the portfolio's percentile bands); and
//! an operator console (rollouts with live progress, drift with its diffs, the audit log).
//!
//! The page holds no data; it reads the API with the key the user gives it (kept in this
//! tab only). Its script, stylesheet and chart library (uPlot, vendored: see
//! `assets/README.md`) are compiled into the gateway and served under `/dashboard/assets/`,
//! so the Content-Security-Policy allows scripts and styles from this origin only.

use super::AppState;
use super::assets::Assets;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use std::sync::OnceLock;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(page))
}

/// The live funnel dashboard and operator console (HTML). Give it an API key in the page,
/// or as `/dashboard#key=…` (a fragment never reaches the server or its logs).
#[utoipa::path(get, path = "/dashboard", operation_id = "getDashboard", tag = "funnels", security(()),
    responses((status = 200, description = "HTML", content_type = "text/html", body = String)))]
async fn page() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let html = PAGE.get_or_init(|| DASHBOARD_PAGE.replace("{version}", ASSETS.version()));
    let mut response = Html(html.as_str()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DASHBOARD_CSP));
    // The page is small and names the current assets: always revalidated.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// This origin only, nothing inline: the script sets styles through the CSSOM
/// (`element.style`), which the policy does not restrict.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

const DASHBOARD_PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GoMark · live funnels</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="stylesheet" href="/dashboard/assets/uPlot.min.css?v={version}">
<link rel="stylesheet" href="/dashboard/assets/dashboard.css?v={version}">
</head><body>
<header><h1>GoMark · live sales funnels</h1>
<span id="currency"></span>
<input id="key" type="password" placeholder="API key (gmk_…)" autocomplete="off"><button id="connect">Connect</button>
<span id="status">not connected</span></header>
<main>
<section><h2>Portfolio <span id="count" class="mute"></span></h2>
<div class="kpi"><div>Open deals<b id="total-open-count">–</b></div><div class="amount-label">Open amount<b id="total-open-amount">–</b></div>
<div class="amount-label">Weighted forecast<b id="total-forecast">–</b></div><div class="amount-label">Won amount<b id="total-won-amount">–</b></div><div>Win rate<b id="total-win-rate">–</b></div></div>
<div id="stages"></div>
<div class="table-wrap"><table><thead><tr><th>Company</th><th>Open deals</th><th>Open amount</th><th>Forecast</th><th>Won deals</th><th>Won amount</th><th>Lost deals</th><th>Win rate</th><th>Stages</th></tr></thead>
<tbody id="companies"></tbody></table></div></section>
<section><div class="funnel-head"><h2 id="funnel-title">Select a company</h2>
<label>Pipeline <select id="pipeline" aria-label="Pipeline" disabled><option value="default">Sales Pipeline</option></select></label></div>
<div class="kpi" id="funnel-kpi"></div><div id="funnel"></div></section>

<section class="wide" id="benchmarks"><div class="funnel-head"><h2>Benchmarks <span id="bench-scope" class="mute"></span></h2>
<div class="controls"><label>Metric <select id="bench-metric" aria-label="Benchmark metric"><option value="winRate">win rate</option><option value="salesCycle">sales cycle</option><option value="coverage">coverage</option><option value="slip">slip</option></select></label>
<label>Group by <input id="bench-group" aria-label="Group by tag" placeholder="tag key, e.g. salesMotion"></label></div></div>
<div class="table-wrap"><table class="bench"><thead><tr><th>Company</th><th>Group</th><th>Value</th><th title="0–100: companies below, plus half of those equal, of the group">Percentile rank</th><th title="band: p25–p75 of the group; tick: p50; dot: the company">Position</th></tr></thead><tbody id="bench-rows"></tbody></table></div>
<p id="bench-definition" class="mute small"></p></section>

<section class="wide" id="trends"><div class="funnel-head"><h2>Trends <span id="trend-scope" class="mute"></span></h2>
<div class="controls"><label>Of <select id="trend-of" aria-label="Trend of"><option value="portfolio">the portfolio</option><option value="company">the selected company</option></select></label>
<label>Per <select id="trend-period" aria-label="Period"><option value="day">day</option><option value="week">week</option></select></label>
<label>From <input id="trend-from" type="date"></label><label>To <input id="trend-to" type="date"></label></div></div>
<div id="trend-chart" class="chart"></div>
<p class="mute small">Vertical markers: configuration revisions (grey, <i>r</i>N), rollout starts (orange, ▶ rN) and rollout finishes (green, ■ rN), on the same time axis.</p>
<ul id="markers" class="markers"></ul></section>

<section class="wide" id="waterfall"><div class="funnel-head"><h2>Waterfall <span id="waterfall-scope" class="mute"></span></h2>
<div class="controls"><label>From <input id="wf-from" type="date"></label><label>To <input id="wf-to" type="date"></label></div></div>
<div id="waterfall-chart" class="chart"></div>
<p id="waterfall-detail" class="mute small">Click a bar for its deals.</p>
<div class="table-wrap"><table class="left" id="waterfall-deals" hidden><thead><tr><th>Deal</th><th>Counted</th><th>At start</th><th>At end</th></tr></thead><tbody></tbody></table></div>
<p id="waterfall-more" class="mute small"></p></section>

<section class="wide" id="console"><h2>Operator console</h2>
<div class="console">
<div><h3>Rollouts</h3><div class="table-wrap"><table class="left"><thead><tr><th>Rollout</th><th>Revision</th><th>State</th><th>Progress</th><th>Started</th></tr></thead><tbody id="rollouts"></tbody></table></div></div>
<div><h3>Drift</h3><div id="drift"><p class="mute">–</p></div></div>
<div class="span2"><h3>Audit log</h3>
<div class="controls"><label>Company <select id="audit-company" aria-label="Audit company"><option value="">whole portfolio</option></select></label>
<label>Actor <input id="audit-actor" placeholder="apikey:… / oidc:… / system:…"></label>
<label>Action <input id="audit-action" placeholder="e.g. rollout.start"></label><button id="audit-apply">Filter</button></div>
<div class="table-wrap"><table class="left"><thead><tr><th>When</th><th>Actor</th><th>Action</th><th>Resource</th><th>Change</th></tr></thead><tbody id="audit"></tbody></table></div></div>
</div></section>
</main>
<script src="/dashboard/assets/uPlot.iife.min.js?v={version}"></script>
<script src="/dashboard/assets/dashboard.js?v={version}"></script>
</body></html>
"##;

/// The files under `/dashboard/assets/`, with their content types.
static ASSETS: Assets = Assets::new(&[
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/dashboard/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/dashboard/uPlot.min.css")),
    ("LICENSE", "text/plain; charset=utf-8", include_bytes!("../../assets/dashboard/LICENSE")),
    ("dashboard.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/dashboard/dashboard.js")),
    ("dashboard.css", "text/css; charset=utf-8", include_bytes!("../../assets/dashboard/dashboard.css")),
]);

/// `GET /dashboard/assets/{file}`: public, cached for a year. Not part of the API document.
pub async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    ASSETS.serve(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn assets_are_served_with_their_types_and_a_long_cache() {
        let js = asset(axum::extract::Path("uPlot.iife.min.js".to_owned())).await;
        assert_eq!(js.status(), 200);
        assert_eq!(js.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(js.headers()[header::CACHE_CONTROL].to_str().unwrap_or_default().contains("max-age=31536000"));
        let css = asset(axum::extract::Path("dashboard.css".to_owned())).await;
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
        assert!(!html.contains("style=") && !html.contains("<style"), "no inline styles (the policy refuses them)");
        for asset in ["uPlot.min.css", "dashboard.css", "uPlot.iife.min.js", "dashboard.js"] {
            assert!(html.contains(&format!("/dashboard/assets/{asset}?v={}", ASSETS.version())), "{asset}: {html}");
        }
    }
}
