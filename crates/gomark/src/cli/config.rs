//! Configuration as code: `gomark diff`, `plan`, `revisions` and `import`.

use super::output::{count, int, items, table, text, time};
use super::{CliError, Context};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The older revision.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub from: i64,
    /// The newer revision; the latest when omitted.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub to: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The revision to plan; the latest when omitted.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..), conflicts_with = "file")]
    pub revision: Option<i64>,
    /// A proposed document (YAML) to plan instead; nothing is stored until it is applied.
    #[arg(short, long, value_name = "doc.yaml")]
    pub file: Option<std::path::PathBuf>,
    /// The message the revision will carry if the plan is applied (with --file).
    #[arg(short, long, requires = "file")]
    pub message: Option<String>,
    /// Only this company (repeatable; id, key or name); every company of the revision otherwise.
    #[arg(long = "company", value_name = "COMPANY")]
    pub companies: Vec<String>,
    /// Write the saved plan's id to this file: `gomark apply FILE` applies exactly it.
    #[arg(long = "out", value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    /// Exit 0 when nothing would change, 2 when something would, 1 on error (as terraform).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, clap::Args)]
pub struct RevisionsArgs {
    /// How many revisions to list, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Only this company (repeatable; id, key or name); every registered company otherwise.
    #[arg(long = "company", value_name = "COMPANY")]
    pub companies: Vec<String>,
    /// Why: shown in the revision list and the audit log.
    #[arg(short, long, default_value = "import what the portals hold")]
    pub message: String,
}

pub async fn diff(ctx: &Context, args: DiffArgs) -> Result<(), CliError> {
    let mut query = vec![("from", args.from.to_string())];
    if let Some(to) = args.to {
        query.push(("to", to.to_string()));
    }
    let diff = ctx.client.get(&["v1", "config", "diff"], &query).await?;
    ctx.emit(&diff, |d| super::style::diff(&render_diff(d), ctx.colour));
    Ok(())
}

/// Returns the exit status: 2 for a plan with changes under `--detailed-exitcode`.
pub async fn plan(ctx: &Context, args: PlanArgs) -> Result<u8, CliError> {
    let companies = super::companies::resolve(ctx, &args.companies).await?;
    let mut body = json!({"companyIds": companies});
    if let Some(r) = args.revision {
        body["revision"] = json!(r);
    }
    if let Some(path) = &args.file {
        let document = std::fs::read_to_string(path)
            .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        body["document"] = json!(document);
        body["message"] = json!(args.message.clone().unwrap_or_else(|| format!("apply {}", path.display())));
    }
    let plan = request_plan(ctx, &body).await?;
    ctx.emit(&plan, |p| super::style::diff(&render_plan(p), ctx.colour));
    if let Some(out) = &args.out {
        let id = text(&plan, "planId");
        std::fs::write(out, format!("{id}\n"))
            .map_err(|e| CliError::Invalid(format!("cannot write {}: {e}", out.display())))?;
        if !ctx.json {
            super::output::print(&format!(
                "saved plan {id} to {}: apply it with `gomark apply {}`",
                out.display(),
                out.display()
            ));
        }
    }
    Ok(if args.detailed_exitcode && has_changes(&plan) { 2 } else { 0 })
}

/// Whether applying the plan would change any portal (blocked actions never apply).
pub fn has_changes(plan: &Value) -> bool {
    items(plan, "companies")
        .iter()
        .flat_map(|c| items(c, "actions"))
        .any(|a| a.get("blocked").is_none_or(Value::is_null))
}

/// POST /v1/config/plan: the plan is saved by the gateway, and its id is `planId`.
pub async fn request_plan(ctx: &Context, body: &Value) -> Result<Value, CliError> {
    post_counting(ctx, &["v1", "config", "plan"], body, "plan").await
}

/// POSTs `body` to a route that works company by company (a plan, an import). When
/// progress is shown, the gateway is asked for the route's event stream, whose counts move
/// a companies bar and whose `result` event is the answer; otherwise it is a plain POST.
async fn post_counting(ctx: &Context, segments: &[&str], body: &Value, result: &str) -> Result<Value, CliError> {
    let target = super::progress::target(ctx.json);
    if target.is_hidden() {
        return ctx.client.post(segments, body).await;
    }
    let mut response = ctx.client.post_events(segments, body).await?;
    let mut bar = None;
    let mut parser = super::rollout::sse::Parser::new();
    // The bar is dropped on every return, which clears it (see progress::ticking).
    while let Some(chunk) = response.chunk().await.map_err(|e| ctx.client.transport(&e))? {
        for event in parser.feed(&chunk) {
            if let Some(end) = counted_event(&event, result, &mut bar, || super::progress::target(ctx.json)) {
                return end;
            }
        }
    }
    Err(CliError::Invalid(format!("{} ended the event stream before its {result}", ctx.client.gateway())))
}

