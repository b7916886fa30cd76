//! The authorization matrix: every route × every role × own and other company, and the
//! services called directly over gRPC with company A's scope. A caller scoped to company
//! A never reads or changes company B.

use crate::scenarios::create_company;
use crate::support::Api;
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::{Caller, Role, Scope, Shutdown};
use gomark_proto::orchestrator::v1 as pb;
use gomark_proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Own,
    Other,
}

/// One route: how to call it against a company, and the least role it needs.
struct Route {
    name: &'static str,
    min_role: Role,
    /// Only portfolio-wide callers may use it at all.
    portfolio_only: bool,
    call: fn(company: &str, unique: &str) -> (Method, String, Option<Value>),
}

/// An Upso account the simulator knows for `company`, so an allowed registration succeeds
/// (one account per company: an account belongs to one company only).
fn matrix_upso_token(company: &str) -> String {
    format!("matrix-upso-{company}")
}

fn property(name: &str) -> Value {
    json!({"name": name, "label": "Matrix", "type": "string", "fieldType": "text", "groupName": "dealinformation"})
}

fn routes() -> Vec<Route> {
    vec![
        Route {
            name: "GET company",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}"), None),
        },
        Route {
            name: "GET audit",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/audit"), None),
        },
        Route {
            name: "GET properties",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/deal-properties"), None),
        },
        Route {
            name: "GET property",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/deal-properties/gomark_matrix"), None),
        },
        Route {
            name: "POST property",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, u| {
                (Method::POST, format!("/v1/companies/{c}/deal-properties"), Some(property(&format!("gomark_{u}"))))
            },
        },
        Route {
            name: "PATCH property",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, u| {
                (Method::PATCH, format!("/v1/companies/{c}/deal-properties/gomark_matrix"), Some(json!({"label": u})))
            },
        },
        Route {
            name: "DELETE property",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, u| (Method::DELETE, format!("/v1/companies/{c}/deal-properties/gomark_{u}"), None),
        },
        Route {
            name: "legacy add",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, u| {
                (
                    Method::POST,
                    "/hubspot/fields/add".into(),
                    Some(json!({"company_id": c, "name": format!("Legacy {u}"), "type": "string", "value": ""})),
                )
            },
        },
        Route {
            name: "legacy modify",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, u| {
                (Method::PUT, format!("/hubspot/fields/modify/{c}/gomark_matrix"), Some(json!({"new_name": u})))
            },
        },
        Route {
            name: "GET upsell dry run",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/upsell/dry-run"), None),
        },
        Route {
            name: "POST upsell run",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, _| (Method::POST, format!("/v1/companies/{c}/upsell/runs"), None),
        },
        Route {
            name: "GET upsell decisions",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/upsell/decisions"), None),
        },
        Route {
            name: "PUT upso account",
            min_role: Role::Admin,
            portfolio_only: false,
            call: |c, _| {
                (Method::PUT, format!("/v1/companies/{c}/upso-account"), Some(json!({"token": matrix_upso_token(c)})))
            },
        },
        Route {
            name: "legacy cadence",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, _| {
                (Method::PUT, format!("/upso/cadence/modify/{c}"), Some(json!({"template": "t", "delay_hours": 1})))
            },
        },
        Route {
            name: "POST api key",
            min_role: Role::Admin,
            portfolio_only: false,
            call: |c, u| {
                (Method::POST, "/v1/api-keys".into(), Some(json!({"name": u, "role": "viewer", "companyId": c})))
            },
        },
        Route {
            name: "GET config revisions",
            min_role: Role::Viewer,
            portfolio_only: true,
            call: |_, _| (Method::GET, "/v1/config/revisions".into(), None),
        },
        Route {
            name: "POST config revision",
            min_role: Role::Operator,
            portfolio_only: true,
            call: |_, u| {
                let doc = format!(
                    "baseline:\n  dealProperties:\n    - {{name: gomark_{u}, label: M, type: string, fieldType: text, groupName: dealinformation}}\n"
                );
                (Method::POST, "/v1/config/revisions".into(), Some(json!({"document": doc, "message": u})))
            },
        },
        Route {
            name: "POST config import",
            min_role: Role::Operator,
            portfolio_only: true,
            call: |c, _| (Method::POST, "/v1/config/import".into(), Some(json!({"companyIds": [c]}))),
        },
        Route {
            name: "GET rollouts",
            min_role: Role::Viewer,
            portfolio_only: true,
            call: |_, _| (Method::GET, "/v1/rollouts".into(), None),
        },
        Route {
            name: "POST rollout",
            min_role: Role::Operator,
            portfolio_only: true,
            call: |c, _| (Method::POST, "/v1/rollouts".into(), Some(json!({"companyIds": [c]}))),
        },
        Route {
            name: "GET drift",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/drift?companyId={c}"), None),
        },
        Route {
            name: "POST drift check",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, _| (Method::POST, "/v1/drift/check".into(), Some(json!({"companyIds": [c]}))),
        },
        Route {
            name: "GET portfolio audit",
            min_role: Role::Viewer,
            portfolio_only: true,
            call: |_, _| (Method::GET, "/v1/audit".into(), None),
        },
        Route {
            name: "GET hubspot sync",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/hubspot/sync"), None),
        },
        Route {
            name: "GET hubspot observed",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/hubspot/observed"), None),
        },
        Route {
            name: "GET pipelines",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/pipelines"), None),
        },
        Route {
            name: "GET funnel",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/funnels/default"), None),
        },
        Route {
            name: "GET funnel at a past date",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/funnels/default?at=2026-01-01T00:00:00Z"), None),
        },
        Route {
            name: "GET waterfall",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| {
                let range = "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z";
                (Method::GET, format!("/v1/companies/{c}/funnels/default/waterfall?{range}"), None)
            },
        },
        Route {
            name: "GET periods",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| {
                let range = "period=week&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z";
                (Method::GET, format!("/v1/companies/{c}/funnels/default/periods?{range}"), None)
            },
        },
        Route {
            name: "GET funnel events",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/companies/{c}/funnels/default/events"), None),
        },
        Route {
            name: "GET portfolio funnel",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/portfolio/funnel?companyIds={c}"), None),
        },
        Route {
            name: "GET portfolio funnel events",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/portfolio/funnel/events?companyIds={c}"), None),
        },
        Route {
            name: "GET portfolio benchmarks",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| (Method::GET, format!("/v1/portfolio/benchmarks?companyIds={c}"), None),
        },
        Route {
            name: "GET portfolio periods",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |c, _| {
                let range = "period=week&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z";
                (Method::GET, format!("/v1/portfolio/periods?companyIds={c}&{range}"), None)
            },
        },
        Route {
            name: "GET metric definitions",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |_, _| (Method::GET, "/v1/metrics/definitions".into(), None),
        },
        Route {
            name: "GET companies",
            min_role: Role::Viewer,
            portfolio_only: false,
            call: |_, _| (Method::GET, "/v1/companies".into(), None),
        },
        Route {
            name: "GET suppressions",
            min_role: Role::Viewer,
            portfolio_only: true,
            call: |_, _| (Method::GET, "/v1/portfolio/suppressions".into(), None),
        },
        Route {
            name: "POST portfolio suppression",
            min_role: Role::Operator,
            portfolio_only: true,
            call: |_, u| {
                let body = json!({"email": format!("{u}@matrix.example"), "kind": "do_not_contact"});
                (Method::POST, "/v1/portfolio/suppressions".into(), Some(body))
            },
        },
        Route {
            name: "POST company suppression",
            min_role: Role::Operator,
            portfolio_only: false,
            call: |c, u| {
                let body = json!({"email": format!("{u}@matrix.example"), "kind": "opt_out", "companyId": c});
                (Method::POST, "/v1/portfolio/suppressions".into(), Some(body))
            },
        },
        Route {
            name: "DELETE suppression",
            min_role: Role::Operator,
            portfolio_only: true,
            call: |_, u| (Method::DELETE, format!("/v1/portfolio/suppressions/{u}@matrix.example"), None),
        },
        Route {
            name: "GET api keys",
            min_role: Role::Admin,
            portfolio_only: false,
            call: |_, _| (Method::GET, "/v1/api-keys".into(), None),
        },
        Route {
            name: "POST company",
            min_role: Role::Admin,
            portfolio_only: true,
            call: |_, u| {
                (
                    Method::POST,
                    "/v1/companies".into(),
                    // A portal of its own: a portal belongs to one company only.
                    Some(
                        json!({"name": u, "hubspotPortalId": format!("9{}", u.trim_start_matches('m')), "hubspotToken": "t"}),
                    ),
                )
            },
        },
    ]
}

