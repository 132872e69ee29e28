//! The workflow crate's modules only point down: no module uses a module that (through others)
//! uses it back. `deploy` stands on `shared`, the strategies on `deploy::run`, and no strategy
//! borrows from another. This reads the crate's own sources: a module depends on the modules it
//! declares, and every `use` and every qualified `crate::`/`super::`/`self::` path is an edge to
//! the module it names; so a module using an item of its parent (or of the crate root) is an
//! arrow pointing up, and a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The module path of a source file under `src/` (`src/deploy/run.rs` is `deploy::run`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source without comments and string literals, which may mention paths that are not code.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (c, escaped) {
                        ('\\', false) => escaped = true,
                        ('"', false) => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            c => out.push(c),
        }
    }
    out
}

/// Expands a `use` tree (`crate::a::{b, c::D}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    match tree.find('{') {
        None => vec![tree.split(" as ").next().unwrap_or(tree).trim().to_owned()],
        Some(open) => {
            let prefix = tree[..open].trim_end_matches("::").trim();
            let inner = &tree[open + 1..tree.rfind('}').expect("a closing brace")];
            let mut items = Vec::new();
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[start..]);
            items
                .into_iter()
                .filter(|i| !i.trim().is_empty())
                .flat_map(expand)
                .map(|p| if p == "self" { prefix.to_owned() } else { format!("{prefix}::{p}") })
                .collect()
        }
    }
}

/// Every module path a file refers to: its `use` trees, and qualified paths in its code.
fn references(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut stripped = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before_ok = at == 0 || !(rest.as_bytes()[at - 1].is_ascii_alphanumeric() || rest.as_bytes()[at - 1] == b'_');
        let stmt_end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        if before_ok {
            paths.extend(expand(&rest[at + 4..stmt_end]));
            stripped.push_str(&rest[..at]);
        } else {
            stripped.push_str(&rest[..stmt_end]);
        }
        rest = rest.get(stmt_end + 1..).unwrap_or_default();
    }
    stripped.push_str(rest);
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = stripped[from..].find(root) {
            let start = from + i;
            let end = stripped[start..].find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).map_or(stripped.len(), |e| start + e);
            paths.push(stripped[start..end].trim_end_matches(':').to_owned());
            from = end.max(start + root.len());
        }
    }
    paths
}

/// The module a path from `module` names: the longest prefix that is a module of the crate.
fn resolve(module: &[String], path: &str, modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segments.first().copied() {
        Some("crate") => {
            segments.remove(0);
            Vec::new()
        }
        Some("super") => {
            let mut b = module.to_vec();
            while segments.first() == Some(&"super") {
                segments.remove(0);
                b.pop();
            }
            b
        }
        Some("self") => {
            segments.remove(0);
            module.to_vec()
        }
        // An external crate or a local name: not a module edge (sibling modules are reached
        // through `self::`, `super::` or `crate::` in this crate).
        _ => return None,
    };
    let mut found = base.clone();
    for s in segments {
        base.push(s.to_owned());
        if modules.contains(&base) {
            found = base.clone();
        } else {
            break;
        }
    }
    Some(found)
}

#[test]
fn the_workflow_modules_form_no_cycle() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    // A module depends on the children it declares.
    for m in &modules {
        if let Some((_, parent)) = m.split_last() {
            edges.entry(parent.to_vec()).or_default().insert(m.clone());
        }
    }
    for file in &files {
        let module = module_of(&src, file);
        let text = code(&std::fs::read_to_string(file).expect("readable source"));
        // Tests may reach anywhere in their own module.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for path in references(text) {
            if let Some(to) = resolve(&module, &path, &modules)
                && to != module
            {
                edges.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 5, "the scan found the crate's edges: {edges:?}");
    // Depth-first search for a back edge.
    fn visit(
        m: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, bool>,
        trail: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(m) {
            Some(true) => return None,
            Some(false) => {
                let at = trail.iter().position(|t| t == m).unwrap_or(0);
                let mut cycle = trail[at..].to_vec();
                cycle.push(m.clone());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(m.clone(), false);
        trail.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, state, trail) {
                return Some(cycle);
            }
        }
        trail.pop();
        state.insert(m.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for m in &modules {
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            let names: Vec<String> = cycle.iter().map(|m| if m.is_empty() { "crate".to_owned() } else { m.join("::") }).collect();
            panic!("module cycle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_scan_sees_a_cycle_when_there_is_one() {
    let modules: BTreeSet<Vec<String>> = [vec![], vec!["a".into()], vec!["a".into(), "b".into()]].into();
    // `a::b` naming an item of `a` is an edge up to its parent.
    assert_eq!(resolve(&["a".into(), "b".into()], "super::Thing", &modules), Some(vec!["a".to_owned()]));
    assert_eq!(resolve(&["a".into()], "crate::a::b::Item", &modules), Some(vec!["a".to_owned(), "b".to_owned()]));
    assert_eq!(resolve(&["a".into()], "std::fmt", &modules), None);
    let uses = references("use crate::a::{b::{self, Item}, C};\nfn f() { super::x::y(); }");
    assert_eq!(uses, ["crate::a::b", "crate::a::b::Item", "crate::a::C", "super::x::y"]);
}