/// Draws a `progress` event on `bar` (made on `target` at the first count, so it never
/// shows a count of nothing); the `result` event's JSON (or the `error` event's problem)
/// once the stream ends.
fn counted_event(
    event: &super::rollout::sse::Event,
    result: &str,
    bar: &mut Option<indicatif::ProgressBar>,
    target: impl FnOnce() -> indicatif::ProgressDrawTarget,
) -> Option<Result<Value, CliError>> {
    let data = || serde_json::from_str::<Value>(&event.data);
    match event.event.as_str() {
        "progress" => {
            // A malformed count is skipped: the next one carries the whole count again.
            if let Ok(count) = data() {
                let total = count["total"].as_u64().unwrap_or(0);
                let bar = bar.get_or_insert_with(|| super::progress::companies(total, target()));
                bar.set_length(total);
                bar.set_position(count["done"].as_u64().unwrap_or(0));
            }
            None
        }
        "error" => {
            let status = data().ok().and_then(|p| p["status"].as_u64()).and_then(|s| u16::try_from(s).ok());
            Some(Err(CliError::from_response(status.unwrap_or(500), &event.data)))
        }
        name if name == result => {
            Some(data().map_err(|_| CliError::Invalid(format!("the gateway sent a {result} that is not JSON"))))
        }
        _ => None,
    }
}

pub async fn revisions(ctx: &Context, args: RevisionsArgs) -> Result<(), CliError> {
    let page = ctx.client.get(&["v1", "config", "revisions"], &[("limit", args.limit.to_string())]).await?;
    ctx.emit(&page, render_revisions);
    Ok(())
}

pub async fn import(ctx: &Context, args: ImportArgs) -> Result<(), CliError> {
    let companies = super::companies::resolve(ctx, &args.companies).await?;
    let body = json!({"companyIds": companies, "message": args.message});
    let imported = post_counting(ctx, &["v1", "config", "import"], &body, "import").await?;
    ctx.emit(&imported, render_import);
    Ok(())
}

/// A diff: a heading, then the API's own text (`+ path: value`, `~ path: a → b`, …).
pub fn render_diff(diff: &Value) -> String {
    let mut out = format!("revision {} → {}\n", int(diff, "from"), int(diff, "to"));
    let body = text(diff, "text");
    out.push_str(if body.is_empty() { "no changes\n" } else { body });
    out
}

/// `name (id)`, or just the id when the company has no key in the document.
fn company_label(c: &Value) -> String {
    match (text(c, "companyKey"), text(c, "companyId")) {
        ("", id) => id.to_owned(),
        (key, id) => format!("{key} ({id})"),
    }
}

fn indent(body: &str) -> String {
    body.lines().map(|l| format!("  {l}\n")).collect()
}

/// A plan: per company its text (or its error), then one summary line.
pub fn render_plan(plan: &Value) -> String {
    let companies = items(plan, "companies");
    let id = match text(plan, "planId") {
        "" => String::new(),
        id => format!(" {id}"),
    };
    let mut out = match int(plan, "revision") {
        0 => format!("plan{id} of a proposed document (on revision {})\n", int(plan, "baseRevision")),
        n => format!("plan{id} of revision {n}\n"),
    };
    let mut changed = 0;
    let mut errors = 0;
    let mut blocked = 0;
    let mut warnings = 0;
    // In the order the API's own summary uses; an op it may add later is still counted.
    let mut ops: Vec<(String, i64)> = ["create", "update", "archive"].iter().map(|op| (op.to_string(), 0)).collect();
    for company in companies {
        out.push_str(&format!("{}:\n", company_label(company)));
        let actions = items(company, "actions");
        match company.get("error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            Some(error) => {
                errors += 1;
                out.push_str(&format!("  error: {error}\n"));
            }
            None => {
                let body = text(company, "text");
                out.push_str(&indent(if body.is_empty() && actions.is_empty() { "no changes" } else { body }));
            }
        }
        if !actions.is_empty() {
            changed += 1;
        }
        for action in actions {
            warnings += items(action, "warnings").len();
            // Blocked actions will not be applied, so they are counted only as blocked.
            if action.get("blocked").is_some_and(|b| !b.is_null()) {
                blocked += 1;
            } else {
                let op = text(action, "op");
                match ops.iter_mut().find(|(known, _)| known == op) {
                    Some((_, n)) => *n += 1,
                    None => ops.push((op.to_owned(), 1)),
                }
            }
        }
    }
    let ops: Vec<String> = ops.iter().map(|(op, n)| format!("{n} to {op}")).collect();
    out.push_str(&format!(
        "{} of {} with changes: {}, {} blocked",
        changed,
        count(companies.len() as i64, "company", "companies"),
        ops.join(", "),
        blocked
    ));
    if errors > 0 {
        out.push_str(&format!(", {} could not be planned", count(errors, "company", "companies")));
    }
    if warnings > 0 {
        out.push_str(&format!(", {}", count(warnings as i64, "warning", "warnings")));
    }
    out.push('\n');
    out
}

