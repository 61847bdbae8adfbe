//! Each setting lives in one place: every `DISPATCH_*` variable the sources read is a row of
//! the README's Configuration table, and every row is read somewhere. Fails in either
//! direction, naming the variable.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `"DISPATCH_..."` string literals in the library and binary sources (tests and benchmarks
/// have their own, such as `DISPATCH_TEST_*`, which are not settings).
fn in_code() -> BTreeSet<String> {
    let mut files = Vec::new();
    for d in ["telemetry/journal/src", "telemetry/src", "collector/src", "cli/src", "server/src"] {
        rust_files(&root().join(d), &mut files);
    }
    let mut found = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("\"DISPATCH_") {
            let name: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

fn in_readme() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("## Configuration").nth(1).unwrap().split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `DISPATCH_"))
        .map(|rest| format!("DISPATCH_{}", rest.split('`').next().unwrap()))
        .collect()
}

#[test]
fn readme_table_and_code_agree() {
    let (code, readme) = (in_code(), in_readme());
    assert!(code.len() > 30, "the scan found the settings: {code:?}");
    let undocumented: Vec<_> = code.difference(&readme).collect();
    let unused: Vec<_> = readme.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code, missing from README's Configuration: {undocumented:?}"
    );
    assert!(unused.is_empty(), "in README's Configuration, read by no code: {unused:?}");
}

#[test]
fn the_scan_sees_a_missing_row() {
    // The check can fail: a name the table lacks is reported.
    let readme = in_readme();
    assert!(readme.contains("DISPATCH_VAR_DIR"));
    assert!(!readme.contains("DISPATCH_NOT_A_SETTING"));
}

#[test]
fn the_shared_name_constants_are_rows() {
    // The names writers and readers share are constants in `dispatch_journal::env`; each is a
    // row, and each constant's value is the variable itself.
    let readme = in_readme();
    for name in dispatch_journal::env::ALL {
        assert!(name.starts_with("DISPATCH_"), "{name}");
        assert!(readme.contains(*name), "dispatch_journal::env names {name}, the table does not");
    }
}
