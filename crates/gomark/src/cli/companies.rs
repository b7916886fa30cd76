//! Company references: wherever a command takes a company id it also takes the company's
//! key in the configuration document (`acme-analytics`) or the slug of its name
//! (`"Acme Analytics"` → `acme-analytics`), as the CLI itself prints keys.

use super::output::{items, text};
use super::{CliError, Context};
use serde_json::Value;

/// Pages read at most while listing companies (500 each).
const MAX_PAGES: usize = 100;

/// A company id as the API issues them (a UUID), which needs no lookup.
pub fn is_id(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && s.matches('-').count() == 4
}

/// Lower-case, runs of anything but letters and digits become one `-`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// Resolves each reference to an id, looking the companies up only when one is not an id.
pub async fn resolve(ctx: &Context, given: &[String]) -> Result<Vec<String>, CliError> {
    if given.iter().all(|g| is_id(g.trim())) {
        return Ok(given.iter().map(|g| g.trim().to_owned()).collect());
    }
    let known = known(ctx).await?;
    given.iter().map(|g| find(&known, g.trim())).collect()
}

/// Like [`resolve`], for one.
pub async fn resolve_one(ctx: &Context, given: &str) -> Result<String, CliError> {
    let mut ids = resolve(ctx, &[given.to_owned()]).await?;
    ids.pop().ok_or_else(|| CliError::Invalid(format!("--company {given:?}: no such company")))
}

/// `(reference, id)` pairs: each company's id, the slug of its name, and the keys the
/// latest revision's document gives companies.
async fn known(ctx: &Context) -> Result<Vec<(String, String)>, CliError> {
    let mut known = Vec::new();
    for c in list(ctx).await? {
        known.push((text(&c, "id").to_owned(), text(&c, "id").to_owned()));
        known.push((slug(text(&c, "name")), text(&c, "id").to_owned()));
    }
    // No revision yet (404) is not an error: there are simply no document keys.
    match ctx.client.get(&["v1", "config"], &[]).await {
        Ok(revision) => known.extend(document_keys(text(&revision, "document"))),
        Err(err) if err.status() == Some(404) => {}
        Err(err) => return Err(err),
    }
    Ok(known)
}

/// Every company the caller may see, in the API's order (by id).
pub async fn list(ctx: &Context) -> Result<Vec<Value>, CliError> {
    let mut companies = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("limit", "500".to_owned())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = ctx.client.get(&["v1", "companies"], &query).await?;
        companies.extend(items(&page, "items").iter().cloned());
        cursor = page.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Ok(companies)
}

/// `(key, companyId)` for each company of a document.
pub fn document_keys(document: &str) -> Vec<(String, String)> {
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(document) else { return Vec::new() };
    let Some(companies) = doc.get("companies").and_then(serde_yaml::Value::as_mapping) else { return Vec::new() };
    companies
        .iter()
        .filter_map(|(key, overlay)| {
            let id = overlay.get("companyId")?.as_str()?;
            Some((key.as_str()?.to_owned(), id.to_owned()))
        })
        .collect()
}

/// The id `wanted` names: an id, a document key or a name slug, in that order.
pub fn find(known: &[(String, String)], wanted: &str) -> Result<String, CliError> {
    if let Some((_, id)) = known.iter().find(|(r, _)| r == wanted) {
        return Ok(id.clone());
    }
    let as_slug = slug(wanted);
    if let Some((_, id)) = known.iter().find(|(r, _)| *r == as_slug) {
        return Ok(id.clone());
    }
    Err(CliError::Invalid(format!("--company {wanted:?}: no company has this id, key or name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_names_and_ids_resolve() {
        let id = "01a23990-c44b-73d7-bd56-f60e97ce45c5";
        assert!(is_id(id) && !is_id("acme-analytics"));
        assert_eq!(slug("Acme Analytics, Inc."), "acme-analytics-inc");
        let doc = format!("companies:\n  acme:\n    companyId: {id}\n");
        let mut known = document_keys(&doc);
        assert_eq!(known, vec![("acme".to_owned(), id.to_owned())]);
        known.push(("brightlane-crm".into(), "b-id".into()));
        assert_eq!(find(&known, "acme").ok().as_deref(), Some(id));
        assert_eq!(find(&known, "Brightlane CRM").ok().as_deref(), Some("b-id"));
        let err = find(&known, "nobody").expect_err("unknown").to_string();
        assert!(err.contains("--company \"nobody\""), "{err}");
    }
}
