//! The top-level modules of the crate form a DAG (src/lib.rs: "data flows one way"): a module
//! that reaches back up the chain (`crate::x` from a module `x` depends on) fails this test,
//! which names the cycle. Read from the sources' `crate::` paths, test modules aside.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → the top-level modules its non-test code names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            modules.insert(name);
        }
    }
    modules.remove("lib");
    modules.remove("main");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for top in &modules {
        let mut files = Vec::new();
        collect(&src.join(top), &mut files);
        collect(&src.join(format!("{top}.rs")), &mut files);
        let targets = edges.entry(top.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            // Unit tests may use anything; comments (doc links among them) are no imports.
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for name in crate_paths(&code) {
                if &name != top && modules.contains(&name) {
                    targets.insert(name);
                }
            }
        }
    }
    edges
}

fn collect(path: &Path, files: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            collect(&entry.unwrap().path(), files);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        files.push(path.to_owned());
    }
}

/// The first segment after each `crate::`, including each member of a `crate::{a, b::c}`
/// group.
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `a::{b, c}` inside the group names items below `a`: the module is the first
            // segment of each top-level part.
            for part in group_parts(group) {
                names.push(ident(part.trim_start()));
            }
        } else {
            names.push(ident(rest));
        }
    }
    names
}

/// The top-level parts of a `{…}` group, read from just after its `{` up to its `}`:
/// `a, b::{c, d}, e} …` → `["a", " b::{c, d}", " e"]`.
fn group_parts(group: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                parts.push(&group[start..i]);
                return parts;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&group[start..]);
    parts
}

/// A cycle, as `[a, b, a]`, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_form_a_dag() {
    let edges = graph();
    assert!(edges.len() > 10, "found only {:?}", edges.keys());
    if let Some(found) = cycle(&edges) {
        panic!(
            "the modules depend on each other in a cycle: {}\n(edges: {edges:#?})",
            found.join(" -> ")
        );
    }
}

#[test]
fn the_checker_sees_plain_and_grouped_paths() {
    let code = "use crate::a::X;\nuse crate::{b, c::{D, E}, d::F};\nfn f() { crate::e::g(); }";
    assert_eq!(crate_paths(code), ["a", "b", "c", "d", "e"]);
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle(&edges).unwrap(), ["a", "b", "a"]);
    edges.insert("b".to_owned(), BTreeSet::new());
    assert_eq!(cycle(&edges), None);
}
