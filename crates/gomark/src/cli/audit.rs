//! `gomark audit`: who changed what, newest first, for one company or for the portfolio.

use super::output::{items, table, text, time};
use super::{CliError, Context};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// This company's audit log (id, key or name); the portfolio's own entries (revisions,
    /// rollbacks) otherwise.
    #[arg(long, value_name = "COMPANY")]
    pub company: Option<String>,
    /// How many entries, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
}

pub async fn run(ctx: &Context, args: AuditArgs) -> Result<(), CliError> {
    let query = [("limit", args.limit.to_string())];
    let page = match &args.company {
        Some(company) => {
            let id = super::companies::resolve_one(ctx, company).await?;
            ctx.client.get(&["v1", "companies", &id, "audit"], &query).await?
        }
        None => ctx.client.get(&["v1", "audit"], &query).await?,
    };
    ctx.emit(&page, render);
    Ok(())
}

/// `time actor action resource`, one entry per line.
pub fn render(page: &Value) -> String {
    let entries = items(page, "items");
    if entries.is_empty() {
        return "no audit entries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                time(text(e, "at")),
                text(e, "actor").to_owned(),
                text(e, "action").to_owned(),
                text(e, "resource").to_owned(),
            ]
        })
        .collect();
    let mut out = table(&["TIME", "ACTOR", "ACTION", "RESOURCE"], &rows);
    if page.get("nextCursor").is_some_and(Value::is_string) {
        out.push_str("(more: raise --limit)\n");
    }
    out
}
