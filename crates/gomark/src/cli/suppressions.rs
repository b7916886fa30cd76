//! `gomark suppressions list|add|remove`: the portfolio suppression list, people no
//! company may contact (opt-outs from any company, do-not-contact, legal holds). Every
//! change is audited (upso-cadence's audit log, under `portfolio`).

use super::output::{items, table, text, time};
use super::{CliError, Context};
use serde_json::{Value, json};

#[derive(Debug, clap::Subcommand)]
pub enum SuppressionAction {
    /// Everyone on the list.
    List,
    /// Put a person on the list: no company contacts them any more.
    Add {
        email: String,
        /// Why: opt_out, do_not_contact or legal_hold.
        #[arg(long, default_value = "do_not_contact", value_parser = ["opt_out", "do_not_contact", "legal_hold"])]
        kind: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Take a person off the list (a legal hold needs the admin role).
    Remove { email: String },
}

pub async fn run(ctx: &Context, action: SuppressionAction) -> Result<(), CliError> {
    const PATH: [&str; 3] = ["v1", "portfolio", "suppressions"];
    match action {
        SuppressionAction::List => {
            let page = ctx.client.get(&PATH, &[]).await?;
            ctx.emit(&page, render);
        }
        SuppressionAction::Add { email, kind, reason } => {
            let body = json!({"email": email, "kind": kind, "reason": reason});
            let added = ctx.client.post(&PATH, &body).await?;
            ctx.emit(&added, |v| {
                let who = text(&v["suppression"], "person");
                if v["added"].as_bool() == Some(true) {
                    format!("{who} is now suppressed for every company\n")
                } else {
                    format!("{who} was already suppressed ({})\n", text(&v["suppression"], "kind"))
                }
            });
        }
        SuppressionAction::Remove { email } => {
            let removed = ctx.client.delete(&["v1", "portfolio", "suppressions", &email]).await?;
            ctx.emit(&removed, |v| {
                if v["removed"].as_bool() == Some(true) {
                    format!("{email} is no longer suppressed\n")
                } else {
                    format!("{email} was not on the list\n")
                }
            });
        }
    }
    Ok(())
}

/// `person kind source actor since`, one per line.
pub fn render(page: &Value) -> String {
    let entries = items(page, "items");
    if entries.is_empty() {
        return "nobody is suppressed\n".to_owned();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let source = match text(e, "sourceCompanyId") {
                "" => "portfolio".to_owned(),
                company => company.to_owned(),
            };
            vec![
                text(e, "person").to_owned(),
                text(e, "kind").to_owned(),
                source,
                text(e, "actor").to_owned(),
                time(text(e, "createdAt")),
            ]
        })
        .collect();
    table(&["PERSON", "KIND", "SOURCE", "ACTOR", "SINCE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_list() {
        let page = json!({"items": [
            {"person": "ann@x.example", "kind": "opt_out", "sourceCompanyId": "c-a", "actor": "system:upsell-engine",
             "createdAt": "2026-12-03T05:00:00.000Z"},
            {"person": "bo@x.example", "kind": "legal_hold", "actor": "apikey:legal", "createdAt": "2026-12-03T05:00:00.000Z"}
        ]});
        let out = render(&page);
        assert!(out.contains("ann@x.example") && out.contains("c-a") && out.contains("opt_out"), "{out}");
        assert!(out.lines().any(|l| l.contains("bo@x.example") && l.contains("portfolio")), "{out}");
        assert_eq!(render(&json!({"items": []})), "nobody is suppressed\n");
    }
}