/// What the matrix expects: allowed calls succeed (2xx, or 422 for the legacy cadence route,
/// since these companies declare no upsell cadence); others are refused without revealing
/// the other company.
fn expected(route: &Route, role: Role, scoped: bool, target: Target, status: u16) -> Result<(), String> {
    let touches_company = !matches!(
        route.name,
        "GET companies"
            | "GET api keys"
            | "POST company"
            | "GET config revisions"
            | "POST config revision"
            | "GET portfolio audit"
            | "POST config import"
            | "GET rollouts"
            | "POST rollout"
            | "GET metric definitions"
            | "GET suppressions"
            | "POST portfolio suppression"
            | "DELETE suppression"
    );
    if scoped && target == Target::Other && touches_company {
        return if status == 404 { Ok(()) } else { Err(format!("other company must be 404, got {status}")) };
    }
    if route.portfolio_only && scoped {
        return if status == 403 { Ok(()) } else { Err(format!("portfolio-only must be 403, got {status}")) };
    }
    if role < route.min_role {
        return if status == 403 {
            Ok(())
        } else {
            Err(format!("needs {:?}: must be 403, got {status}", route.min_role))
        };
    }
    // 422 is past authorization: the legacy cadence route's rule check, or a company
    // still in the rollout an earlier row of the matrix started.
    let ok = (200..300).contains(&status) || (matches!(route.name, "legacy cadence" | "POST rollout") && status == 422);
    if ok { Ok(()) } else { Err(format!("allowed call must succeed, got {status}")) }
}

