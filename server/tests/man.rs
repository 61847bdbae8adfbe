//! `dispatch-server --print-man`: the roff page packagers install, from the same clap
//! definitions as `--help`; printed before any crash monitor or journal is started.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[test]
fn print_man_writes_a_roff_page_naming_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch-server"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("DISPATCH_") {
            cmd.env_remove(k);
        }
    }
    // A var dir that must stay empty: printing the page starts nothing.
    let var = dir.path().join("var");
    let out = cmd.arg("--print-man").arg("--var-dir").arg(&var).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = String::from_utf8(out.stdout).unwrap();
    let title = page.lines().find(|l| !l.starts_with(".ie") && !l.starts_with(".el")).unwrap();
    assert!(title.starts_with(".TH dispatch-server 1"), "{page}");
    for name in ["\\-\\-addr", "\\-\\-admin\\-token", "DISPATCH_VAR_DIR"] {
        assert!(page.contains(name), "the page names {name}:\n{page}");
    }
    assert!(!page.contains("print\\-man"), "the flag itself is hidden");
    assert!(!var.exists(), "nothing was created under the var dir");
}
