//! `gomark drift list|check|show`: what changed in a portal behind GoMark's back since its
//! revision was applied, and what each company's drift policy did about it.

use super::companies;
use super::output::{count, int, items, table, text, time};
use super::{CliError, Context};
use serde_json::{Value, json};

/// Pages `show` reads at most looking for a record (500 each).
const MAX_PAGES: usize = 20;

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
            let ids = companies::resolve(ctx, &companies).await?;
            let found = ctx.client.post(&["v1", "drift", "check"], &json!({"companyIds": ids})).await?;
            ctx.emit(&found, render_check);
        }
        DriftAction::Show { id } => {
            let record = find(ctx, &id).await?;
            ctx.emit(&record, |r| super::style::diff(&render_record(r), ctx.colour));
        }
    }
    Ok(())
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
}