async fn mint(admin: &Api, role: Role, company: Option<&str>) -> String {
    let mut body = json!({"name": format!("{role:?} key"), "role": role.as_str()});
    if let Some(c) = company {
        body["companyId"] = json!(c);
    }
    let reply = admin.send(Method::POST, "/v1/api-keys", Some(body)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let key = reply.body["key"].as_str().expect("key shown once").to_owned();
    assert!(key.starts_with("gmk_"));
    let listed = admin.send(Method::GET, "/v1/api-keys", None).await;
    assert!(!listed.body.to_string().contains(&key), "a listed key never shows its secret");
    key
}

#[tokio::test]
async fn no_route_lets_company_a_touch_company_b() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let admin = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("admin key"));
    let a = create_company(&admin, &gomark.hubspot_sim, "Company A", "token-a", 931).await;
    let b = create_company(&admin, &gomark.hubspot_sim, "Company B", "token-b", 932).await;
    for company in [&a, &b] {
        let r = admin
            .send(Method::POST, &format!("/v1/companies/{company}/deal-properties"), Some(property("gomark_matrix")))
            .await;
        assert_eq!(r.status, 201);
    }
    for company in [&a, &b] {
        gomark.upso_sim.register_account(&matrix_upso_token(company), "Matrix");
    }
    let b_audit_before = admin.send(Method::GET, &format!("/v1/companies/{b}/audit?limit=500"), None).await.body;

    let mut failures = Vec::new();
    let mut n = 0;
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        for scoped in [true, false] {
            let key = mint(&admin, role, scoped.then_some(a.as_str())).await;
            let api = admin.with_token(&key);
            for route in routes() {
                for target in [Target::Own, Target::Other] {
                    let company = if target == Target::Own { &a } else { &b };
                    n += 1;
                    let unique = format!("m{n}");
                    if route.name == "DELETE property" {
                        // Something to delete, created by the admin.
                        let made = admin
                            .send(
                                Method::POST,
                                &format!("/v1/companies/{company}/deal-properties"),
                                Some(property(&format!("gomark_{unique}"))),
                            )
                            .await;
                        assert_eq!(made.status, 201);
                    }
                    let (method, path, body) = (route.call)(company, &unique);
                    let reply = api.send(method.clone(), &path, body).await;
                    if let Err(why) = expected(&route, role, scoped, target, reply.status.as_u16()) {
                        failures.push(format!(
                            "{role:?} scoped={scoped} {} on {target:?}: {method} {path}: {why}: {}",
                            route.name, reply.body
                        ));
                    }
                    assert!(reply.status.as_u16() < 500, "{} gave a server error", route.name);
                }
            }
            // A company-scoped key lists only its own company.
            if scoped {
                let listed = api.send(Method::GET, "/v1/companies", None).await;
                let ids: Vec<&str> =
                    listed.body["items"].as_array().expect("items").iter().filter_map(|c| c["id"].as_str()).collect();
                assert_eq!(ids, [a.as_str()], "{role:?}: sees only company A");
            }
        }
    }
    assert!(failures.is_empty(), "{} of {n} checks failed:\n{}", failures.len(), failures.join("\n"));

    // Company B's history holds only what portfolio-wide callers did.
    let b_audit_after = admin.send(Method::GET, &format!("/v1/companies/{b}/audit?limit=500"), None).await.body;
    let scoped_actors: Vec<Value> = b_audit_after["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| !b_audit_before["items"].as_array().is_some_and(|before| before.contains(e)))
        .map(|e| e["actor"].clone())
        .collect();
    let keys = admin.send(Method::GET, "/v1/api-keys", None).await.body;
    for actor in scoped_actors {
        // GoMark itself acts for portfolio-wide callers (a rollout they started).
        if actor.as_str().is_some_and(|a| a.starts_with("system:")) {
            continue;
        }
        let key_id = actor.as_str().and_then(|a| a.strip_prefix("apikey:")).expect("api key actor");
        let key = keys["items"].as_array().expect("items").iter().find(|k| k["id"] == key_id).expect("known key");
        assert!(key.get("companyId").is_none(), "a company-scoped key changed company B: {key}");
    }
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn anonymous_unknown_and_revoked_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let admin = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("admin key"));
    let company = create_company(&admin, &gomark.hubspot_sim, "Company A", "token-anon", 941).await;

    let anonymous = Api::anonymous(&gomark.gateway_url);
    for route in routes() {
        let (method, path, body) = (route.call)(&company, "anon");
        let reply = anonymous.send(method, &path, body).await;
        assert_eq!(reply.problem(401)["status"], 401, "{}", route.name);
        assert!(reply.headers.get("www-authenticate").is_some());
    }
    admin
        .with_token("gmk_0000000000000000000000000000000000000000000000")
        .send(Method::GET, "/v1/companies", None)
        .await
        .problem(401);
    admin.with_token("not-a-key").send(Method::GET, "/v1/companies", None).await.problem(401);
    assert_eq!(anonymous.send(Method::GET, "/healthz", None).await.status, 200, "health is public");

    let created =
        admin.send(Method::POST, "/v1/api-keys", Some(json!({"name": "short-lived", "role": "viewer"}))).await;
    let key = created.body["key"].as_str().expect("key").to_owned();
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(admin.with_token(&key).send(Method::GET, "/v1/companies", None).await.status, 200);
    assert_eq!(admin.send(Method::DELETE, &format!("/v1/api-keys/{id}"), None).await.status, 204);
    admin.with_token(&key).send(Method::GET, "/v1/companies", None).await.problem(401);
    let shown = admin.send(Method::GET, &format!("/v1/api-keys/{id}"), None).await;
    assert!(shown.body["revokedAt"].is_string(), "{}", shown.body);

    admin.send(Method::POST, "/v1/api-keys", Some(json!({"name": "x", "role": "root"}))).await.problem(400);
    admin
        .send(Method::POST, "/v1/api-keys", Some(json!({"name": "x", "role": "viewer", "expiresInDays": 0})))
        .await
        .problem(400);
    admin
        .send(Method::POST, "/v1/api-keys", Some(json!({"name": "x", "role": "viewer", "companyId": "nope"})))
        .await
        .problem(404);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Code> {
    r.map(|_| ()).map_err(|s| s.code())
}

