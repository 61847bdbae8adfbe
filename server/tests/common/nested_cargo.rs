//! The one way a test runs cargo itself (the server and cli tests both include this file):
//! a build of this workspace nested in `cargo test`, which must be a no-op when the README's
//! test command (or `.ci/run`'s release build) built the same thing first.
//!
//! Two things made nested builds rebuild, and clobber, what the outer build had made:
//! - The test process's environment. Cargo sets `CARGO_MANIFEST_DIR`, `CARGO_PKG_*` and the
//!   like for the test binary; ring's build script tracks `CARGO_MANIFEST_DIR`, so a nested
//!   cargo that inherits them sees a changed variable, reruns that script and rebuilds ring,
//!   rustls and everything above them (measured: 2 min 22 s of release build inside a test).
//! - Different flags. `cargo build -p dispatch-server` resolves other features than
//!   `cargo test --workspace --all-features`, so it rebuilt the server *without*
//!   `alloc-tags` over the uplifted `target/debug/dispatch-server` that the server's own tests
//!   then ran (and `telemetry_wired`'s tagged-allocator test timed out on a binary without
//!   tags). Even `cargo build --workspace --all-features --bins` differs: `cargo test` unifies
//!   the dev-dependencies' features too (tokio-rustls, rustix, ...), so it rebuilt 32 s of
//!   crates in a cold CI run. Only a `cargo test` with the same flags builds the same bins.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The debug bins, built exactly as the README's test command (`cargo test --workspace
/// --all-features`) builds them: that command with `--no-run`, narrowed to one small
/// integration test of the server and one of the collector, whose packages' bins (the
/// uplifted `target/debug/dispatch-server` and `dispatch-collector`) cargo builds for them.
pub const DEBUG_BINS: &[&str] =
    &["test", "--workspace", "--all-features", "--no-run", "--test", "layers", "--test", "query"];

/// `.ci/run`'s release build of what users run.
pub const RELEASE_BINS: &[&str] =
    &["build", "--release", "-p", "dispatch-server", "-p", "dispatch-cli", "--bins"];

/// Variables cargo sets for the test process (not for cargo itself); none of them may reach
/// the nested cargo. `DISPATCH_GIT_SHA` is the server build script's `rustc-env`, which cargo
/// also sets for the server's test binaries; that script reruns when it changes, so in a
/// server test the nested release build recompiled dispatch-server (48 s in a cold CI run).
fn set_by_cargo_for_tests(name: &str) -> bool {
    const PREFIXES: &[&str] = &["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_", "CARGO_CRATE_"];
    const NAMES: &[&str] = &[
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
        "DISPATCH_GIT_SHA",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// `cargo ARGS --target-dir TARGET` (a build: [`DEBUG_BINS`], [`RELEASE_BINS`]) of the
/// workspace at `workspace`, with the test's own cargo-set variables removed. Returns `TARGET`.
///
/// # Panics
/// When cargo cannot be run or the build fails; the message is the command to run by hand.
pub fn build(workspace: &Path, target: &Path, args: &[&str]) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let shown = format!("cargo {} --target-dir {}", args.join(" "), target.display());
    eprintln!("nested build: {shown} (a no-op when the same build ran before the tests)");
    let mut cmd = Command::new(&cargo);
    for (k, _) in std::env::vars_os() {
        if set_by_cargo_for_tests(&k.to_string_lossy()) {
            cmd.env_remove(k);
        }
    }
    let status = cmd
        .args(args)
        .arg("--target-dir")
        .arg(target)
        .current_dir(workspace)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {cargo:?} for `{shown}`: {e}"));
    assert!(
        status.success(),
        "`{shown}` failed ({status}); run it in {} to see why",
        workspace.display()
    );
    target.to_path_buf()
}

/// The target directory a test binary was built into: `<target>/<profile>/deps/<test>`.
pub fn target_of_this_test() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors().nth(3).expect("a test binary lives in <target>/<profile>/deps/").to_path_buf()
}