/// A page of revisions as a table, newest first.
pub fn render_revisions(page: &Value) -> String {
    let revisions = items(page, "items");
    if revisions.is_empty() {
        return "no revisions yet\n".to_owned();
    }
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            let mut message = text(r, "message").to_owned();
            if let Some(to) = r.get("rolledBackTo").and_then(Value::as_i64) {
                message = format!("{message} (restores revision {to})");
            }
            vec![int(r, "number").to_string(), time(text(r, "createdAt")), text(r, "author").to_owned(), message]
        })
        .collect();
    let mut out = table(&["REVISION", "TIME", "AUTHOR", "MESSAGE"], &rows);
    if page.get("nextCursor").is_some_and(Value::is_string) {
        out.push_str("(more: raise --limit)\n");
    }
    out
}

/// What an import adopted per company, and the revision it made.
pub fn render_import(imported: &Value) -> String {
    let mut out = String::new();
    for c in items(imported, "companies") {
        out.push_str(&format!(
            "{}: adopted {}, {}, {}\n",
            company_label(c),
            count(int(c, "dealProperties"), "deal property", "deal properties"),
            count(int(c, "propertyGroups"), "property group", "property groups"),
            count(int(c, "pipelines"), "pipeline", "pipelines"),
        ));
        for skipped in items(c, "skipped") {
            out.push_str(&format!("  skipped: {}\n", skipped.as_str().unwrap_or_default()));
        }
    }
    let revision = &imported["revision"];
    out.push_str(&format!("revision {}: {}\n", int(revision, "number"), text(revision, "message")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::progress::testing::Screen;
    use crate::cli::rollout::sse::Parser;

    /// Feeds the gateway's plan stream, in awkward chunks, through the parser and a bar
    /// drawn on `screen`.
    fn follow(stream: &str, screen: &Screen) -> Option<Result<Value, CliError>> {
        follow_to("plan", stream, screen)
    }

    fn follow_to(result: &str, stream: &str, screen: &Screen) -> Option<Result<Value, CliError>> {
        let mut parser = Parser::new();
        let mut bar = None;
        for chunk in stream.as_bytes().chunks(7) {
            for event in parser.feed(chunk) {
                if let Some(end) = counted_event(&event, result, &mut bar, || screen.target()) {
                    return Some(end);
                }
                if let Some(bar) = &bar {
                    bar.force_draw();
                }
            }
        }
        None
    }

    #[test]
    fn the_plan_stream_counts_companies_up_to_all_of_them_then_gives_the_plan() {
        let screen = Screen::default();
        let stream = "event: progress\ndata: {\"done\":0,\"total\":3}\n\n\
                      event: progress\ndata: {\"done\":2,\"total\":3}\n\n\
                      event: progress\ndata: {\"done\":3,\"total\":3}\n\n\
                      event: plan\ndata: {\"planId\":\"p1\",\"companies\":[]}\n\n";
        let plan = follow(stream, &screen).expect("the stream ends with the plan").expect("a plan");
        assert_eq!(plan["planId"], "p1");
        let drawn = screen.text();
        assert!(drawn.contains("3/3 companies"), "{drawn}");
        assert!(!drawn.contains("/0 companies"), "no count of nothing: {drawn}");
    }

    #[test]
    fn an_error_event_is_the_api_error_it_holds() {
        let screen = Screen::default();
        let stream = "event: progress\ndata: {\"done\":1,\"total\":3}\n\n\
                      event: error\ndata: {\"title\":\"Service Unavailable\",\"status\":503,\"detail\":\"try again\"}\n\n";
        let err = follow(stream, &screen).expect("the stream ends with the error").expect_err("an error");
        assert_eq!(err.status(), Some(503));
        assert!(follow("event: progress\ndata: {\"done\":1,\"total\":3}\n\n", &screen).is_none(), "no plan yet");
    }

    #[test]
    fn an_import_stream_ends_with_its_own_event() {
        let screen = Screen::default();
        let stream = "event: progress\ndata: {\"done\":2,\"total\":2}\n\n\
                      event: plan\ndata: {\"planId\":\"not this\"}\n\n\
                      event: import\ndata: {\"revision\":{\"number\":4}}\n\n";
        let imported = follow_to("import", stream, &screen).expect("the import").expect("JSON");
        assert_eq!(imported["revision"]["number"], 4);
        assert!(screen.text().contains("2/2 companies"), "{}", screen.text());
    }
}