/// A channel like the services' own: the caller travels as an assertion signed with this
/// process's key, which the embedded services share.
fn signed_channel(addr: std::net::SocketAddr) -> gomark_platform::grpc_client::TracedChannel {
    gomark_platform::grpc_client::channel(&format!("http://{addr}"), std::time::Duration::from_secs(10))
        .expect("channel")
}

#[tokio::test]
async fn services_enforce_the_scope_when_called_directly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let admin = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("admin key"));
    let a = create_company(&admin, &gomark.hubspot_sim, "Company A", "token-da", 951).await;
    let b = create_company(&admin, &gomark.hubspot_sim, "Company B", "token-db", 952).await;
    let addr = gomark.grpc_addr("orchestrator").expect("orchestrator");
    let mut orchestrator = OrchestratorServiceClient::new(signed_channel(addr));
    let a_admin = Caller { actor: "test:a-admin".into(), role: Role::Admin, scope: Scope::Company(a.clone()) };

    assert_eq!(
        code(orchestrator.get_company(a_admin.request(pb::GetCompanyRequest { company_id: a.clone() })).await),
        Ok(())
    );
    assert_eq!(
        code(orchestrator.get_company(a_admin.request(pb::GetCompanyRequest { company_id: b.clone() })).await),
        Err(tonic::Code::NotFound)
    );
    let spec = gomark_proto::config::v1::DealProperty {
        name: "gomark_direct".into(),
        label: "Direct".into(),
        r#type: "string".into(),
        field_type: "text".into(),
        group_name: "dealinformation".into(),
        ..Default::default()
    };
    assert_eq!(
        code(
            orchestrator
                .create_deal_property(
                    a_admin.request(pb::CreateDealPropertyRequest { company_id: b.clone(), spec: Some(spec.clone()) })
                )
                .await
        ),
        Err(tonic::Code::NotFound)
    );
    let peek = pb::GetDealPropertyRequest { company_id: b.clone(), name: "gomark_direct".into() };
    assert_eq!(code(orchestrator.get_deal_property(a_admin.request(peek)).await), Err(tonic::Code::NotFound));
    let peek_all = pb::ListDealPropertiesRequest { company_id: b.clone(), include_archived: true };
    assert_eq!(code(orchestrator.list_deal_properties(a_admin.request(peek_all)).await), Err(tonic::Code::NotFound));
    assert_eq!(
        code(
            orchestrator
                .list_audit_entries(
                    a_admin.request(pb::ListAuditEntriesRequest { company_id: b.clone(), ..Default::default() })
                )
                .await
        ),
        Err(tonic::Code::NotFound)
    );
    assert_eq!(
        code(
            orchestrator
                .create_company(a_admin.request(pb::CreateCompanyRequest {
                    name: "X".into(),
                    hubspot_portal_id: "1".into(),
                    hubspot_token: "t".into(),
                    ..Default::default()
                }))
                .await
        ),
        Err(tonic::Code::PermissionDenied)
    );
    let listed = orchestrator
        .list_companies(a_admin.request(pb::ListCompaniesRequest { page: None }))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.companies.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [a.as_str()]);
    // No caller at all: unauthenticated.
    assert_eq!(
        code(orchestrator.get_company(tonic::Request::new(pb::GetCompanyRequest { company_id: a.clone() })).await),
        Err(tonic::Code::Unauthenticated)
    );

    let sync_addr = gomark.grpc_addr("hubspot-sync").expect("hubspot-sync");
    let mut sync = gomark_proto::hubspot_sync::v1::hubspot_sync_service_client::HubspotSyncServiceClient::new(
        signed_channel(sync_addr),
    );
    let hijack = gomark_proto::hubspot_sync::v1::RegisterPortalRequest {
        company_id: b.clone(),
        portal_id: "666".into(),
        token: "stolen".into(),
        ..Default::default()
    };
    assert_eq!(code(sync.register_portal(a_admin.request(hijack)).await), Err(tonic::Code::NotFound));
    let desired = gomark_proto::config::v1::HubSpotConfig { company_id: b.clone(), ..Default::default() };
    let plan =
        gomark_proto::hubspot_sync::v1::PlanPortalRequest { company_id: b.clone(), desired: Some(desired.clone()) };
    assert_eq!(code(sync.plan_portal(a_admin.request(plan)).await), Err(tonic::Code::NotFound));
    let apply = gomark_proto::hubspot_sync::v1::ApplyPortalRequest {
        company_id: b.clone(),
        desired: Some(desired),
        ..Default::default()
    };
    assert_eq!(code(sync.apply_portal(a_admin.request(apply)).await), Err(tonic::Code::NotFound));
    let import = gomark_proto::hubspot_sync::v1::ImportPortalRequest { company_id: b.clone() };
    assert_eq!(code(sync.import_portal(a_admin.request(import)).await), Err(tonic::Code::NotFound));
    let state = gomark_proto::hubspot_sync::v1::GetObservedStateRequest { company_id: b.clone() };
    assert_eq!(code(sync.get_observed_state(a_admin.request(state)).await), Err(tonic::Code::NotFound));

    use gomark_proto::upso_cadence::v1 as upb;
    let upso_addr = gomark.grpc_addr("upso-cadence").expect("upso-cadence");
    let mut upso = upb::upso_cadence_service_client::UpsoCadenceServiceClient::new(signed_channel(upso_addr));
    gomark.upso_sim.register_account("upso-stolen", "Thief");
    let hijack = upb::RegisterAccountRequest { company_id: b.clone(), upso_token: "upso-stolen".into() };
    assert_eq!(code(upso.register_account(a_admin.request(hijack)).await), Err(tonic::Code::NotFound));
    let own = upb::RegisterAccountRequest { company_id: a.clone(), upso_token: "upso-stolen".into() };
    assert_eq!(code(upso.register_account(a_admin.request(own)).await), Ok(()));
    let peek = upb::EngineRequest { company_id: b.clone() };
    assert_eq!(code(upso.dry_run(a_admin.request(peek.clone())).await), Err(tonic::Code::NotFound));
    assert_eq!(code(upso.run_engine(a_admin.request(peek)).await), Err(tonic::Code::NotFound));
    let decisions = upb::ListDecisionsRequest { company_id: b.clone(), limit: 10 };
    assert_eq!(code(upso.list_decisions(a_admin.request(decisions)).await), Err(tonic::Code::NotFound));
    let apply = upb::ApplyCadencesRequest {
        company_id: b.clone(),
        desired: Some(gomark_proto::config::v1::OutreachConfig { company_id: b.clone(), ..Default::default() }),
        revision: 1,
        ..Default::default()
    };
    assert_eq!(code(upso.apply_cadences(a_admin.request(apply)).await), Err(tonic::Code::NotFound));
    let a_viewer = Caller { role: Role::Viewer, ..a_admin.clone() };
    let own_run = upb::EngineRequest { company_id: a.clone() };
    assert_eq!(code(upso.run_engine(a_viewer.request(own_run)).await), Err(tonic::Code::PermissionDenied));

    use gomark_proto::pipeline_tracker::v1 as pt;
    let tracker_addr = gomark.grpc_addr("pipeline-tracker").expect("pipeline-tracker");
    let mut tracker =
        pt::pipeline_tracker_service_client::PipelineTrackerServiceClient::new(signed_channel(tracker_addr));
    let funnel = |company: &str| pt::GetFunnelRequest { company_id: company.to_owned(), ..Default::default() };
    assert_eq!(code(tracker.get_funnel(a_admin.request(funnel(&a))).await), Ok(()));
    assert_eq!(code(tracker.get_funnel(a_admin.request(funnel(&b))).await), Err(tonic::Code::NotFound));
    assert_eq!(code(tracker.watch_funnel(a_admin.request(funnel(&b))).await), Err(tonic::Code::NotFound));
    let range = pt::GetWaterfallRequest {
        company_id: b.clone(),
        pipeline_id: String::new(),
        from: Some(gomark_proto::time::timestamp(1)),
        to: Some(gomark_proto::time::timestamp(2)),
        deal_limit: 0,
    };
    assert_eq!(code(tracker.get_waterfall(a_admin.request(range)).await), Err(tonic::Code::NotFound));
    let pipelines = pt::ListPipelinesRequest { company_id: b.clone() };
    assert_eq!(code(tracker.list_pipelines(a_admin.request(pipelines)).await), Err(tonic::Code::NotFound));
    let both = pt::GetPortfolioRequest { company_ids: vec![a.clone(), b.clone()], page: None, fx_as_of: None };
    assert_eq!(code(tracker.get_portfolio(a_admin.request(both)).await), Err(tonic::Code::NotFound));
    assert_eq!(code(tracker.watch_portfolio(a_admin.request(pt::GetPortfolioRequest::default())).await), Ok(()));
    // With no companies named, a scoped caller's portfolio is its own company only.
    let own = tracker
        .get_portfolio(a_admin.request(pt::GetPortfolioRequest::default()))
        .await
        .expect("own portfolio")
        .into_inner();
    assert!(own.companies.iter().all(|c| c.company_id == a), "{:?}", own.companies);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// One portfolio-wide read on each service port, made with the metadata `forge` writes
