//! Rendering `{{variable}}` templates the way Upso does: known variables are replaced, an
//! unknown one renders empty, and anything that is not a well-formed `{{…}}` stays as is.

use std::collections::BTreeMap;

/// Renders `text` with `vars`.
pub fn render(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                let name = after[..close].trim();
                if let Some(value) = vars.get(name) {
                    out.push_str(value);
                }
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The variable names a template uses, in order of first use.
pub fn variables(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let name = after[..close].trim().to_owned();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &after[close + 2..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_variables_render_and_unknown_ones_vanish() {
        let vars = BTreeMap::from([("firstName".to_owned(), "Ada".to_owned())]);
        assert_eq!(render("Hi {{firstName}}, {{ firstName }}!{{nope}}", &vars), "Hi Ada, Ada!");
        assert_eq!(render("left {{open", &vars), "left {{open");
        assert_eq!(variables("{{a}} {{ b }} {{a}}"), vec!["a", "b"]);
    }
}
