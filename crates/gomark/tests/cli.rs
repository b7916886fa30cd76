//! The operator's command line: the real `gomark` binary against an embedded GoMark, plus
//! the pure renderers and parsers on canned API documents.

use gomark::cli::client::{CliError, FieldError};
use gomark::cli::rollout::{display, sse};
use gomark::cli::{audit, config, status};
use gomark::{Embedded, EmbeddedOptions};
use gomark_platform::Shutdown;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs the real binary with `GOMARK_GATEWAY` and `GOMARK_API_KEY` (when given) set.
async fn gomark(gateway: &str, key: Option<&str>, args: &[&str]) -> Run {
    let mut env = vec![("GOMARK_GATEWAY", gateway)];
    env.extend(key.map(|k| ("GOMARK_API_KEY", k)));
    gomark_with(&env, args).await
}

/// Runs the real binary with only these GoMark variables set (and no CLI config file
/// unless `GOMARK_CLI_CONFIG` is among them).
async fn gomark_with(env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gomark"));
    cmd.args(args);
    run(cmd, env).await
}

/// Runs the real binary on a terminal: util-linux `script` gives it a pty for stdout and
/// stderr (both end up in `stdout`). `None`, saying why, where `script` is not installed.
async fn on_a_terminal(env: &[(&str, &str)], args: &[&str]) -> Option<Run> {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping the terminal checks: util-linux `script` is not installed");
        return None;
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = quote(env!("CARGO_BIN_EXE_gomark"));
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).env_remove("NO_COLOR");
    Some(run(cmd, env).await)
}