/// over a plain channel (no signing interceptor): the codes, by service.
async fn direct_calls(
    gomark: &Embedded,
    company: &str,
    forge: impl Fn(&mut tonic::metadata::MetadataMap),
) -> Vec<(&'static str, Result<(), tonic::Code>)> {
    use gomark_proto::hubspot_sync::v1 as hs;
    use gomark_proto::pipeline_tracker::v1 as pt;
    use gomark_proto::upso_cadence::v1 as upb;
    let plain = |service: &str| {
        let addr = gomark.grpc_addr(service).expect("service");
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("url").connect_lazy()
    };
    fn request<T>(message: T, forge: &impl Fn(&mut tonic::metadata::MetadataMap)) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        forge(req.metadata_mut());
        req
    }
    let mut orchestrator = OrchestratorServiceClient::new(plain("orchestrator"));
    let mut sync = hs::hubspot_sync_service_client::HubspotSyncServiceClient::new(plain("hubspot-sync"));
    let mut upso = upb::upso_cadence_service_client::UpsoCadenceServiceClient::new(plain("upso-cadence"));
    let mut tracker = pt::pipeline_tracker_service_client::PipelineTrackerServiceClient::new(plain("pipeline-tracker"));
    let company = company.to_owned();
    vec![
        (
            "orchestrator",
            code(orchestrator.list_companies(request(pb::ListCompaniesRequest { page: None }, &forge)).await),
        ),
        (
            "hubspot-sync",
            code(
                sync.get_observed_state(request(hs::GetObservedStateRequest { company_id: company.clone() }, &forge))
                    .await,
            ),
        ),
        (
            "upso-cadence",
            code(
                upso.list_decisions(request(upb::ListDecisionsRequest { company_id: company, limit: 1 }, &forge)).await,
            ),
        ),
        ("pipeline-tracker", code(tracker.get_portfolio(request(pt::GetPortfolioRequest::default(), &forge)).await)),
    ]
}

