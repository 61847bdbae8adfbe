//! The post-mortem on what users run: the **release** server (`debug = "line-tables-only"`)
//! segfaults through the admin fault API under its real crash monitor; the release
//! `dispatchctl symbols add` stores that binary's symbols by build-id; the whole var dir is
//! copied elsewhere; `dispatchctl --var-dir COPY postmortem latest` names `inject_segfault`
//! with its file and line on the crashing thread, SIGSEGV and the fault address, the
//! conversations active at the crash and the last samples. A rebuilt binary with another
//! build-id stored beside it is never used for names.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use common::server::{ADMIN_TOKEN, Server, journal, of_kind, release_binaries, wait_for};
use serde_json::Value;

fn run(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("DISPATCH_") || k == "DEBUGINFOD_URLS" {
            cmd.env_remove(k);
        }
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The GNU build-id of `elf`, from `readelf -n` (binutils), the way a person would check it.
fn build_id(elf: &Path) -> String {
    let out = Command::new("readelf").arg("-n").arg(elf).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build-id in {}: {text}", elf.display()))
        .trim()
        .to_owned()
}

/// A copy of `elf` whose build-id note says another build (the code is the same, which is the
/// worst case: every address would resolve, to the right names by luck or the wrong ones).
fn rebuilt_with_another_build_id(elf: &Path, to: &Path) -> String {
    let id = build_id(elf);
    let id_bytes: Vec<u8> =
        (0..id.len() / 2).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let mut bytes = std::fs::read(elf).unwrap();
    let at = bytes
        .windows(id_bytes.len())
        .position(|w| w == id_bytes.as_slice())
        .expect("the build-id bytes in the file");
    for b in &mut bytes[at..at + 4] {
        *b ^= 0xff;
    }
    std::fs::write(to, &bytes).unwrap();
    let other = build_id(to);
    assert_ne!(other, id);
    other
}

/// Every frame of the crashing thread, inlines first, as (function, file, line).
fn crashing_names(doc: &Value) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for f in doc["crashing_thread"]["frames"].as_array().unwrap() {
        for i in f["inlines"].as_array().into_iter().flatten() {
            out.push((
                i["function"].as_str().unwrap_or("").to_owned(),
                i["file"].as_str().unwrap_or("").to_owned(),
                i["line"].as_u64().unwrap_or(0),
            ));
        }
        out.push((
            f["function"].as_str().unwrap_or("").to_owned(),
            f["file"].as_str().unwrap_or("").to_owned(),
            f["line"].as_u64().unwrap_or(0),
        ));
    }
    out
}

