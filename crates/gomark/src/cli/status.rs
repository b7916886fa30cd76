//! `gomark status`: the latest revision, the latest rollouts and how many companies there
//! are, in one look.

use super::output::{count, int, items, table, text, time};
use super::{CliError, Context};
use serde_json::{Value, json};

/// How many rollouts the overview lists (newest first).
const ROLLOUTS: u32 = 10;
/// A guard against a gateway that keeps returning a cursor.
const MAX_PAGES: usize = 10_000;

pub async fn run(ctx: &Context) -> Result<(), CliError> {
    let config = match ctx.client.get(&["v1", "config"], &[]).await {
        Ok(mut revision) => {
            // The document can be long; `gomark revisions` and the API have it.
            if let Some(fields) = revision.as_object_mut() {
                fields.remove("document");
            }
            revision
        }
        // No revision has been stored yet.
        Err(err) if err.status() == Some(404) => Value::Null,
        Err(err) => return Err(err),
    };
    let rollouts = ctx.client.get(&["v1", "rollouts"], &[("limit", ROLLOUTS.to_string())]).await?;
    let companies = count_companies(ctx).await?;
    let status = json!({"config": config, "rollouts": items(&rollouts, "items"), "companies": companies});
    ctx.emit(&status, render);
    Ok(())
}

async fn count_companies(ctx: &Context) -> Result<usize, CliError> {
    let mut total = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("limit", "500".to_owned())];
        if let Some(c) = cursor.take() {
            query.push(("cursor", c));
        }
        let page = ctx.client.get(&["v1", "companies"], &query).await?;
        total += items(&page, "items").len();
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(total)
}

/// `{config, rollouts, companies}` for people.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let config = &status["config"];
    if config.is_object() {
        out.push_str(&format!(
            "revision {} by {} at {}: {}\n",
            int(config, "number"),
            text(config, "author"),
            time(text(config, "createdAt")),
            text(config, "message")
        ));
        if let Some(to) = config.get("rolledBackTo").and_then(Value::as_i64) {
            out.push_str(&format!("  (restores revision {to})\n"));
        }
    } else {
        out.push_str("revision: none yet (store one with `gomark apply --file …` or `gomark import`)\n");
    }
    out.push_str(&format!("companies: {}\n", int(status, "companies")));
    let rollouts = items(status, "rollouts");
    if rollouts.is_empty() {
        out.push_str("rollouts: none\n");
    } else {
        out.push_str("rollouts:\n");
        let rows: Vec<Vec<String>> = rollouts
            .iter()
            .map(|r| {
                let mut state = text(r, "state").to_owned();
                if int(r, "failed") > 0 {
                    state.push_str(&format!(" ({})", count(int(r, "failed"), "failed", "failed")));
                }
                vec![
                    format!("  {}", text(r, "id")),
                    int(r, "revision").to_string(),
                    state,
                    format!("{}/{}", int(r, "done"), int(r, "total")),
                    time(text(r, "createdAt")),
                ]
            })
            .collect();
        out.push_str(&table(&["  ID", "REVISION", "STATE", "DONE/TOTAL", "STARTED"], &rows));
    }
    out
}
