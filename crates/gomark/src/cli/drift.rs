//! `gomark drift list|check|show`: what changed in a portal behind GoMark's back since its
//! revision was applied, and what each company's drift policy did about it.

use super::companies;
use super::output::{count, int, items, table, text, time};
use super::{CliError, Context, progress};
use futures::StreamExt as _;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use std::future::Future;

/// Pages `show` reads at most looking for a record (500 each).
const MAX_PAGES: usize = 20;
/// Requests a check makes at most, however large the portfolio: it spends a bounded share
/// of the key's rate limit (600 a minute by default), and the bar moves in 1% steps.
const MAX_CHECK_REQUESTS: usize = 100;
/// Batches checked at once: enough to keep the orchestrator busy, few enough to leave
/// room for its scheduled checks (it checks a batch's companies one after another).
const CHECK_CONCURRENCY: usize = 4;

#[derive(Debug, clap::Subcommand)]
pub enum DriftAction {
    /// List the drift found, newest first.
    List {
        /// Only this company (id, key or name).
        #[arg(long, value_name = "COMPANY")]
        company: Option<String>,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
    },
    /// Check the portals for drift now (it is also checked on a schedule).
    Check {
        /// Only this company (repeatable; id, key or name); every company otherwise.
        #[arg(long = "company", value_name = "COMPANY")]
        companies: Vec<String>,
    },
    /// Show one drift record with the actions that would undo it.
    Show { id: String },
}

pub async fn run(ctx: &Context, action: DriftAction) -> Result<(), CliError> {
    match action {
        DriftAction::List { company, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(c) = company {
                query.push(("companyId", companies::resolve_one(ctx, &c).await?));
            }
            let page = ctx.client.get(&["v1", "drift"], &query).await?;
            ctx.emit(&page, |p| render_list(items(p, "items")));
        }
        DriftAction::Check { companies } => {
            let found = check(ctx, &companies).await?;
            ctx.emit(&found, render_check);
        }
        DriftAction::Show { id } => {
            let record = find(ctx, &id).await?;
            ctx.emit(&record, |r| super::style::diff(&render_record(r), ctx.colour));
        }
    }
    Ok(())
}

/// Checks the companies named, or every company, in batches so that a bar can count
/// them. The gateway decides what a check of a company means (one without an applied
/// revision is not checked); the CLI only adds the batches' answers up.
async fn check(ctx: &Context, given: &[String]) -> Result<Value, CliError> {
    let ids = if given.is_empty() {
        companies::list(ctx).await?.iter().map(|c| text(c, "id").to_owned()).collect()
    } else {
        companies::resolve(ctx, given).await?
    };
    let bar = progress::companies(ids.len() as u64, progress::target(ctx.json));
    let found = check_in_batches(&ids, &bar, |batch| async move {
        ctx.client.post(&["v1", "drift", "check"], &json!({"companyIds": batch})).await
    })
    .await;
    bar.finish_and_clear();
    found
}

/// Runs `check` over `ids` in at most [`MAX_CHECK_REQUESTS`] batches, [`CHECK_CONCURRENCY`]
/// at a time, counting each batch's companies on `bar` as it is answered; returns the
/// answers added up, in the order of `ids`, as one answer of the API (`checked`, `drifted`).
pub async fn check_in_batches<F, Fut>(ids: &[String], bar: &ProgressBar, check: F) -> Result<Value, CliError>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = Result<Value, CliError>>,
{
    let size = ids.len().div_ceil(MAX_CHECK_REQUESTS).max(1);
    let mut answers = futures::stream::iter(ids.chunks(size))
        .map(|batch| {
            let answer = check(batch.to_vec());
            async move {
                let answer = answer.await;
                bar.inc(batch.len() as u64);
                answer
            }
        })
        .buffered(CHECK_CONCURRENCY);
    let mut checked = 0;
    let mut drifted = Vec::new();
    while let Some(answer) = answers.next().await {
        let answer = answer?;
        checked += int(&answer, "checked");
        drifted.extend(items(&answer, "drifted").iter().cloned());
    }
    Ok(json!({"checked": checked, "drifted": drifted}))
}

/// The API lists drift but has no read by id: page through the list.
async fn find(ctx: &Context, id: &str) -> Result<Value, CliError> {
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("limit", "500".to_owned())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = ctx.client.get(&["v1", "drift"], &query).await?;
        if let Some(record) = items(&page, "items").iter().find(|r| text(r, "id") == id) {
            return Ok(record.clone());
        }
        cursor = page.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Err(CliError::Invalid(format!("no drift record {id:?}: `gomark drift list` shows them")))
}

/// Who made it: `user (CRM_UI 42)`, or `-` when HubSpot did not say.
fn source(record: &Value) -> String {
    let Some(s) = record.get("source").filter(|s| s.is_object()) else { return "-".to_owned() };
    match (text(s, "changeSource"), text(s, "sourceId")) {
        ("", _) => text(s, "kind").to_owned(),
        (change, "") => format!("{} ({change})", text(s, "kind")),
        (change, id) => format!("{} ({change} {id})", text(s, "kind")),
    }
}

fn outcome(record: &Value) -> String {
    match (text(record, "policy"), text(record, "resolution")) {
        (policy, "") => policy.to_owned(),
        (policy, resolution) => format!("{policy}: {resolution}"),
    }
}