/// Runs `cmd` with no GoMark settings from this environment, only `env`.
async fn run(mut cmd: tokio::process::Command, env: &[(&str, &str)]) -> Run {
    cmd.env_remove("GOMARK_GATEWAY")
        .env_remove("GOMARK_API_KEY")
        .env_remove("GOMARK_CONTEXT")
        .env("GOMARK_CLI_CONFIG", "/nonexistent/gomark/config.yaml")
        .stdin(std::process::Stdio::null());
    cmd.envs(env.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the command finishes")
        .expect("the command runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn document(company: &str, label: &str) -> String {
    format!(
        "baseline:\n  dealProperties:\n    - {{name: gomark_seats, label: {label}, type: number, fieldType: number, groupName: dealinformation}}\ncompanies:\n  acme:\n    companyId: \"{company}\"\n"
    )
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write the document");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_applies_plans_diffs_rolls_back_and_audits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().join("data"), port: 0, demo: false, ..EmbeddedOptions::default() };
    let server = Embedded::start(options, Shutdown::new()).await.expect("start");
    let gw = server.gateway_url.clone();
    let admin = server.admin_api_key.clone().expect("admin key on first start");
    let key = Some(admin.as_str());

    server.hubspot_sim.register_portal("t", 123);
    let created = reqwest::Client::new()
        .post(format!("{gw}/v1/companies"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Acme", "hubspotPortalId": "123", "hubspotToken": "t"}))
        .send()
        .await
        .expect("create company");
    assert_eq!(created.status(), 201);
    let company = created.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();

    // Nothing stored yet: status says so rather than failing.
    let empty = gomark(&gw, key, &["status"]).await;
    assert_eq!(empty.code, Some(0), "{empty}");
    assert!(empty.stdout.contains("none yet") && empty.stdout.contains("companies: 1"), "{empty}");

    // A bad document: the field path, exit 1, nothing stored.
    let bad = write(dir.path(), "bad.yaml", &document("no-such-company", "Seats"));
    let run = gomark(&gw, key, &["apply", "--file", &bad, "-m", "bad", "--yes"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("error: ") && run.stderr.contains("companies.acme.companyId"), "{run}");

    // Without --yes and without a terminal to ask on, apply refuses after planning, and
    // nothing is stored.
    let doc = write(dir.path(), "doc.yaml", &document(&company, "Seats"));
    let run = gomark(&gw, key, &["apply", "--file", &doc, "-m", "seats"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("--yes"), "{run}");
    assert!(run.stdout.contains("+ deal property gomark_seats"), "the plan is shown first: {run}");
    let run = gomark(&gw, key, &["revisions"]).await;
    assert!(run.stdout.contains("no revisions yet"), "a declined apply stores nothing: {run}");

    // A saved plan: `plan --out FILE`, then `apply FILE` applies exactly it.
    let saved = dir.path().join("seats.plan");
    let saved = saved.to_str().expect("utf-8");
    let run = gomark(&gw, key, &["plan", "-f", &doc, "-m", "seats", "--out", saved]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("of a proposed document") && run.stdout.contains(saved), "{run}");
    let run = gomark(&gw, key, &["revisions"]).await;
    assert!(run.stdout.contains("no revisions yet"), "planning stores nothing: {run}");

    // On a terminal the plan is coloured (`+` green), unless NO_COLOR is set; on a pipe
    // (every other run here) it is plain.
    let env = [("GOMARK_GATEWAY", gw.as_str()), ("GOMARK_API_KEY", admin.as_str())];
    let plan = ["plan", "-f", doc.as_str(), "-m", "seats"];
    if let Some(run) = on_a_terminal(&env, &plan).await {
        assert_eq!(run.code, Some(0), "{run}");
        assert!(run.stdout.contains("\x1b[32m  + deal property gomark_seats"), "{run}");
        // Counted from the plan's event stream, company by company.
        assert!(run.stdout.contains(" companies, ETA "), "the plan's bar: {run}");
        let run = on_a_terminal(&[env[0], env[1], ("NO_COLOR", "1")], &plan).await.expect("script is there");
        assert_eq!(run.code, Some(0), "{run}");
        assert!(run.stdout.contains("+ deal property gomark_seats") && !run.stdout.contains("\x1b[32m"), "{run}");
    }
    let run = gomark(&gw, key, &["plan", "-f", &doc, "-m", "seats"]).await;
    assert!(run.stdout.contains("+ deal property gomark_seats") && !run.stdout.contains('\x1b'), "{run}");
    assert!(run.stderr.is_empty(), "no progress on a pipe: {run}");

    let run = gomark(&gw, key, &["apply", saved, "--yes"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("+ deal property gomark_seats"), "the plan is shown: {run}");
    assert!(run.stdout.contains("acme") && run.stdout.contains("completed"), "{run}");
    let run = gomark(&gw, key, &["apply", saved, "--yes"]).await;
    assert_eq!(run.code, Some(1), "a plan applies once: {run}");
    assert!(run.stderr.contains("already applied"), "{run}");

    let run = gomark(&gw, key, &["plan"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("no changes") && run.stdout.contains("0 of 1 company with changes"), "{run}");

    let run = gomark(&gw, key, &["status"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("revision 1 ") && run.stdout.contains("completed"), "{run}");
    assert!(run.stdout.contains("companies: 1"), "{run}");

    let run = gomark(&gw, key, &["--json", "status"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let parsed: Value = serde_json::from_str(&run.stdout).expect("--json status is one JSON document");
    assert_eq!((parsed["config"]["number"].as_i64(), parsed["companies"].as_i64()), (Some(1), Some(1)), "{parsed}");

    // A second revision, then a rollback to the first.
    let doc2 = write(dir.path(), "doc2.yaml", &document(&company, "Licensed seats"));
    let run = gomark(&gw, key, &["--json", "apply", "-f", &doc2, "-m", "clearer label", "-y"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let rollout: Value = serde_json::from_str(&run.stdout).expect("--json apply prints the final rollout only");
    assert_eq!((rollout["state"].as_str(), rollout["revision"].as_i64()), (Some("completed"), Some(2)), "{rollout}");

    let run = gomark(&gw, key, &["diff", "--from", "1"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("revision 1 → 2") && run.stdout.contains("Licensed seats"), "{run}");

    let run = gomark(&gw, key, &["rollback", "--to", "1", "-m", "back", "--yes"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("revision 3 restores revision 1: back") && run.stdout.contains("completed"), "{run}");
    let seats = server.hubspot_sim.property("t", "gomark_seats").expect("in the portal");
    assert_eq!(seats["label"], "Seats", "the rollback reached the portal");

    let run = gomark(&gw, key, &["revisions"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("(restores revision 1)") && run.stdout.contains("clearer label"), "{run}");

    let run = gomark(&gw, key, &["audit"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("TIME") && run.stdout.lines().count() >= 4, "{run}");
    let run = gomark(&gw, key, &["audit", "--company", &company, "--limit", "5"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("TIME"), "{run}");

    // Rollout actions on a finished rollout: the API's refusal is shown, exit 1.
    let id = rollout["id"].as_str().expect("id");
    let run = gomark(&gw, key, &["rollout", "show", id]).await;
    assert!(run.code == Some(0) && run.stdout.contains("acme"), "{run}");
    let run = gomark(&gw, key, &["rollout", "pause", "no-such-rollout"]).await;
    assert!(run.code == Some(1) && run.stderr.starts_with("error: "), "{run}");

    // A wrong key, a missing key.
    let run = gomark(&gw, Some("gmk_wrongwrongwrongwrongwrongwrongwrong"), &["status"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("authentication failed") && run.stdout.is_empty(), "{run}");
    assert!(!run.stderr.contains("gmk_wrong"), "the key is never printed: {run}");
    let run = gomark(&gw, None, &["status"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("GOMARK_API_KEY") && run.stderr.contains("--api-key"), "{run}");

    server.shutdown.trigger();
    server.wait().await.expect("clean shutdown");
}

/// The terraform/kubectl conventions, against the demo portfolio: detailed exit codes,
/// JSON errors, plain output on a pipe, company keys, export, drift, contexts, completions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_follows_operator_conventions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        data_dir: dir.path().join("data"),
        port: 0,
        demo_activity: None,
        ..EmbeddedOptions::default()
    };
    let server = Embedded::start(options, Shutdown::new()).await.expect("start");
    let gw = server.gateway_url.clone();
    let admin = server.admin_api_key.clone().expect("admin key on first start");
    let key = Some(admin.as_str());
    assert_eq!(server.demo_ready(Duration::from_secs(60)).await, gomark::DemoState::Ready);

    // The demo's rollout converged every portal, and its drift was adopted: a plan has
    // nothing to do (0).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let run = gomark(&gw, key, &["plan", "--detailed-exitcode"]).await;
        if run.code == Some(0) {
            assert!(run.stdout.contains("0 of 20 companies with changes"), "{run}");
            assert!(!run.stdout.contains('\x1b'), "no colour on a pipe: {run}");
            break;
        }
        assert_eq!(run.code, Some(2), "{run}");
        assert!(tokio::time::Instant::now() < deadline, "the demo never converged: {run}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The exported document plans to nothing; changed, it plans to changes (2), for the
    // companies named by key and by name.
    let export = gomark(&gw, key, &["config", "export"]).await;
    assert_eq!(export.code, Some(0), "{export}");
    assert!(export.stdout.contains("companies:") && export.stdout.contains("acme-analytics:"), "{export}");
    let same = write(dir.path(), "same.yaml", &export.stdout);
    let run = gomark(&gw, key, &["plan", "-f", &same, "--detailed-exitcode"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let changed = write(dir.path(), "changed.yaml", &export.stdout.replacen("label: Customer tier", "label: Tier", 1));
    let args =
        ["plan", "-f", &changed, "--detailed-exitcode", "--company", "acme-analytics", "--company", "Brightlane CRM"];
    let run = gomark(&gw, key, &args).await;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stdout.contains("2 of 2 companies with changes"), "{run}");
    assert!(run.stdout.contains("acme-analytics (") && run.stdout.contains("brightlane-crm ("), "{run}");
    let run = gomark(&gw, key, &["plan", "--company", "nobody"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("--company \"nobody\""), "{run}");

    // An invalid document: exit 1 (also with --detailed-exitcode), its error said once,
    // and as one JSON document under --json.
    let bad = write(dir.path(), "bad.yaml", "baseline:\n  dealProperties:\n    - {name: x, label: x, type: numbr}\n");
    let run = gomark(&gw, key, &["plan", "-f", &bad, "--detailed-exitcode"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(run.stderr.matches("unknown variant `numbr`").count(), 1, "{run}");
    let run = gomark(&gw, key, &["--json", "plan", "-f", &bad]).await;
    assert_eq!(run.code, Some(1), "{run}");
    let error: Value = serde_json::from_str(&run.stderr).expect("a JSON error");
    assert_eq!(error["error"]["status"], 400, "{run}");
    assert_eq!(error["error"]["errors"][0]["field"], "document", "{run}");
    let run = gomark(&gw, None, &["--json", "status"]).await;
    let error: Value = serde_json::from_str(&run.stderr).expect("a JSON error");
    assert_eq!(error["error"]["kind"], "missing_api_key", "{run}");

    // Drift: a check of every company, a list, and a record that does not exist.
    let run = gomark(&gw, key, &["drift", "check"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("checked 20 companies: 0 drifted"), "{run}");
    let run = gomark(&gw, key, &["drift", "list", "--company", "acme-analytics"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.stdout, "no drift found\n", "{run}");
    let run = gomark(&gw, key, &["--json", "drift", "list"]).await;
    assert!(serde_json::from_str::<Value>(&run.stdout).expect("json")["items"].is_array(), "{run}");
    let run = gomark(&gw, key, &["drift", "show", "no-such-record"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    // The demo's hand edit (a label typed into one portal's HubSpot UI), shown as a record.
    let run = gomark(&gw, key, &["--json", "drift", "list", "--company", "tidewater-marinas"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let listed: Value = serde_json::from_str(&run.stdout).expect("json");
    let record = &listed["items"][0];
    let id = record["id"].as_str().unwrap_or_else(|| panic!("the demo's drift is listed: {run}"));
    let run = gomark(&gw, key, &["drift", "show", id]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let company = record["companyId"].as_str().expect("companyId");
    assert!(run.stdout.starts_with(&format!("drift {id}\ncompany: {company}\n")), "{run}");
    // Adopted: the edit became a revision of its own.
    assert!(run.stdout.contains("\npolicy: adopt: revision/"), "{run}");
    assert!(run.stdout.contains("1 action to undo it:\n  ~ deal_property gomark_customer_tier\n"), "{run}");
    assert!(run.stdout.contains(&format!("label: \"{}\" → \"Customer tier\"", gomark::DRIFTED_LABEL)), "{run}");

    // Exchange rates from a CSV file; a bad line is named and nothing is sent.
    let rates =
        write(dir.path(), "rates.csv", "date,from,to,rate\n2026-03-31,EUR,USD,1.0842\n2026-03-31,GBP,USD,1.27\n");
    let run = gomark(&gw, key, &["fx-rates", "load", &rates]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.stdout, "stored 2 exchange rates\n", "{run}");
    let bad = write(dir.path(), "bad.csv", "2026-03-31,EUR,USD,1.08\n2026-13-01,GBP,USD,1.27\n");
    let run = gomark(&gw, key, &["fx-rates", "load", &bad]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("line 2: \"2026-13-01\" is not a date"), "{run}");

    // Contexts: the config file supplies gateway and key; flags pick another context.
    let config = dir.path().join("cli.yaml");
    std::fs::write(
        &config,
        format!("contexts:\n  demo: {{gateway: \"{gw}\", apiKey: \"{admin}\"}}\n  elsewhere: {{gateway: \"http://127.0.0.1:9\"}}\n"),
    )
    .expect("write the config");
    let config = config.to_string_lossy().into_owned();
    let env = [("GOMARK_CLI_CONFIG", config.as_str())];
    let run = gomark_with(&env, &["status"]).await;
    assert_eq!(run.code, Some(1), "no current context yet: {run}");
    let run = gomark_with(&env, &["context", "use", "demo"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let run = gomark_with(&env, &["context", "list"]).await;
    assert!(run.stdout.contains("*        demo") && !run.stdout.contains(&admin), "{run}");
    let run = gomark_with(&env, &["status"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("companies: 20"), "{run}");
    let run = gomark_with(&env, &["--context", "nowhere", "status"]).await;
    assert!(run.code == Some(1) && run.stderr.contains("no context named \"nowhere\""), "{run}");

    for (shell, marker) in [("bash", "_gomark()"), ("zsh", "#compdef gomark"), ("fish", "complete -c gomark")] {
        let run = gomark_with(&[], &["completions", shell]).await;
        assert!(run.code == Some(0) && run.stdout.contains(marker), "{shell}: {run}");
        assert!(run.stdout.contains("drift"), "{shell}: {run}");
    }

    server.shutdown.trigger();
    server.wait().await.expect("clean shutdown");
}

/// `gomark suppressions add|list|remove`: one person however spelled, for every company,
/// with the kind validated before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_the_portfolio_suppression_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        EmbeddedOptions { data_dir: dir.path().join("data"), port: 0, demo: false, ..EmbeddedOptions::default() };
    let server = Embedded::start(options, Shutdown::new()).await.expect("start");
    let gw = server.gateway_url.clone();
    let admin = server.admin_api_key.clone().expect("admin key on first start");
    let key = Some(admin.as_str());

    let run = gomark(&gw, key, &["suppressions", "list"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "nobody is suppressed\n"), "{run}");
    let run =
        gomark(&gw, key, &["suppressions", "add", "Ann+acme@X.example", "--kind", "legal_hold", "--reason", "case 7"])
            .await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("ann@x.example is now suppressed for every company"), "{run}");
    let run = gomark(&gw, key, &["suppressions", "add", "ann@x.example"]).await;
    assert!(run.code == Some(0) && run.stdout.contains("already suppressed (legal_hold)"), "{run}");
    let run = gomark(&gw, key, &["suppressions", "add", "bo@x.example", "--kind", "maybe"]).await;
    assert_ne!(run.code, Some(0), "an unknown kind is refused: {run}");

    let run = gomark(&gw, key, &["suppressions", "list"]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let ann = run.stdout.lines().find(|l| l.contains("ann@x.example")).unwrap_or_else(|| panic!("{run}"));
    assert!(ann.contains("legal_hold") && ann.contains("portfolio"), "{run}");
    assert!(!run.stdout.contains("bo@x.example"), "{run}");
    let json = gomark(&gw, key, &["--json", "suppressions", "list"]).await;
    let page: Value = serde_json::from_str(&json.stdout).unwrap_or_else(|_| panic!("{json}"));
    assert_eq!(page["items"][0]["person"], "ann@x.example", "{json}");

    let run = gomark(&gw, key, &["suppressions", "remove", "ANN@x.example"]).await;
    assert!(run.code == Some(0) && run.stdout.contains("is no longer suppressed"), "{run}");
    let run = gomark(&gw, key, &["suppressions", "remove", "ann@x.example"]).await;
    assert!(run.code == Some(0) && run.stdout.contains("was not on the list"), "{run}");
    let run = gomark(&gw, key, &["suppressions", "list"]).await;
    assert_eq!(run.stdout, "nobody is suppressed\n", "{run}");

    server.shutdown.trigger();
    server.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_unreachable_gateway_is_named() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let run = gomark(&url, Some("gmk_x"), &["status"]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains(&format!("could not reach the gateway at {url}")), "{run}");
}

#[test]
fn problem_documents_become_error_lines() {
    let body = json!({"type": "x", "title": "Invalid argument", "status": 400,
        "detail": "the document is invalid: baseline.dealProperties[0].name: bad; companies.a.companyId: unknown",
        "errors": [{"field": "baseline.dealProperties[0].name", "detail": "bad"}]});
    let err = CliError::from_response(400, &body.to_string());
    assert_eq!(
        err.lines(),
        [
            "error: the document is invalid:",
            "  baseline.dealProperties[0].name: bad",
            "  companies.a.companyId: unknown"
        ]
    );
    let single = CliError::Api {
        status: 400,
        title: "Invalid argument".into(),
        detail: "must be 1 or more".into(),
        errors: vec![FieldError { field: "limit".into(), detail: "must be 1 or more".into() }],
    };
    assert_eq!(single.lines(), ["error: must be 1 or more", "  limit: must be 1 or more"]);
    let proxy = CliError::from_response(502, "<html>bad gateway</html>");
    assert_eq!(proxy.lines()[0], "error: HTTP 502 Bad Gateway: <html>bad gateway</html>");
    let unauthenticated = CliError::from_response(401, r#"{"title":"Unauthenticated","status":401,"detail":"nope"}"#);
    assert!(unauthenticated.lines().iter().any(|l| l.contains("authentication failed")));
}

#[test]
fn sse_events_are_parsed_across_chunks() {
    let mut parser = sse::Parser::new();
    assert!(parser.feed(b": keep-alive\n\nevent: progress\r\ndata: {\"a\":").is_empty());
    let events = parser.feed(b"1}\n\ndata: x\ndata: y\n\n");
    assert_eq!(
        events,
        [
            sse::Event { event: "progress".into(), data: "{\"a\":1}".into() },
            sse::Event { event: "message".into(), data: "x\ny".into() }
        ]
    );
    // A multi-byte character split between chunks survives.
    let mut parser = sse::Parser::new();
    let bytes = "data: é\n\n".as_bytes();
    assert!(parser.feed(&bytes[..7]).is_empty());
    assert_eq!(parser.feed(&bytes[7..])[0].data, "é");
}

fn rollout(state: &str, steps: &[(&str, u32, &str, u32)]) -> Value {
    let done = steps.iter().filter(|s| s.2 == "done").count();
    let failed = steps.iter().filter(|s| s.2 == "failed").count();
    json!({"id": "r1", "revision": 2, "state": state, "total": steps.len(), "done": done, "failed": failed,
        "steps": steps.iter().map(|(key, wave, state, applied)| json!({"companyId": format!("id-{key}"),
            "companyKey": key, "wave": wave, "state": state, "attempts": 1, "applied": applied})).collect::<Vec<_>>()})
}

#[test]
fn progress_is_drawn_per_wave_and_company() {
    let running = rollout("running", &[("acme", 0, "done", 2), ("beta", 1, "running", 0), ("gamma", 1, "pending", 0)]);
    assert_eq!(
        display::block(&running),
        [
            "rollout r1 (revision 2): running, 1/3 done",
            "wave 0 (canary): 1/1 done",
            "  acme   done       2 changes applied",
            "wave 1: 0/2 done, 1 running",
            "  beta   running    0 changes applied",
            "  gamma  pending    0 changes applied",
        ]
    );
    let plain: Vec<String> = display::plain(&running).into_iter().map(|(_, l)| l).collect();
    assert!(plain.contains(&"wave 0 (canary) finished: 1/1 done".to_owned()), "{plain:?}");
    assert!(plain.contains(&"wave 1: started, 2 companies".to_owned()), "{plain:?}");
    assert!(!plain.iter().any(|l| l.contains("gamma")), "companies not started yet are not listed: {plain:?}");
    assert_eq!(plain.last().map(String::as_str), Some("rollout r1: running"));

    let halted = rollout("halted", &[("acme", 0, "failed", 0)]);
    assert!(display::outcome(&halted).is_err());
    assert!(display::summary(&halted).contains("  failed: acme"));
    assert!(display::outcome(&rollout("completed", &[("acme", 0, "done", 1)])).is_ok());
    assert!(display::outcome(&rollout("completed", &[("acme", 0, "failed", 1)])).is_err());
    assert!(display::outcome(&rollout("cancelled", &[])).is_err());
    let mut superseded = rollout("superseded", &[("acme", 0, "cancelled", 0)]);
    superseded["reason"] = json!("superseded by rollout r2 (revision 3), which applies it");
    assert!(display::is_terminal_state(&superseded), "a watch ends when its rollout is superseded");
    assert_eq!(
        display::outcome(&superseded),
        Err("the rollout was superseded by rollout r2 (revision 3), which applies it".to_owned())
    );
}

#[test]
fn the_rollout_bar_counts_finished_companies_of_all() {
    let mut progress = display::Progress::with_target(false, indicatif::ProgressDrawTarget::hidden());
    let running = rollout(
        "running",
        &[("acme", 0, "done", 2), ("beta", 1, "failed", 0), ("gamma", 1, "running", 0), ("delta", 1, "pending", 0)],
    );
    progress.show(&running);
    let bar = progress.bar();
    assert_eq!((bar.position(), bar.length()), (2, Some(4)), "done and failed of all companies");
    assert_eq!(bar.message(), "wave 1: 0/3 done, 1 running, 1 failed");
    progress.show(&rollout("completed", &[("acme", 0, "done", 2), ("beta", 1, "done", 1)]));
    assert!(progress.bar().is_finished(), "the bar is cleared once the rollout ends");
}

#[test]
fn plans_revisions_audit_and_status_render() {
    let plan = json!({"planId": "p-1", "revision": 3, "companies": [
        {"companyId": "c1", "companyKey": "acme", "text": "+ deal property x\n1 to create, 0 to update, 0 to archive, 0 blocked\n",
         "actions": [{"op": "create", "targetKind": "deal_property", "target": "x", "changes": []},
                     {"op": "update", "targetKind": "deal_property", "target": "y", "changes": [], "blocked": "no"}]},
        {"companyId": "c2", "companyKey": "beta", "text": "no changes\n", "actions": []},
        {"companyId": "c3", "companyKey": "", "text": "", "actions": [], "error": "portal unreachable"}]});
    let text = config::render_plan(&plan);
    assert!(text.starts_with("plan p-1 of revision 3\nacme (c1):\n  + deal property x\n"), "{text}");
    assert!(
        text.contains("beta (c2):\n  no changes\n") && text.contains("c3:\n  error: portal unreachable\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "1 of 3 companies with changes: 1 to create, 0 to update, 0 to archive, 1 blocked, 1 company could not be planned\n"
        ),
        "{text}"
    );

    let revisions = json!({"items": [{"number": 2, "author": "admin", "message": "undo", "createdAt": "2026-01-02T03:04:05Z", "rolledBackTo": 1}]});
    assert_eq!(
        config::render_revisions(&revisions),
        "REVISION  TIME                 AUTHOR  MESSAGE\n2         2026-01-02 03:04:05  admin   undo (restores revision 1)\n"
    );
    let entries = json!({"items": [{"at": "2026-01-02T03:04:05.123Z", "actor": "key:ops", "action": "config.revision", "resource": "config/2"}], "nextCursor": "n"});
    assert_eq!(
        audit::render(&entries),
        "TIME                 ACTOR    ACTION           RESOURCE\n2026-01-02 03:04:05  key:ops  config.revision  config/2\n(more: raise --limit)\n"
    );
    let st = json!({"config": null, "rollouts": [], "companies": 0});
    assert!(status::render(&st).contains("revision: none yet"));
    let imported = json!({"revision": {"number": 4, "message": "import"}, "companies": [{"companyId": "c1", "companyKey": "acme",
        "dealProperties": 1, "propertyGroups": 2, "pipelines": 0, "skipped": ["hs_x: HubSpot's own"]}]});
    assert_eq!(
        config::render_import(&imported),
        "acme (c1): adopted 1 deal property, 2 property groups, 0 pipelines\n  skipped: hs_x: HubSpot's own\nrevision 4: import\n"
    );
    assert_eq!(
        config::render_diff(&json!({"from": 1, "to": 2, "text": "~ a: 1 → 2\n"})),
        "revision 1 → 2\n~ a: 1 → 2\n"
    );
}

#[test]
fn a_service_run_alone_refuses_to_start_without_assertion_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let run = |keys: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gomark"));
        cmd.args(["run", "pipeline-tracker"])
            .env_clear()
            .env("GOMARK__DATABASE__URL", &db)
            .env("GOMARK__SERVER__GRPC_ADDR", "127.0.0.1:0")
            .env("GOMARK__SERVER__ADMIN_ADDR", "127.0.0.1:0");
        if let Some(keys) = keys {
            cmd.env("GOMARK__SERVER__ASSERTION_KEYS", keys);
        }
        cmd.output().expect("run gomark")
    };
    let missing = run(None);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("server.assertion_keys"), "names the setting: {stderr}");
    let short = run(Some("k1:AAAA"));
    assert_eq!(short.status.code(), Some(2), "a key too short is refused too");
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("server.assertion_keys") && !stderr.contains("AAAA"), "{stderr}");
}
