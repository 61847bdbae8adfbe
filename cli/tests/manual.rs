//! `dispatchctl completions` and `dispatchctl man` on the real binary: the scripts name every
//! subcommand, and the man pages are roff.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

fn run(args: &[&str]) -> String {
    common::stdout_of(common::dispatchctl_command(), args)
}

const SUBCOMMANDS: [&str; 7] =
    ["mem", "crashes", "postmortem", "journal", "heap", "completions", "man"];

#[test]
fn bash_completions_name_every_subcommand() {
    let script = run(&["completions", "bash"]);
    assert!(script.contains("complete -F _dispatchctl"), "{script}");
    for name in SUBCOMMANDS {
        assert!(script.contains(&format!("dispatchctl,{name})")), "bash misses {name}");
    }
    for nested in ["synth", "start", "stop", "dump", "diff"] {
        assert!(script.contains(nested), "bash misses {nested}");
    }
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef dispatchctl"), "{zsh}");
    let fish = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c dispatchctl"), "{fish}");
    for name in SUBCOMMANDS {
        assert!(zsh.contains(&format!("'{name}:")), "zsh misses {name}");
        assert!(fish.contains(&format!("-a \"{name}\"")), "fish misses {name}");
    }
}

#[test]
fn man_prints_a_roff_page() {
    let page = run(&["man"]);
    let title = page.lines().find(|l| !l.starts_with(".ie") && !l.starts_with(".el")).unwrap();
    assert!(title.starts_with(".TH dispatchctl 1"), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains("DISPATCH_TRACES_DB"), "{page}");
    for name in SUBCOMMANDS {
        assert!(page.contains(name), "the page lists {name}");
    }
}

#[test]
fn man_out_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let listed = run(&["man", "--out", out.to_str().unwrap()]);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "dispatchctl-completions.1",
            "dispatchctl-crashes-send.1",
            "dispatchctl-crashes.1",
            "dispatchctl-doctor.1",
            "dispatchctl-heap-diff.1",
            "dispatchctl-heap-dump.1",
            "dispatchctl-heap-start.1",
            "dispatchctl-heap-stop.1",
            "dispatchctl-heap.1",
            "dispatchctl-journal-audit.1",
            "dispatchctl-journal-synth.1",
            "dispatchctl-journal.1",
            "dispatchctl-man.1",
            "dispatchctl-mem.1",
            "dispatchctl-postmortem.1",
            "dispatchctl.1",
        ]
    );
    assert_eq!(listed.lines().count(), names.len(), "each file written is listed: {listed}");
    let dump = std::fs::read_to_string(out.join("dispatchctl-heap-dump.1")).unwrap();
    let title =
        format!(".TH dispatchctl-heap-dump 1  \"dispatchctl {}\"", env!("CARGO_PKG_VERSION"));
    assert!(dump.contains(&title), "{dump}");
    assert!(dump.contains("DISPATCH_ADMIN_TOKEN"), "{dump}");
}

#[test]
fn man_out_into_a_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = common::dispatchctl_command()
        .args(["man", "--out", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("dispatchctl: error: creating {}: ", file.display())),
        "{err}"
    );
}
