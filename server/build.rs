//! Records the git commit the server is built from (`DISPATCH_GIT_SHA`) for `process.start`.
//! An explicit `DISPATCH_GIT_SHA` in the build environment wins (release pipelines without a
//! `.git`); otherwise `git rev-parse HEAD`; otherwise nothing (the field is left out).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DISPATCH_GIT_SHA");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    let sha = std::env::var("DISPATCH_GIT_SHA").ok().filter(|s| !s.is_empty()).or_else(|| {
        let out = Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && s.len() >= 7).then_some(s)
    });
    if let Some(sha) = sha {
        println!("cargo:rustc-env=DISPATCH_GIT_SHA={sha}");
    }
}
