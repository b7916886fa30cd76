//! `gomark apply` and `gomark rollback`: plan, show the plan, ask, apply exactly that plan
//! and follow its rollout to the end. Nothing is stored before the answer is yes: a
//! proposed document becomes a revision only when its plan is applied.

use super::config::{render_plan, request_plan};
use super::output::{self, items, text};
use super::rollout::{StartOptions, follow_rollout};
use super::{CliError, Context};
use serde_json::{Value, json};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A saved plan to apply: the file `gomark plan --out FILE` wrote, or a plan id.
    #[arg(value_name = "PLAN", conflicts_with_all = ["file", "revision"])]
    pub plan: Option<String>,
    /// The desired-state document (YAML) to plan, and store as a revision if applied.
    #[arg(short, long, value_name = "doc.yaml", conflicts_with = "revision")]
    pub file: Option<PathBuf>,
    /// Why: shown in the revision list and the audit log (with --file).
    #[arg(short, long, requires = "file")]
    pub message: Option<String>,
    /// Plan and apply this stored revision instead of a file.
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

/// A plan id, read from the file `gomark plan --out` wrote, or given as is.
fn plan_id(plan: &str) -> Result<String, CliError> {
    let path = std::path::Path::new(plan);
    let id = if path.is_file() {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", path.display())))?
            .trim()
            .to_owned()
    } else {
        plan.trim().to_owned()
    };
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') || id.len() > 64 {
        return Err(CliError::Invalid(format!("{plan} is neither a plan file nor a plan id")));
    }
    Ok(id)
}

pub async fn apply(ctx: &Context, args: ApplyArgs) -> Result<(), CliError> {
    let plan = match (&args.plan, &args.file, args.revision) {
        (Some(saved), _, _) => {
            let id = plan_id(saved)?;
            ctx.client.get(&["v1", "config", "plans", &id], &[]).await?
        }
        (None, Some(path), _) => {
            let document = std::fs::read_to_string(path)
                .map_err(|e| CliError::Invalid(format!("cannot read {}: {e}", path.display())))?;
            let message = args.message.clone().unwrap_or_else(|| format!("apply {}", path.display()));
            let companies = super::companies::resolve(ctx, &args.rollout.companies).await?;
            let body = json!({"document": document, "message": message, "companyIds": companies});
            request_plan(ctx, &body).await?
        }
        (None, None, revision) => {
            let companies = super::companies::resolve(ctx, &args.rollout.companies).await?;
            let mut body = json!({"companyIds": companies});
            if let Some(r) = revision {
                body["revision"] = json!(r);
            }
            request_plan(ctx, &body).await?
        }
    };
    confirm_and_apply(ctx, &plan, &args.rollout).await
}

pub async fn rollback(ctx: &Context, args: RollbackArgs) -> Result<(), CliError> {
    let companies = super::companies::resolve(ctx, &args.rollout.companies).await?;
    let body = json!({"rollbackTo": args.to, "message": args.message, "companyIds": companies});
    let plan = request_plan(ctx, &body).await?;
    confirm_and_apply(ctx, &plan, &args.rollout).await
}

/// Human output only: `--json` prints one document, the final rollout.
fn say(ctx: &Context, line: &str) {
    if !ctx.json {
        output::print(line);
    }
}

/// Shows the plan, asks (unless `--yes`), applies exactly it and follows the rollout.
async fn confirm_and_apply(ctx: &Context, plan: &Value, options: &StartOptions) -> Result<(), CliError> {
    say(ctx, &super::style::diff(&render_plan(plan), ctx.colour));
    let id = text(plan, "planId").to_owned();
    if id.is_empty() {
        return Err(CliError::Invalid("the gateway returned a plan without an id".into()));
    }
    if !options.yes {
        ask(items(plan, "companies").len())?;
    }
    let mut body = json!({});
    if let Some(c) = options.concurrency {
        body["concurrency"] = json!(c);
    }
    let applied = ctx.client.post(&["v1", "config", "plans", &id, "apply"], &body).await?;
    let revision = &applied["revision"];
    let restores = revision["rolledBackTo"].as_i64().map(|to| format!(" restores revision {to}")).unwrap_or_default();
    say(ctx, &format!("revision {}{restores}: {}", revision["number"], text(revision, "message")));
    follow_rollout(ctx, applied["rollout"].clone()).await
}

/// Asks on the terminal; anything but yes is an error that applies nothing.
fn ask(companies: usize) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Invalid(
            "cannot ask for confirmation: stdin is not a terminal; pass --yes to apply without asking".into(),
        ));
    }
    // The question goes to stderr so that stdout stays the command's output.
    {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "apply this plan to {companies} {}? [y/N] ", plural(companies));
        let _ = err.flush();
    }
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Invalid(format!("reading the answer: {e}")))?;
    if confirmed(&answer) { Ok(()) } else { Err(CliError::Failed("not applied; nothing was stored".into())) }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "company" } else { "companies" }
}

/// `y` or `yes`, in any case; anything else (including nothing) is no.
pub fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::plan_id;

    #[test]
    fn plan_ids_come_from_files_or_as_is() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("p.plan");
        std::fs::write(&file, "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000\n").expect("write");
        assert_eq!(
            plan_id(file.to_str().expect("utf-8")).ok().as_deref(),
            Some("0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000")
        );
        assert_eq!(plan_id("0190aaaa-bbbb").ok().as_deref(), Some("0190aaaa-bbbb"));
        assert!(plan_id("no such file or id").is_err());
    }
}