#[tokio::test]
async fn services_accept_a_caller_only_from_a_valid_assertion() {
    use gomark_platform::assertion::{ASSERTION_METADATA_KEY, KeyRing, process_keys};
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let admin = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("admin key"));
    let a = create_company(&admin, &gomark.hubspot_sim, "Company A", "token-fa", 961).await;
    let root = Caller { actor: "attacker".into(), role: Role::Admin, scope: Scope::Portfolio };
    let assertion = |token: String| {
        move |md: &mut tonic::metadata::MetadataMap| {
            md.insert(ASSERTION_METADATA_KEY, token.parse().expect("ascii"));
        }
    };
    let all = |codes: Vec<(&'static str, Result<(), tonic::Code>)>, want: Result<(), tonic::Code>, what: &str| {
        for (service, got) in codes {
            assert_eq!(got, want, "{what} on {service}");
        }
    };

    // Control: a valid assertion from this process's key is accepted everywhere.
    let valid = process_keys().sign(&root, SystemTime::now());
    all(direct_calls(&gomark, &a, assertion(valid.clone())).await, Ok(()), "a valid assertion");

    // The audit finding: plain metadata naming a portfolio admin.
    all(
        direct_calls(&gomark, &a, |md| root.to_metadata(md)).await,
        Err(tonic::Code::Unauthenticated),
        "forged metadata",
    );
    // Plain metadata next to a valid viewer assertion does not raise it to admin.
    let viewer = Caller { role: Role::Viewer, scope: Scope::Company(a.clone()), ..root.clone() };
    let viewer_token = process_keys().sign(&viewer, SystemTime::now());
    let mut orchestrator = OrchestratorServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", gomark.grpc_addr("orchestrator").expect("addr")))
            .expect("url")
            .connect_lazy(),
    );
    let mut both = tonic::Request::new(pb::CreateCompanyRequest {
        name: "X".into(),
        hubspot_portal_id: "9".into(),
        hubspot_token: "t".into(),
        ..Default::default()
    });
    root.to_metadata(both.metadata_mut());
    both.metadata_mut().insert(ASSERTION_METADATA_KEY, viewer_token.parse().expect("ascii"));
    assert_eq!(code(orchestrator.create_company(both).await), Err(tonic::Code::PermissionDenied));

    let expired = process_keys().sign(&root, SystemTime::now() - Duration::from_secs(120));
    all(direct_calls(&gomark, &a, assertion(expired)).await, Err(tonic::Code::Unauthenticated), "expired");
    let foreign = KeyRing::generate().sign(&root, SystemTime::now());
    all(direct_calls(&gomark, &a, assertion(foreign)).await, Err(tonic::Code::Unauthenticated), "another key");
    let mut tampered = valid.into_bytes();
    let at = tampered.len() - 5;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    all(direct_calls(&gomark, &a, assertion(tampered)).await, Err(tonic::Code::Unauthenticated), "tampered");

    // The audit log names only verified actors.
    let audit = admin.send(Method::GET, &format!("/v1/companies/{a}/audit"), None).await;
    assert!(!audit.body.to_string().contains("attacker"), "{}", audit.body);
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn a_portal_or_upso_account_belongs_to_one_company() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let admin = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("admin key"));
    let a = create_company(&admin, &gomark.hubspot_sim, "Company A", "token-dup", 971).await;
    let second = json!({"name": "Company B", "hubspotPortalId": "971", "hubspotToken": "token-dup"});
    let reply = admin.send(Method::POST, "/v1/companies", Some(second)).await;
    let detail = reply.problem(409)["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("971") && detail.contains(&a), "names the portal and its company: {detail}");
    let listed = admin.send(Method::GET, "/v1/companies", None).await;
    assert!(!listed.body.to_string().contains("Company B"), "no second company: {}", listed.body);

    let b = create_company(&admin, &gomark.hubspot_sim, "Company B", "token-dup-b", 972).await;
    gomark.upso_sim.register_account("upso-shared", "Shared");
    let admin = &admin;
    let register = |company: String| async move {
        let path = format!("/v1/companies/{company}/upso-account");
        admin.send(Method::PUT, &path, Some(json!({"token": "upso-shared"}))).await
    };
    assert_eq!(register(a.clone()).await.status, 200, "the first company gets the account");
    assert_eq!(register(a.clone()).await.status, 200, "registering it again for the same company is fine");
    let reply = register(b.clone()).await;
    let detail = reply.problem(409)["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains(&a), "names the company holding the account: {detail}");
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

#[tokio::test]
async fn revoking_a_key_ends_its_open_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let admin = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("admin key"));
    let a = create_company(&admin, &gomark.hubspot_sim, "Company A", "token-sse", 981).await;
    let created = admin.send(Method::POST, "/v1/api-keys", Some(json!({"name": "watcher", "role": "viewer"}))).await;
    let key = created.body["key"].as_str().expect("key").to_owned();
    let id = created.body["id"].as_str().expect("id").to_owned();

    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/companies/{a}/funnels/default/events", gomark.gateway_url))
        .bearer_auth(&key)
        .send()
        .await
        .expect("send");
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk()).await.expect("first event");
    assert!(first.expect("chunk").is_some(), "the stream is open");

    assert_eq!(admin.send(Method::DELETE, &format!("/v1/api-keys/{id}"), None).await.status, 204);
    let revoked_at = std::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its key by 10 s");
    assert!(revoked_at.elapsed() < std::time::Duration::from_secs(10));
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}

