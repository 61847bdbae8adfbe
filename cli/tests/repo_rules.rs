//! Rules of the repository that a test keeps true (docs/ARCHITECTURE.md):
//! - unsafe code only where ARCHITECTURE.md says it lives;
//! - every document a code comment or a document cites (`SOMETHING.md`) is in the repository.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

/// Library and binary sources that may lift `unsafe_code` (docs/ARCHITECTURE.md, "Where
/// unsafe code lives, and why"). A directory entry covers every file below it.
const UNSAFE_ALLOWED: &[&str] = &[
    "telemetry/src/crash/",
    "telemetry/src/memory/tags.rs",
    "telemetry/src/sys.rs",
    "server/src/sys.rs",
    "server/src/faults.rs",
    "server/src/main.rs",
    "collector/src/sys.rs",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn files(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                files(&p, ext, out);
            }
        } else if ext.iter().any(|x| name.ends_with(x)) {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().to_string_lossy().into_owned()
}

#[test]
fn unsafe_code_lives_only_where_the_architecture_says() {
    let mut sources = Vec::new();
    for krate in ["telemetry/journal", "telemetry", "collector", "cli", "server", "synth"] {
        files(&root().join(krate).join("src"), &[".rs"], &mut sources);
    }
    assert!(sources.len() > 40, "the scan found the sources ({})", sources.len());
    let mut wrong = Vec::new();
    for f in &sources {
        let r = rel(f);
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains("allow(unsafe_code)")
            && !UNSAFE_ALLOWED.iter().any(|a| r == *a || (a.ends_with('/') && r.starts_with(a)))
        {
            wrong.push(r);
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe code outside the places docs/ARCHITECTURE.md names: {wrong:?}"
    );
    let arch = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    for a in UNSAFE_ALLOWED {
        assert!(arch.contains(a.trim_end_matches('/')), "docs/ARCHITECTURE.md does not name {a}");
    }
}

/// `NAME.md` words in `text` (upper-case document names such as `ARCHITECTURE.md`, with an
/// optional `docs/` or `runbooks/` directory in front).
fn cited_documents(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (i, _) in text.match_indices(".md") {
        let start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/'))
            .map_or(0, |p| p + 1);
        let name = &text[start..i];
        let base = name.rsplit('/').next().unwrap_or(name);
        let after = bytes.get(i + 3).copied().unwrap_or(b' ');
        if base.len() >= 3
            && base.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            && !after.is_ascii_alphanumeric()
        {
            out.push(format!("{name}.md"));
        }
    }
    out
}

#[test]
fn every_cited_document_is_in_the_repository() {
    let mut cites = Vec::new();
    files(&root(), &[".rs", ".toml", ".sh", ".md", ".service", ".yml", ".json"], &mut cites);
    let mut missing = Vec::new();
    // This file names made-up documents in its examples.
    cites.retain(|f| !f.ends_with("repo_rules.rs"));
    for f in &cites {
        let text = std::fs::read_to_string(f).unwrap();
        for doc in cited_documents(&text) {
            let base = doc.rsplit('/').next().unwrap().to_owned();
            let found = [root().join(&doc), root().join("docs").join(&base), root().join(&base)]
                .iter()
                .any(|p| p.is_file());
            if !found {
                missing.push(format!("{} cites {doc}", rel(f)));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "documents cited but not in the repository:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_citation_scan_sees_names() {
    assert_eq!(
        cited_documents("see DESIGN.md, and docs/CLI.md; not readme.md or X.mdx"),
        vec!["DESIGN.md".to_owned(), "docs/CLI.md".to_owned()]
    );
}
