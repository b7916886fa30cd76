//! `gomark config export`: the document of the latest (or a given) revision, as YAML on
//! stdout, ready to edit and `gomark plan -f` again.

use super::output::text;
use super::{CliError, Context};

#[derive(Debug, clap::Subcommand)]
pub enum ConfigAction {
    /// Print a revision's document (YAML): the latest one's unless --revision is given.
    Export {
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        revision: Option<i64>,
    },
}

pub async fn run(ctx: &Context, action: ConfigAction) -> Result<(), CliError> {
    let ConfigAction::Export { revision } = action;
    let revision = match revision {
        Some(n) => ctx.client.get(&["v1", "config", "revisions", &n.to_string()], &[]).await?,
        None => ctx.client.get(&["v1", "config"], &[]).await.map_err(|err| match err.status() {
            Some(404) => CliError::Invalid("no revision yet: nothing to export".into()),
            _ => err,
        })?,
    };
    // With --json the whole revision (number, message, document); otherwise just the YAML.
    ctx.emit(&revision, |r| text(r, "document").to_owned());
    Ok(())
}