/// Drift records as a table.
pub fn render_list(records: &[Value]) -> String {
    if records.is_empty() {
        return "no drift found\n".to_owned();
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                text(r, "id").to_owned(),
                text(r, "companyId").to_owned(),
                int(r, "revision").to_string(),
                time(text(r, "detectedAt")),
                items(r, "actions").len().to_string(),
                source(r),
                outcome(r),
            ]
        })
        .collect();
    table(&["ID", "COMPANY", "REVISION", "DETECTED", "ACTIONS", "SOURCE", "POLICY"], &rows)
}

/// What a check looked at and found.
pub fn render_check(found: &Value) -> String {
    let drifted = items(found, "drifted");
    let mut out =
        format!("checked {}: {} drifted\n", count(int(found, "checked"), "company", "companies"), drifted.len());
    if !drifted.is_empty() {
        out.push_str(&render_list(drifted));
    }
    out
}

/// One record: where, when, the policy's outcome, then each action that would undo it.
pub fn render_record(record: &Value) -> String {
    let mut out = format!(
        "drift {}\ncompany: {}\nrevision: {}\ndetected: {}\nsource: {}\npolicy: {}\n",
        text(record, "id"),
        text(record, "companyId"),
        int(record, "revision"),
        time(text(record, "detectedAt")),
        source(record),
        outcome(record)
    );
    let actions = items(record, "actions");
    out.push_str(&format!("{} to undo it:\n", count(actions.len() as i64, "action", "actions")));
    for a in actions {
        let sign = match text(a, "op") {
            "create" => "+",
            "archive" => "-",
            _ => "~",
        };
        out.push_str(&format!("  {sign} {} {}\n", text(a, "targetKind"), text(a, "target")));
        for c in items(a, "changes") {
            let field = text(c, "field");
            out.push_str(&format!(
                "      {field}: {} → {}\n",
                c.get("before").unwrap_or(&Value::Null),
                c.get("after").unwrap_or(&Value::Null)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_renders_as_a_table_and_a_record() {
        let record = json!({"id": "d1", "companyId": "c1", "revision": 3, "detectedAt": "2026-01-02T03:04:05Z",
            "policy": "alert", "actions": [{"op": "update", "targetKind": "deal_property", "target": "seats",
            "changes": [{"field": "label", "before": "Seats", "after": "Seat count"}]}]});
        let list = render_list(std::slice::from_ref(&record));
        assert!(list.starts_with("ID  ") && list.contains("d1  c1") && list.contains("alert"), "{list}");
        let shown = render_record(&record);
        assert!(shown.contains("1 action to undo it:\n  ~ deal_property seats\n"), "{shown}");
        assert!(shown.contains("label: \"Seats\" → \"Seat count\""), "{shown}");
        assert!(shown.contains("source: -\n"), "{shown}");
        let mut by_user = record.clone();
        by_user["source"] = json!({"kind": "user", "changeSource": "CRM_UI", "sourceId": "77"});
        assert!(render_record(&by_user).contains("source: user (CRM_UI 77)\n"));
        assert!(render_list(&[by_user]).contains("user (CRM_UI 77)"));
        let check = render_check(&json!({"checked": 2, "drifted": []}));
        assert_eq!(check, "checked 2 companies: 0 drifted\n");
    }

    /// A fake gateway: each company is checked, and every third has drifted.
    async fn answer(batch: Vec<String>, requests: &std::sync::atomic::AtomicUsize) -> Result<Value, CliError> {
        requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Answers arrive out of order; the sum must not.
        tokio::task::yield_now().await;
        let drifted: Vec<Value> = batch
            .iter()
            .filter(|id| id.parse::<usize>().is_ok_and(|n| n % 3 == 0))
            .map(|id| json!({"companyId": id}))
            .collect();
        Ok(json!({"checked": batch.len(), "drifted": drifted}))
    }

    #[tokio::test]
    async fn a_check_counts_every_company_on_the_bar_and_adds_the_answers_up() {
        for n in [0_usize, 1, 7, 250] {
            let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            let requests = std::sync::atomic::AtomicUsize::new(0);
            let bar = crate::cli::progress::companies(n as u64, indicatif::ProgressDrawTarget::hidden());
            let found = check_in_batches(&ids, &bar, |batch| answer(batch, &requests)).await.expect("checked");
            assert_eq!((bar.position(), bar.length()), (n as u64, Some(n as u64)), "{n} of {n} companies");
            assert_eq!(int(&found, "checked"), n as i64);
            let drifted: Vec<&str> = items(&found, "drifted").iter().map(|d| text(d, "companyId")).collect();
            let expected: Vec<String> = (0..n).filter(|i| i % 3 == 0).map(|i| i.to_string()).collect();
            assert_eq!(drifted, expected, "in the order of the companies");
            let requests = requests.into_inner();
            assert!(
                requests <= MAX_CHECK_REQUESTS && (n == 0 || requests >= n.min(MAX_CHECK_REQUESTS) / 2),
                "{requests}"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_batch_fails_the_check() {
        let ids: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let bar = crate::cli::progress::companies(5, indicatif::ProgressDrawTarget::hidden());
        let found = check_in_batches(&ids, &bar, |batch| async move {
            if batch.contains(&"3".to_owned()) { Err(CliError::Failed("no".into())) } else { Ok(json!({"checked": 1})) }
        })
        .await;
        assert!(found.is_err());
    }
}
