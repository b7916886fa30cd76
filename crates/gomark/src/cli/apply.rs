//! `gomark apply` and `gomark rollback`: store a revision, show its plan, ask, roll it
//! out and follow the rollout to its end.

use super::config::{fetch_plan, render_plan};
use super::output::{self, int, items, text};
use super::rollout::{StartOptions, start_and_follow};
use super::{CliError, Context};
use serde_json::{Value, json};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The desired-state document (YAML) to store as a new revision and roll out.
    #[arg(short, long, value_name = "doc.yaml", required_unless_present = "revision", conflicts_with = "revision")]
    pub file: Option<PathBuf>,
    /// Why: shown in the revision list and the audit log (with --file).
    #[arg(short, long, required_unless_present = "revision", conflicts_with = "revision")]
    pub message: Option<String>,
    /// Roll out this stored revision instead of a file.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub revision: Option<i64>,
    #[command(flatten)]
    pub rollout: StartOptions,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The revision to restore (as a new revision).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub to: i64,
    /// Why: shown in the revision list and the audit log.
    #[arg(short, long, default_value = "")]
    pub message: String,
    #[command(flatten)]
    pub rollout: StartOptions,
}

pub async fn apply(ctx: &Context, args: ApplyArgs) -> Result<(), CliError> {
    let revision = match (&args.file, args.revision) {
        (Some(path), _) => {
            let document = std::fs::read_to_string(path)
                .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", path.display())))?;
            let body = json!({"document": document, "message": args.message.clone().unwrap_or_default()});
            let stored = ctx.client.post(&["v1", "config", "revisions"], &body).await?;
            let number = revision_number(&stored)?;
            say(ctx, &format!("revision {number} stored: {}", text(&stored, "message")));
            plan_and_confirm(ctx, number, &args.rollout).await?;
            number
        }
        // A stored revision was reviewed when it was stored: roll it out directly.
        (None, Some(number)) => number,
        (None, None) => return Err(CliError::Invalid("pass --file doc.yaml or --revision N".into())),
    };
    start_and_follow(ctx, revision, &args.rollout).await
}

pub async fn rollback(ctx: &Context, args: RollbackArgs) -> Result<(), CliError> {
    let body = json!({"to": args.to, "message": args.message});
    let restored = ctx.client.post(&["v1", "config", "rollback"], &body).await?;
    let number = revision_number(&restored)?;
    say(ctx, &format!("revision {number} restores revision {}", args.to));
    plan_and_confirm(ctx, number, &args.rollout).await?;
    start_and_follow(ctx, number, &args.rollout).await
}

fn revision_number(revision: &Value) -> Result<i64, CliError> {
    Some(int(revision, "number"))
        .filter(|n| *n > 0)
        .ok_or_else(|| CliError::Invalid("the gateway returned a revision without a number".into()))
}

/// Human output only: `--json` prints one document, the final rollout.
fn say(ctx: &Context, line: &str) {
    if !ctx.json {
        output::print(line);
    }
}

/// Shows what the rollout would do, then asks (unless `--yes`).
async fn plan_and_confirm(ctx: &Context, revision: i64, options: &StartOptions) -> Result<(), CliError> {
    let plan = fetch_plan(ctx, Some(revision), &options.companies).await?;
    say(ctx, &render_plan(&plan));
    if options.yes {
        return Ok(());
    }
    let companies = items(&plan, "companies").len();
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Invalid(
            "cannot ask for confirmation: stdin is not a terminal; pass --yes to apply without asking".into(),
        ));
    }
    // The question goes to stderr so that stdout stays the command's output.
    {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "apply revision {revision} to {companies} {}? [y/N] ", plural(companies));
        let _ = err.flush();
    }
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Invalid(format!("reading the answer: {e}")))?;
    if confirmed(&answer) { Ok(()) } else { Err(CliError::Failed("not applied".into())) }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "company" } else { "companies" }
}

/// `y` or `yes`, in any case; anything else (including nothing) is no.
pub fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}
