//! PromQL query templates: `{{name}}` placeholders filled from a group's service, version,
//! instances and labels.
//!
//! Every placeholder must sit inside a double-quoted PromQL string, and its value is escaped
//! for that string, so a label value can never change the query's structure (a version of
//! `1"} or vector(1) #` stays a version).

use std::collections::BTreeMap;

use crate::source::Cohort;
use crate::{Error, Result};

/// A parsed query template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(String),
}

impl Template {
    /// Parses `text`; refuses an unclosed or empty placeholder, and one outside a
    /// double-quoted string, where escaping could not protect the query.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |rule: String| Error::Template {
            template: text.to_owned(),
            rule,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let (mut in_string, mut escaped) = (false, false);
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("{{") {
                let end = rest
                    .find("}}")
                    .ok_or_else(|| bad("`{{` without a closing `}}`".into()))?;
                let name = rest[2..end].trim();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(bad(format!(
                        "placeholder {{{{{name}}}}}: names are letters, digits and `_`"
                    )));
                }
                if !in_string {
                    return Err(bad(format!(
                        "placeholder {{{{{name}}}}} must be inside a double-quoted string, where its value is escaped"
                    )));
                }
                parts.push(Part::Text(std::mem::take(&mut literal)));
                parts.push(Part::Placeholder(name.to_owned()));
                escaped = false;
                rest = &rest[end + 2..];
                continue;
            }
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' => in_string = !in_string,
                _ => {}
            }
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if in_string {
            return Err(bad("unterminated string".into()));
        }
        parts.push(Part::Text(literal));
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Names of the placeholders, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills the placeholders from `values`, each escaped for a PromQL string. A placeholder
    /// without a value, or with an empty one, is an error naming it.
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<String> {
        let mut out = String::with_capacity(self.text.len() + 32);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(name) => match values.get(name).filter(|v| !v.is_empty()) {
                    Some(value) => out.push_str(&escape(value)),
                    None => return Err(Error::MissingValue(name.clone())),
                },
            }
        }
        Ok(out)
    }
}

/// The placeholder values of a group: its labels, then `service`, `version` and `instances`
/// (a regular expression matching exactly its instance ids) where not empty.
pub fn values(group: &Cohort) -> BTreeMap<String, String> {
    let mut values = group.labels.clone();
    let mut set = |name: &str, value: String| {
        if !value.is_empty() {
            values.insert(name.to_owned(), value);
        }
    };
    set("service", group.service.clone());
    set("version", group.version.clone());
    let ids: Vec<String> = group
        .instances
        .iter()
        .map(|i| regex_escape(&i.id))
        .collect();
    set("instances", ids.join("|"));
    values
}

/// Escapes `value` for a double-quoted PromQL string.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `value` so that a regular-expression matcher (`=~`, RE2 syntax) matches it
/// literally.
pub fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Instance;

    fn group() -> Cohort {
        Cohort {
            service: "checkout".into(),
            version: "1.2.0".into(),
            instances: vec![
                Instance {
                    id: "i-0001".into(),
                    address: "127.0.0.1:1".into(),
                },
                Instance {
                    id: "i.2".into(),
                    address: "127.0.0.1:2".into(),
                },
            ],
            labels: BTreeMap::from([("region".to_owned(), "eu-west".to_owned())]),
        }
    }

    #[test]
    fn fills_service_version_instances_and_labels() {
        let t = Template::parse(
            r#"sum(rate(x{code=~"5..",service="{{service}}",version="{{ version }}",instance_id=~"{{instances}}",region="{{region}}"}[30s]))"#,
        )
        .unwrap();
        assert_eq!(
            t.placeholders().collect::<Vec<_>>(),
            ["service", "version", "instances", "region"]
        );
        assert_eq!(
            t.render(&values(&group())).unwrap(),
            r#"sum(rate(x{code=~"5..",service="checkout",version="1.2.0",instance_id=~"i-0001|i\\.2",region="eu-west"}[30s]))"#
        );
    }

    #[test]
    fn label_values_cannot_escape_their_string() {
        let t = Template::parse(r#"x{version="{{version}}"}"#).unwrap();
        let g = Cohort {
            version: "1\"} or vector(1) #\\\n".into(),
            ..group()
        };
        assert_eq!(
            t.render(&values(&g)).unwrap(),
            r#"x{version="1\"} or vector(1) #\\\n"}"#
        );
    }

    #[test]
    fn a_missing_value_is_an_error_naming_the_placeholder() {
        let t = Template::parse(r#"x{version="{{version}}",zone="{{zone}}"}"#).unwrap();
        let e = t.render(&values(&group())).unwrap_err();
        assert_eq!(e, Error::MissingValue("zone".into()));
        assert_eq!(e.to_string(), "placeholder {{zone}} has no value");
        let no_version = Cohort {
            version: String::new(),
            ..group()
        };
        assert_eq!(
            t.render(&values(&no_version)).unwrap_err(),
            Error::MissingValue("version".into())
        );
    }

    #[test]
    fn refuses_placeholders_outside_strings_and_broken_syntax() {
        for bad in [
            r#"x[{{window}}]"#,
            r#"x{a="{{a}"}"#,
            r#"x{a="{{}}"}"#,
            r#"x{a="b}"#,
            r#"x{a="{{a b}}"}"#,
        ] {
            assert!(
                matches!(Template::parse(bad), Err(Error::Template { .. })),
                "{bad}"
            );
        }
        // An escaped quote does not end the string.
        assert!(Template::parse(r#"x{a="\"{{a}}"}"#).is_ok());
    }
}
