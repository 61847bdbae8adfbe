//! The server's modules import each other in one direction only (docs/ARCHITECTURE.md, "The
//! server's layers"). This test reads every `crate::<module>` path in `server/src`, builds the
//! module graph and fails on a circle, naming it; a second test checks the layer table itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of every module, bottom (0) to top. A module may import only lower layers.
const LAYERS: &[(&str, u32)] = &[
    ("config", 0),
    ("message", 0),
    ("ids", 0),
    ("limiter", 0),
    ("sys", 0),
    ("token", 0),
    ("start_lock", 0),
    ("pressure", 0),
    ("stall", 0),
    ("store", 1),
    ("tools", 1),
    ("faults", 1),
    ("activity", 1),
    ("collector", 1),
    ("symbols", 1),
    ("provider", 2),
    ("error", 2),
    ("telemetry", 2),
    ("state", 3),
    ("turn", 4),
    ("extract", 5),
    ("auth", 5),
    ("admin", 6),
    ("metrics", 6),
    ("ui", 6),
    ("api", 7),
    ("server", 8),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a source file belongs to (`provider/sim.rs` -> `provider`).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src_dir()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading server/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Modules named by `crate::<name>` in code (comments and doc comments skipped), and by
/// `use crate::{a, b::c}` groups.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name: String =
                    rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// Module -> modules it imports, over the whole crate.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = module_of(&f) else { continue };
        let text = std::fs::read_to_string(&f).expect("reading a source file");
        let deps = g.entry(m.clone()).or_default();
        for d in imports(&text) {
            if d != m {
                deps.insert(d);
            }
        }
    }
    g
}

/// A circle in `g`, as a path that starts and ends at the same module.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_owned());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, d, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = visit(g, m, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    assert!(g.len() >= 10, "the scan found too few modules ({:?}): is src_dir right?", g.keys());
    if let Some(cycle) = find_cycle(&g) {
        panic!("import circle among the server's modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn every_import_points_down_the_layer_table() {
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (m, deps) in graph() {
        let Some(&lm) = layer.get(m.as_str()) else {
            wrong.push(format!("module `{m}` is missing from LAYERS (and docs/ARCHITECTURE.md)"));
            continue;
        };
        for d in deps {
            match layer.get(d.as_str()) {
                Some(&ld) if ld < lm => {}
                Some(&ld) => wrong.push(format!("`{m}` (layer {lm}) imports `{d}` (layer {ld})")),
                None => wrong.push(format!("`{m}` imports `{d}`, which is not in LAYERS")),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_a_back_edge() {
    let mut g = BTreeMap::new();
    g.insert("state".to_owned(), BTreeSet::from(["admin".to_owned()]));
    g.insert("admin".to_owned(), BTreeSet::from(["api".to_owned()]));
    g.insert("api".to_owned(), BTreeSet::from(["state".to_owned()]));
    let cycle = find_cycle(&g).expect("a circle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let found = imports(
        "use crate::{admin::Faults, state};\n// crate::api in a comment\nlet x = crate::turn::f();",
    );
    assert_eq!(found, BTreeSet::from(["admin".into(), "state".into(), "turn".into()]));
}