/// `Accept: text/event-stream` on plan and import changes how the answer arrives, never who
/// may ask: every role, scoped or not, on its own company and another, gets the same refusal
/// (or success) from the streamed variant as from the plain request.
#[tokio::test]
async fn streamed_plan_and_import_are_authorized_as_the_plain_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().to_path_buf(), port: 0, demo: false, ..EmbeddedOptions::default() };
    let gomark = Embedded::start(options, Shutdown::new()).await.expect("start");
    let admin = Api::new(&gomark.gateway_url, gomark.admin_api_key.as_deref().expect("admin key"));
    let a = create_company(&admin, &gomark.hubspot_sim, "Company A", "token-stream-a", 941).await;
    let b = create_company(&admin, &gomark.hubspot_sim, "Company B", "token-stream-b", 942).await;
    let doc = format!(
        "baseline:\n  dealProperties:\n    - {{name: gomark_streamed, label: S, type: string, fieldType: text, groupName: dealinformation}}\n\
         companies:\n  a:\n    companyId: \"{a}\"\n  b:\n    companyId: \"{b}\"\n"
    );
    let stored = admin.send(Method::POST, "/v1/config/revisions", Some(json!({"document": doc, "message": "m"}))).await;
    assert_eq!(stored.status, 201, "{}", stored.body);

    let stream = [("accept", "text/event-stream")];
    let (mut successes, mut refusals) = (0, 0);
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        for scoped in [true, false] {
            let key = mint(&admin, role, scoped.then_some(a.as_str())).await;
            let api = admin.with_token(&key);
            for company in [&a, &b] {
                for path in ["/v1/config/plan", "/v1/config/import"] {
                    let body = json!({"companyIds": [company]});
                    let plain = api.send(Method::POST, path, Some(body.clone())).await;
                    let streamed = api.send_with(Method::POST, path, Some(body), &stream).await;
                    let what = format!("{role:?} scoped={scoped} {path} for {company}");
                    assert_eq!(plain.status.is_success(), streamed.status.is_success(), "{what}: {}", plain.body);
                    if plain.status.is_success() {
                        successes += 1;
                        assert!(streamed.content_type().starts_with("text/event-stream"), "{what}");
                    } else {
                        refusals += 1;
                        assert_eq!(plain.status, streamed.status, "{what}");
                        assert_eq!(plain.body["title"], streamed.body["title"], "{what}");
                    }
                    assert!(
                        !(scoped && company == &b && plain.status.is_success()),
                        "{what}: a key scoped to A acted on B"
                    );
                }
            }
        }
    }
    assert!(successes > 0 && refusals > 0, "both answers compared: {successes} successes, {refusals} refusals");
    gomark.shutdown.trigger();
    gomark.wait().await.expect("stop");
}
