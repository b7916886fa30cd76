//! Structured differences between two documents, keyed by names and ids.

use crate::effective::EffectiveConfig;
use crate::model::Document;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// One difference. `path` names list items by their key, e.g.
/// `baseline.dealProperties[gomark_tier].label`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DocumentDiff {
    pub changes: Vec<Change>,
}

impl DocumentDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
        match self.kind {
            ChangeKind::Added => write!(f, "+ {}: {}", self.path, show(&self.after)),
            ChangeKind::Removed => write!(f, "- {}: {}", self.path, show(&self.before)),
            ChangeKind::Changed => write!(f, "~ {}: {} → {}", self.path, show(&self.before), show(&self.after)),
        }
    }
}

impl fmt::Display for DocumentDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(f, "no changes");
        }
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Differences between two documents. List items are matched by name/id, so reordering
/// alone is not a change; an omitted displayOrder is compared as the item's position,
/// because that is the order HubSpot will get.
pub fn diff(old: &Document, new: &Document) -> DocumentDiff {
    let mut changes = Vec::new();
    diff_values("", &to_resolved(old), &to_resolved(new), &mut changes);
    DocumentDiff { changes }
}

/// Per company key, the differences between the effective configs of two documents. A
/// company present on one side only is compared with an empty config. Companies without
/// changes are left out.
pub fn effective_diff(old: &Document, new: &Document) -> BTreeMap<String, Vec<Change>> {
    let (old_all, new_all) = (old.effective_all(), new.effective_all());
    let keys: BTreeSet<&String> = old_all.keys().chain(new_all.keys()).collect();
    let empty = EffectiveConfig::default();
    keys.into_iter()
        .filter_map(|k| {
            let a = to_resolved(old_all.get(k).unwrap_or(&empty));
            let b = to_resolved(new_all.get(k).unwrap_or(&empty));
            let mut changes = Vec::new();
            diff_values("", &a, &b, &mut changes);
            (!changes.is_empty()).then(|| (k.clone(), changes))
        })
        .collect()
}

fn to_resolved<T: Serialize>(value: &T) -> Value {
    // Serialising these plain data types cannot fail; Null would only make the diff coarse.
    let mut v = serde_json::to_value(value).unwrap_or(Value::Null);
    resolve_orders(&mut v);
    v
}

/// Fills in implicit displayOrders (position in list) of pipelines, stages and options.
fn resolve_orders(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if let ("pipelines" | "stages" | "options", Value::Array(items)) = (k.as_str(), &mut *child) {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let Value::Object(o) = item {
                            o.entry("displayOrder").or_insert_with(|| Value::from(i));
                        }
                    }
                }
                resolve_orders(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(resolve_orders),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn push(out: &mut Vec<Change>, path: String, before: Option<&Value>, after: Option<&Value>) {
    let kind = match (before, after) {
        (None, _) => ChangeKind::Added,
        (_, None) => ChangeKind::Removed,
        _ => ChangeKind::Changed,
    };
    out.push(Change { path, kind, before: before.cloned(), after: after.cloned() });
}

fn diff_values(path: &str, old: &Value, new: &Value, out: &mut Vec<Change>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => diff_objects(path, a, b, out),
        (Value::Array(a), Value::Array(b)) => diff_arrays(path, a, b, out),
        _ if old != new => push(out, path.to_string(), Some(old), Some(new)),
        _ => {}
    }
}

fn diff_objects(path: &str, a: &Map<String, Value>, b: &Map<String, Value>, out: &mut Vec<Change>) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let p = join(path, k);
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => diff_values(&p, x, y, out),
            // Empty lists are omitted when serialising overlays: itemise against [] so a
            // list that appears or empties reads like any other list change.
            (Some(Value::Array(x)), None) => diff_arrays(&p, x, &[], out),
            (None, Some(Value::Array(y))) => diff_arrays(&p, &[], y, out),
            (x, y) => push(out, p, x, y),
        }
    }
}

/// The field that identifies the items of a list, if every item has a distinct one.
fn item_key<'a>(items: impl Iterator<Item = &'a Value> + Clone) -> Option<&'static str> {
    ["id", "name", "value"].into_iter().find(|field| {
        let mut seen = BTreeSet::new();
        items.clone().all(|item| item.get(field).and_then(Value::as_str).is_some_and(|k| seen.insert(k)))
    })
}

fn diff_arrays(path: &str, a: &[Value], b: &[Value], out: &mut Vec<Change>) {
    let all = a.iter().chain(b.iter());
    // Lists of plain strings (the remove* lists) are sets.
    if all.clone().all(Value::is_string) {
        let sa: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
        let sb: Vec<&str> = b.iter().filter_map(Value::as_str).collect();
        if sa.iter().collect::<BTreeSet<_>>().len() == sa.len() && sb.iter().collect::<BTreeSet<_>>().len() == sb.len()
        {
            for v in a.iter().filter(|v| !b.contains(v)) {
                push(out, format!("{path}[{}]", text(v)), Some(v), None);
            }
            for v in b.iter().filter(|v| !a.contains(v)) {
                push(out, format!("{path}[{}]", text(v)), None, Some(v));
            }
            return;
        }
    }
    // Keys must be distinct within each side; checking each side separately.
    let key = item_key(a.iter()).and_then(|ka| {
        let kb = item_key(b.iter())?;
        let ok = |side: &[Value], field: &str| {
            side.is_empty() || side.iter().all(|i| i.get(field).and_then(Value::as_str).is_some())
        };
        if ka == kb {
            Some(ka)
        } else if ok(a, kb) {
            Some(kb)
        } else if ok(b, ka) {
            Some(ka)
        } else {
            None
        }
    });
    let Some(field) = key else {
        if a != b {
            push(out, path.to_string(), Some(&Value::from(a)), Some(&Value::from(b)));
        }
        return;
    };
    let key_of = |v: &Value| v.get(field).and_then(Value::as_str).unwrap_or("").to_string();
    let find = |side: &[Value], k: &str| side.iter().find(|v| key_of(v) == k).cloned();
    for x in a {
        let k = key_of(x);
        let p = format!("{path}[{k}]");
        match find(b, &k) {
            Some(y) => diff_values(&p, x, &y, out),
            None => push(out, p, Some(x), None),
        }
    }
    for y in b {
        let k = key_of(y);
        if find(a, &k).is_none() {
            push(out, format!("{path}[{k}]"), None, Some(y));
        }
    }
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_are_keyed_by_id_then_name_then_value() {
        let a = [json!({"id": "x", "name": "n"})];
        assert_eq!(item_key(a.iter()), Some("id"));
        let a = [json!({"name": "n", "value": "v"})];
        assert_eq!(item_key(a.iter()), Some("name"));
        let a = [json!({"value": "v"}), json!({"value": "v"})];
        assert_eq!(item_key(a.iter()), None, "keys must be distinct");
    }

    #[test]
    fn unkeyed_lists_compare_whole() {
        let mut out = Vec::new();
        diff_values("x", &json!([1, 2]), &json!([2, 1]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "x");
        assert_eq!(out[0].kind, ChangeKind::Changed);
    }

    #[test]
    fn implicit_orders_are_positions() {
        let mut v = json!({"stages": [{"id": "a"}, {"id": "b", "displayOrder": 7}]});
        resolve_orders(&mut v);
        assert_eq!(v, json!({"stages": [{"id": "a", "displayOrder": 0}, {"id": "b", "displayOrder": 7}]}));
    }
}
