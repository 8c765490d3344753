//! The module import graph of `src/` has no circle: leaves (balance, health, filters, observe,
//! tls) must not reach back to the gateway or the control plane.
//!
//! An edge A -> B is a `crate::` or `super::` path in A (outside comments) that names the
//! file B, found as the deepest module file the path leads to. `mod` declarations and
//! `pub use` re-exports are not edges: a parent that re-exports its child's names does not
//! depend on it the way code that calls those names does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/balance/selector.rs` -> ["balance", "selector"].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file of the deepest existing module along `path`.
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    for n in (0..=path.len()).rev() {
        let base = path[..n].iter().fold(src.to_path_buf(), |p, s| p.join(s));
        let candidates = if n == 0 {
            vec![src.join("lib.rs")]
        } else {
            vec![base.with_extension("rs"), base.join("mod.rs")]
        };
        if let Some(f) = candidates.into_iter().find(|f| f.is_file()) {
            return Some(f);
        }
    }
    None
}

/// Code without comments, string literals kept (paths do not appear in them here).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` / `super::a` path in `code`, expanded through one level of `{...}`.
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root) {
            let start = from + i;
            from = start + root.len();
            let before = start.checked_sub(1).map(|j| bytes[j]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let mut segs = Vec::new();
            let mut rest = &code[from..];
            loop {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                if len == 0 {
                    break;
                }
                segs.push(rest[..len].to_string());
                rest = &rest[len..];
                if let Some(r) = rest.strip_prefix("::") {
                    rest = r;
                } else {
                    break;
                }
            }
            if rest.starts_with('{') {
                let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for item in group.split(',') {
                    let mut s = segs.clone();
                    s.extend(
                        item.split("::")
                            .map(|p| p.trim().to_string())
                            .filter(|p| !p.is_empty() && p != "self"),
                    );
                    out.push((root.to_string(), s));
                }
            } else {
                out.push((root.to_string(), segs));
            }
        }
    }
    out
}

fn graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        // Unit tests sit at the end of a file, in a module of their own: not the file's code.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String = strip_comments(text)
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !(t.starts_with("pub use ") || t.starts_with("pub mod ") || t.starts_with("mod "))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let module = module_of(src, file);
        let targets = edges.entry(file.clone()).or_default();
        for (root, segs) in paths(&code) {
            let full: Vec<String> = if root == "crate::" {
                segs
            } else {
                // `super` is the parent module: `a` for `a/b.rs`, the root for `a/mod.rs`.
                let mut base = module.clone();
                base.pop();
                base.extend(segs);
                base
            };
            if let Some(target) = file_of(src, &full) {
                if &target != file {
                    targets.insert(target);
                }
            }
        }
    }
    edges
}

/// A circle in `edges`, if there is one (depth-first search).
fn find_circle(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        n: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        marks: &mut BTreeMap<PathBuf, Mark>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let i = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut circle = stack[i..].to_vec();
                circle.push(n.clone());
                return Some(circle);
            }
            None => {}
        }
        marks.insert(n.clone(), Mark::Open);
        stack.push(n.clone());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() > 40, "read the tree: {} files", edges.len());
    // The checker sees real edges (a leaf imports balance; the proxy imports the gateway).
    let has = |a: &str, b: &str| edges[&src.join(a)].contains(&src.join(b));
    assert!(has("runtime/upstream.rs", "balance/mod.rs"));
    assert!(has("proxy/mod.rs", "gateway.rs"));
    if let Some(circle) = find_circle(&edges) {
        let names: Vec<String> = circle
            .iter()
            .map(|p| p.strip_prefix(&src).unwrap_or(p).display().to_string())
            .collect();
        panic!("import circle: {}", names.join(" -> "));
    }
}

#[test]
fn the_checker_finds_a_circle() {
    let mut edges = BTreeMap::new();
    let (a, b, c) = (PathBuf::from("a"), PathBuf::from("b"), PathBuf::from("c"));
    edges.insert(a.clone(), BTreeSet::from([b.clone()]));
    edges.insert(b.clone(), BTreeSet::from([c.clone()]));
    edges.insert(c.clone(), BTreeSet::new());
    assert_eq!(find_circle(&edges), None);
    edges.get_mut(&c).unwrap().insert(a.clone());
    assert_eq!(find_circle(&edges), Some(vec![a.clone(), b, c, a]));
}
