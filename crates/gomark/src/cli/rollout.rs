//! Rollouts: starting one and following it to the end (`apply`, `rollback`), and
//! `gomark rollout pause|resume|cancel|show|watch ID`.
//!
//! Progress comes from the SSE stream `GET /v1/rollouts/{rolloutId}/events`. A rollout is durable
//! on the server, so a broken stream loses nothing: the CLI falls back to polling.

pub mod display;
pub mod sse;

use super::output::{int, text};
use super::{CliError, Context, output};
use display::Progress;
use serde_json::{Value, json};
use std::time::Duration;

const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Polling gives up after this many failed reads in a row (the gateway is gone for good).
const MAX_POLL_FAILURES: u32 = 10;

#[derive(Debug, clap::Subcommand)]
pub enum RolloutAction {
    /// Stop starting new steps; steps in flight finish.
    Pause { id: String },
    /// Resume a paused or halted rollout (a halted one retries its failed steps).
    Resume { id: String },
    /// Cancel the steps not started yet.
    Cancel { id: String },
    /// Show a rollout with the state of every company.
    Show { id: String },
    /// Follow a rollout's progress until it ends.
    Watch { id: String },
}

/// How `apply` and `rollback` roll a revision out.
#[derive(Debug, Clone, clap::Args)]
pub struct StartOptions {
    /// Companies converged at once (1-64; the gateway's default is 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: Option<u32>,
    /// Only this company (repeatable; id, key or name); every company of the revision otherwise.
    #[arg(long = "company", value_name = "COMPANY")]
    pub companies: Vec<String>,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short, long)]
    pub yes: bool,
}

pub async fn run(ctx: &Context, action: RolloutAction) -> Result<(), CliError> {
    let (id, verb) = match &action {
        RolloutAction::Pause { id } => (id, "pause"),
        RolloutAction::Resume { id } => (id, "resume"),
        RolloutAction::Cancel { id } => (id, "cancel"),
        RolloutAction::Show { id } => {
            let rollout = ctx.client.get(&["v1", "rollouts", id], &[]).await?;
            ctx.emit(&rollout, |r| display::block(r).join("\n"));
            return Ok(());
        }
        RolloutAction::Watch { id } => {
            let rollout = ctx.client.get(&["v1", "rollouts", id], &[]).await?;
            let last = follow(ctx, id, rollout).await?;
            return finish(ctx, &last);
        }
    };
    let rollout = ctx.client.post(&["v1", "rollouts", id, verb], &json!({})).await?;
    ctx.emit(&rollout, render_state);
    Ok(())
}

/// One line: the rollout's state after an action.
pub fn render_state(rollout: &Value) -> String {
    let mut line = format!(
        "rollout {}: {} ({}/{} done, {} failed)",
        text(rollout, "id"),
        text(rollout, "state"),
        int(rollout, "done"),
        int(rollout, "total"),
        int(rollout, "failed")
    );
    if !text(rollout, "reason").is_empty() {
        line.push_str(&format!(": {}", text(rollout, "reason")));
    }
    line
}

/// Follows a rollout just started to its end and reports the outcome.
pub async fn follow_rollout(ctx: &Context, started: Value) -> Result<(), CliError> {
    let id = text(&started, "id").to_owned();
    if id.is_empty() {
        return Err(CliError::Invalid("the gateway started a rollout but returned no id".into()));
    }
    let last = follow(ctx, &id, started).await?;
    finish(ctx, &last)
}

/// Prints the end state (the JSON with `--json`, a summary otherwise); an error when the
/// rollout halted, was cancelled or left a company failed.
fn finish(ctx: &Context, rollout: &Value) -> Result<(), CliError> {
    ctx.emit(rollout, display::summary);
    display::outcome(rollout).map_err(CliError::Failed)
}

/// Shows progress until the rollout ends; returns its last state.
pub async fn follow(ctx: &Context, id: &str, first: Value) -> Result<Value, CliError> {
    let mut progress = Progress::new(ctx.json);
    progress.show(&first);
    let mut last = first;
    if display::is_terminal_state(&last) {
        return Ok(last);
    }
    match stream(ctx, id, &mut progress, &mut last).await {
        Ok(true) => return Ok(last),
        Ok(false) => {}
        Err(err) => {
            if !ctx.json {
                let reason = err.lines().first().cloned().unwrap_or_default();
                output::eprint(&format!("progress stream interrupted ({reason}); polling instead"));
            }
        }
    }
    poll(ctx, id, &mut progress, last).await
}

/// Follows the SSE stream; `Ok(true)` once the rollout ended, `Ok(false)` if the stream
/// closed before that.
async fn stream(ctx: &Context, id: &str, progress: &mut Progress, last: &mut Value) -> Result<bool, CliError> {
    let mut response = ctx.client.events(&["v1", "rollouts", id, "events"]).await?;
    let mut parser = sse::Parser::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ctx.client.transport(&e))? {
        for event in parser.feed(&chunk) {
            if event.event != "progress" {
                continue;
            }
            // A malformed event is skipped: the next one carries the whole state again.
            let Ok(rollout) = serde_json::from_str::<Value>(&event.data) else { continue };
            progress.show(&rollout);
            *last = rollout;
            if display::is_terminal_state(last) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn poll(ctx: &Context, id: &str, progress: &mut Progress, mut last: Value) -> Result<Value, CliError> {
    let mut failures = 0;
    while !display::is_terminal_state(&last) {
        tokio::time::sleep(POLL_INTERVAL).await;
        match ctx.client.get(&["v1", "rollouts", id], &[]).await {
            Ok(rollout) => {
                failures = 0;
                progress.show(&rollout);
                last = rollout;
            }
            // The API said no (404, 403): waiting will not change that.
            Err(err @ CliError::Api { .. }) if err.status().is_some_and(|s| s != 429 && s < 500) => return Err(err),
            Err(err) => {
                failures += 1;
                if failures >= MAX_POLL_FAILURES {
                    return Err(err);
                }
            }
        }
    }
    Ok(last)
}
