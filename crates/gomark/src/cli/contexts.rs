//! The CLI's own config file: named contexts, each a gateway and an API key, like
//! kubectl's. `~/.config/gomark/config.yaml` (or `$XDG_CONFIG_HOME/gomark/config.yaml`,
//! or the file `GOMARK_CLI_CONFIG` names):
//!
//! ```yaml
//! currentContext: local
//! contexts:
//!   local: {gateway: "http://127.0.0.1:8080", apiKey: "gmk_…"}
//!   prod: {gateway: "https://gomark.example.com"}
//! ```
//!
//! Flags and environment variables win over the context; the context wins over defaults.
//! The file holds keys, so `context use` keeps it private (0600) and no command prints one.

use super::CliError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub contexts: BTreeMap<String, Entry>,
    pub current_context: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    pub gateway: Option<String>,
    pub api_key: Option<String>,
}

// Written by hand so that a key cannot end up in a log or a panic message.
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("gateway", &self.gateway)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where the file is; `None` when there is no home directory to look in.
pub fn path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("GOMARK_CLI_CONFIG")
        .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("gomark").join("config.yaml")))
        .or_else(|| var("HOME").map(|d| d.join(".config").join("gomark").join("config.yaml")))
}

/// The file's contents; an empty configuration when it does not exist.
pub fn load(path: &Path) -> Result<ConfigFile, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(CliError::Invalid(format!("cannot read {}: {e}", path.display()))),
    };
    parse(&text).map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))
}

pub fn parse(text: &str) -> Result<ConfigFile, String> {
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    // serde_yaml's message names the field and line, never a value.
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

impl ConfigFile {
    /// The context to use: the one named (`--context`), else the current one, else none.
    pub fn select(&self, named: Option<&str>) -> Result<Option<&Entry>, CliError> {
        match named.or(self.current_context.as_deref()) {
            None => Ok(None),
            Some(name) => self.contexts.get(name).map(Some).ok_or_else(|| {
                let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
                CliError::Invalid(format!("no context named {name:?} (known: {})", known.join(", ")))
            }),
        }
    }
}

/// Makes `name` the current context. Only the `currentContext:` line is rewritten, so the
/// rest of the file (comments, layout) stays as its author wrote it.
pub fn use_context(path: &Path, name: &str) -> Result<(), CliError> {
    let file = load(path)?;
    file.select(Some(name))?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = format!("currentContext: {}", serde_json::Value::from(name));
    let mut found = false;
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("currentContext:") {
                found = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        lines.insert(0, line);
    }
    write_private(path, &(lines.join("\n") + "\n"))
}

fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| CliError::Invalid(format!("cannot write {}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(fail)?;
    // `mode` applies only to a new file; an existing one is narrowed too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    file.write_all(text.as_bytes()).map_err(fail)
}

/// `gomark context list`: names, the current one starred, and gateways; never keys.
pub fn render(file: &ConfigFile) -> String {
    if file.contexts.is_empty() {
        return "no contexts: add them under `contexts:` in the CLI config file\n".to_owned();
    }
    let current = file.current_context.as_deref();
    let rows: Vec<Vec<String>> = file
        .contexts
        .iter()
        .map(|(name, c)| {
            vec![
                if Some(name.as_str()) == current { "*".into() } else { String::new() },
                name.clone(),
                c.gateway.clone().unwrap_or_default(),
                if c.api_key.is_some() { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    super::output::table(&["CURRENT", "NAME", "GATEWAY", "API KEY"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# mine\ncontexts:\n  local: {gateway: \"http://127.0.0.1:8080\", apiKey: k1}\n  prod:\n    gateway: https://gomark.example.com\ncurrentContext: local\n";

    #[test]
    fn contexts_are_selected_by_name_or_as_current() {
        let file = parse(FILE).expect("parses");
        let current = file.select(None).expect("ok").expect("current");
        assert_eq!(current.api_key.as_deref(), Some("k1"));
        let prod = file.select(Some("prod")).expect("ok").expect("prod");
        assert_eq!(prod.gateway.as_deref(), Some("https://gomark.example.com"));
        assert!(prod.api_key.is_none());
        let err = file.select(Some("nope")).expect_err("unknown").to_string();
        assert!(err.contains("nope") && err.contains("local, prod"), "{err}");
        assert!(!format!("{current:?}").contains("k1"));
        assert!(parse("contexts: {a: {gatway: x}}").is_err(), "a misspelt field is an error");
    }

    #[test]
    fn use_rewrites_only_the_current_context_line() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, FILE).expect("write");
        use_context(&path, "prod").expect("switch");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# mine\n") && text.contains("currentContext: \"prod\"\n"), "{text}");
        assert_eq!(load(&path).expect("load").current_context.as_deref(), Some("prod"));
        assert!(use_context(&path, "nope").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        }
    }
}