#[test]
fn the_release_servers_segfault_is_named_with_file_and_line_from_a_copied_var_dir() {
    let (server_bin, dispatchctl) = release_binaries();
    let parent = tempfile::tempdir().unwrap();
    let var = parent.path().join("var");
    std::fs::create_dir(&var).unwrap();
    let mut server = Server::start_binary(server_bin, &var, &["--admin-token", ADMIN_TOKEN]);
    let idle = server.create_conversation();
    let busy = server.create_conversation();
    server.stream_turn(&busy);
    wait_for("the turn in flight and samples after it", || {
        let r = journal(&var);
        let start = of_kind(&r, "turn.start").first()?["seq"].as_i64()?;
        let after =
            of_kind(&r, "memory.sample").iter().filter(|s| s["seq"].as_i64() > Some(start)).count();
        (after >= 3).then_some(())
    });
    let (status, body) = server.post("/admin/fault/segfault", ADMIN_TOKEN, "");
    assert_eq!(status, 202, "{body}");
    let status = server.child.wait().unwrap();
    assert_eq!(status.signal(), Some(11), "the release monitor dies of SIGSEGV like its child");
    let crash = of_kind(&journal(&var), "crash").first().copied().cloned().expect("a crash record");
    let fault_address = crash["fault_address"].as_str().unwrap().to_owned();

    // The symbols of this build, and of a "rebuilt" binary with another build-id, side by side.
    let store = var.join("symbols");
    let (code, _, err) = run(
        dispatchctl,
        &["symbols", "add", server_bin.to_str().unwrap(), "--store", store.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let other = parent.path().join("dispatch-server");
    let other_id = rebuilt_with_another_build_id(server_bin, &other);
    let (code, _, err) = run(
        dispatchctl,
        &["symbols", "add", other.to_str().unwrap(), "--store", store.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (_, listing, _) =
        run(dispatchctl, &["symbols", "list", "--store", store.to_str().unwrap(), "--json"]);
    assert!(listing.contains(&build_id(server_bin)) && listing.contains(&other_id), "{listing}");

    // The whole var dir, copied elsewhere: the post-mortem author's machine.
    let copy = parent.path().join("copy");
    let status = Command::new("cp").arg("-a").arg(&var).arg(&copy).status().unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(&var).unwrap();
    let (code, out, err) = run(
        dispatchctl,
        &["--var-dir", copy.to_str().unwrap(), "postmortem", "latest", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let ci = &doc["crash_info"];
    assert!(ci["type"].as_str().unwrap().starts_with("SIGSEGV"), "{ci}");
    assert_eq!(ci["address"].as_str().unwrap(), fault_address, "the fault address, as recorded");
    let names = crashing_names(&doc);
    let hit = names
        .iter()
        .find(|(f, _, _)| f.contains("inject_segfault"))
        .unwrap_or_else(|| panic!("inject_segfault not on the crashing thread: {names:?}"));
    assert!(hit.1.ends_with("server/src/faults.rs"), "its file: {hit:?}");
    assert!(hit.2 > 0, "its line: {hit:?}");
    let j = &doc["journal"];
    let active: Vec<&str> =
        j["active_conversations"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(active, [busy.as_str()], "the conversation whose turn was in flight; not {idle}");
    assert!(j["last_samples"].as_array().is_some_and(|s| !s.is_empty()), "{j}");
    let server_module = doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["filename"] == "dispatch-server")
        .unwrap();
    assert_eq!(server_module["missing_symbols"], false, "{server_module}");
    let md_path = copy.join("report.md");
    let (code, _, err) = run(
        dispatchctl,
        &[
            "--var-dir",
            copy.to_str().unwrap(),
            "postmortem",
            "latest",
            "-o",
            md_path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Markdown escapes `_` and `<`: read it as a ticket renders it.
    let md = std::fs::read_to_string(&md_path).unwrap().replace('\\', "");
    assert!(md.contains("dispatch_server::faults::inject_segfault"), "{md}");
    assert!(md.contains("server/src/faults.rs:"), "{md}");

    // Without this build's symbols, the other build's (same code, other id) are never used:
    // module+offset and the reason, no names from dispatch-server at all.
    let own = store_dir_of(&copy.join("symbols"), &build_id(server_bin));
    std::fs::remove_dir_all(own).unwrap();
    let (code, out, err) = run(
        dispatchctl,
        &["--var-dir", copy.to_str().unwrap(), "postmortem", "latest", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let server_frames: Vec<&Value> = doc["crashing_thread"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["module"] == "dispatch-server")
        .collect();
    assert!(!server_frames.is_empty());
    assert!(
        server_frames
            .iter()
            .all(|f| f.get("function").is_none()
                && f["inlines"].as_array().is_none_or(Vec::is_empty)),
        "another build's symbols were used: {server_frames:?}"
    );
    let md = run(dispatchctl, &["--var-dir", copy.to_str().unwrap(), "postmortem", "latest"])
        .1
        .replace('\\', "");
    assert!(md.contains("no symbols for"), "{md}");
    assert!(!md.contains("inject_segfault"), "{md}");
}

/// `<store>/dispatch-server/<DEBUG ID>` of a build-id.
fn store_dir_of(store: &Path, build_id: &str) -> std::path::PathBuf {
    let dir = store.join("dispatch-server");
    let b: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&build_id[2 * i..2 * i + 2], 16).unwrap()).collect();
    let mut g = b.clone();
    g[..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    let id: String = g.iter().map(|x| format!("{x:02X}")).collect::<String>() + "0";
    let path = dir.join(&id);
    assert!(
        path.is_dir(),
        "{} in {:?}",
        path.display(),
        std::fs::read_dir(&dir).map(|d| d.count())
    );
    path
}

/// The OOM killer's way out, on the release server: SIGKILL of the server child while two
/// turns stream. No dump can exist; the report says so and why, with the last samples and
/// the turns in flight.
#[test]
fn a_sigkilled_release_server_gets_a_report_without_a_dump() {
    let (server_bin, dispatchctl) = release_binaries();
    let dir = tempfile::tempdir().unwrap();
    let var = dir.path().join("var");
    std::fs::create_dir(&var).unwrap();
    let mut server = Server::start_binary(server_bin, &var, &[]);
    let conversations = [server.create_conversation(), server.create_conversation()];
    for c in &conversations {
        server.stream_turn(c);
    }
    let turns: Vec<String> = wait_for("both turns started, and samples after them", || {
        let r = journal(&var);
        let starts = of_kind(&r, "turn.start");
        let last = starts.iter().filter_map(|s| s["seq"].as_i64()).max()?;
        let after =
            of_kind(&r, "memory.sample").iter().filter(|s| s["seq"].as_i64() > Some(last)).count();
        (starts.len() == 2 && after >= 3)
            .then(|| starts.iter().map(|s| s["turn"].as_str().unwrap().to_owned()).collect())
    });
    let killed = Command::new("kill").args(["-9", &server.worker.to_string()]).status().unwrap();
    assert!(killed.success());
    assert_eq!(
        server.child.wait().unwrap().signal(),
        Some(9),
        "the monitor exits as its child did"
    );
    let (code, out, err) = run(
        dispatchctl,
        &["--var-dir", var.to_str().unwrap(), "postmortem", "latest", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let absent = doc["dump"]["absent"].as_str().unwrap();
    assert!(absent.starts_with("no dump exists: the process was killed by SIGKILL"), "{absent}");
    assert!(doc.get("threads").is_none(), "no dump facts without a dump");
    let j = &doc["journal"];
    assert!(j["last_samples"].as_array().is_some_and(|s| !s.is_empty()), "{j}");
    let mut in_flight: Vec<String> = j["turns_in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["turn"].as_str().unwrap().to_owned())
        .collect();
    in_flight.sort();
    let mut want = turns;
    want.sort();
    assert_eq!(in_flight, want, "the two turns the kill cut off");
    let md = run(dispatchctl, &["--var-dir", var.to_str().unwrap(), "postmortem", "latest"]).1;
    assert!(md.contains("no dump exists"), "{md}");
}
