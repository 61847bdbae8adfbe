//! `dispatchctl symbols add|list` on real binaries: a C program gcc compiles here (with a
//! function it inlines) and `dispatchctl` itself. The `.sym` files are read back with
//! rust-minidump's own parser (`breakpad-symbols`, what `minidump-stackwalk` reads with), ids
//! are computed independently (from `readelf -n`, and from a real minidump through the
//! `minidump` crate), and addresses are checked against binutils' `addr2line`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use breakpad_symbols::{FrameSymbolizer, SymbolFile};
use dispatch_cli::symbols::{Debuginfod, Lookup, ModuleIds, Store};

/// `helper.h`: `scale` is always inlined; its body is lines 2-4.
const HELPER_H: &str = "static inline __attribute__((always_inline)) long scale(long x) {
    long y = x * 3;
    if (y > 100) y -= VARIANT;
    return y ^ (x >> 2);
}
";

/// `inl.c`: `work` (never inlined) calls `scale` on lines 6 and 7.
const INL_C: &str = "#include <stdio.h>
#include <stdlib.h>
#include \"helper.h\"

__attribute__((noinline)) long work(long n) {
    long a = scale(n);
    long b = scale(n + a);
    return a * b;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? strtol(argv[1], 0, 10) : 3;
    printf(\"%ld\\n\", work(n));
    return 0;
}
";

/// Compiles the program into `dir/inl` with `gcc -O2 -g -Wl,--build-id` plus `extra`;
/// `variant` changes the code (so two variants are two builds with two build-ids).
fn compile(dir: &Path, variant: u32, extra: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("helper.h"), HELPER_H).unwrap();
    std::fs::write(dir.join("inl.c"), INL_C).unwrap();
    let out = dir.join("inl");
    let status = Command::new("gcc")
        .current_dir(dir)
        .args(["-O2", "-g", "-Wl,--build-id"])
        .arg(format!("-DVARIANT={variant}"))
        .args(extra)
        .args(["-o", "inl", "inl.c"])
        .status()
        .expect("gcc is needed for this test (Debian package gcc)");
    assert!(status.success(), "gcc failed");
    out
}

fn run(args: &[&str]) -> Output {
    common::dispatchctl_command().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The build-id `readelf -n` prints (binutils, independent of the code under test).
fn readelf_build_id(path: &Path) -> String {
    let out = Command::new("readelf").arg("-n").arg(path).output().expect("readelf (binutils)");
    text(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .unwrap_or_else(|| panic!("readelf found no build-id in {}", path.display()))
}

/// The Breakpad debug id of a little-endian ELF, worked here by hand: the first 16 bytes of
/// the build-id as a GUID whose first three fields are byte-swapped, uppercase, age 0.
fn debug_id_by_hand(build_id: &str) -> String {
    let hex: Vec<String> =
        (0..16).map(|i| build_id.get(2 * i..2 * i + 2).unwrap_or("00").to_uppercase()).collect();
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    order.iter().map(|&i| hex[i].as_str()).collect::<String>() + "0"
}

/// `nm` address of a symbol (binutils).
fn nm_address(path: &Path, symbol: &str) -> u64 {
    let out = Command::new("nm").arg(path).output().expect("nm (binutils)");
    let line = text(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(symbol))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("nm: no {symbol} in {}", path.display()));
    u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
}

/// What `addr2line -f -i` says for `addr`: (function, file:line) innermost first.
fn addr2line(path: &Path, addr: u64) -> Vec<(String, String)> {
    let out = Command::new("addr2line")
        .args(["-f", "-i", "-e"])
        .arg(path)
        .arg(format!("{addr:#x}"))
        .output()
        .expect("addr2line (binutils)");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    lines.chunks(2).map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default())).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A module at base 0, for `SymbolFile::fill_symbol`.
struct AtZero;
impl breakpad_symbols::Module for AtZero {
    fn base_address(&self) -> u64 {
        0
    }
    fn size(&self) -> u64 {
        u64::MAX
    }
    fn code_file(&self) -> std::borrow::Cow<'_, str> {
        "inl".into()
    }
    fn code_identifier(&self) -> Option<debugid::CodeId> {
        None
    }
    fn debug_file(&self) -> Option<std::borrow::Cow<'_, str>> {
        None
    }
    fn debug_identifier(&self) -> Option<debugid::DebugId> {
        None
    }
    fn version(&self) -> Option<std::borrow::Cow<'_, str>> {
        None
    }
}

/// What `fill_symbol` reports for one address, outermost frame first.
#[derive(Debug, Default)]
struct Frame {
    pc: u64,
    function: String,
    file_line: Option<(String, u32)>,
    inlines: Vec<(String, Option<String>, Option<u32>)>,
}
impl FrameSymbolizer for Frame {
    fn get_instruction(&self) -> u64 {
        self.pc
    }
    fn set_function(&mut self, name: &str, _base: u64, _parameter_size: u32) {
        self.function = name.to_owned();
    }
    fn set_source_file(&mut self, file: &str, line: u32, _base: u64) {
        self.file_line = Some((file.to_owned(), line));
    }
    fn add_inline_frame(&mut self, name: &str, file: Option<&str>, line: Option<u32>) {
        self.inlines.push((name.to_owned(), file.map(str::to_owned), line));
    }
}

fn symbolize(sym: &SymbolFile, pc: u64) -> Frame {
    let mut frame = Frame { pc, ..Frame::default() };
    sym.fill_symbol(&AtZero, &mut frame);
    frame
}

#[test]
fn add_stores_a_c_program_by_build_id_with_files_lines_and_inlines() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = compile(&tmp.path().join("a"), 1, &[]);
    let store = tmp.path().join("store");
    let out = run(&["symbols", "add", bin.to_str().unwrap(), "--store", store.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "no notes for a -g build: {}", text(&out.stderr));

    // The layout minidump-stackwalk reads: <store>/inl/<DEBUG ID>/inl.sym, with the debug
    // id worked out by hand from readelf's build-id.
    let build_id = readelf_build_id(&bin);
    let debug_id = debug_id_by_hand(&build_id);
    let sym_path = store.join("inl").join(&debug_id).join("inl.sym");
    assert!(sym_path.is_file(), "{} missing; stdout: {}", sym_path.display(), text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("stored inl {debug_id} (build-id {build_id})")),
        "{stdout}"
    );
    for dir in [&store, &store.join("inl"), &store.join("inl").join(&debug_id)] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    for entry in std::fs::read_dir(store.join("inl").join(&debug_id)).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        assert!(
            !p.file_name().unwrap().to_string_lossy().starts_with('.'),
            "temp file left: {p:?}"
        );
    }

    // rust-minidump's parser reads it, and the ids are the ones it was stored under.
    let text_sym = std::fs::read_to_string(&sym_path).unwrap();
    assert!(
        text_sym.starts_with(&format!("MODULE Linux x86_64 {debug_id} inl\n")),
        "{}",
        &text_sym[..200.min(text_sym.len())]
    );
    assert!(text_sym.contains(&format!("INFO CODE_ID {}", build_id.to_uppercase())));
    let sym = SymbolFile::from_file(&sym_path).unwrap();
    assert_eq!(sym.module_id, debug_id);
    assert!(sym.files.values().any(|f| f.ends_with("/a/helper.h")), "{:?}", sym.files);
    assert!(sym.files.values().any(|f| f.ends_with("/a/inl.c")), "{:?}", sym.files);
    assert!(sym.inline_origins.values().any(|n| n == "scale"), "{:?}", sym.inline_origins);
    assert!(!sym.cfi_stack_info.is_empty(), "STACK CFI records from .eh_frame");

    // `work` (from nm) resolves to `work`, and carries the two inlined calls of `scale`, on
    // inl.c lines 6 and 7.
    let work = nm_address(&bin, "work");
    let func = sym.functions.get(work).expect("a FUNC covers work's address");
    assert_eq!((func.name.as_str(), func.address), ("work", work));
    let scale_origin =
        sym.inline_origins.iter().find(|(_, n)| n.as_str() == "scale").map(|(id, _)| *id).unwrap();
    let mut call_lines: Vec<(String, u32)> = func
        .inlinees
        .iter()
        .filter(|i| i.origin_id == scale_origin)
        .map(|i| (sym.files[&i.call_file].rsplit('/').next().unwrap().to_owned(), i.call_line))
        .collect();
    call_lines.sort();
    call_lines.dedup();
    assert_eq!(
        call_lines,
        [("inl.c".to_owned(), 6), ("inl.c".to_owned(), 7)],
        "{:?}",
        func.inlinees
    );

    // An address inside an inlined call symbolizes as work -> scale, with scale's own line in
    // helper.h, and binutils' addr2line agrees on function, file and line.
    let inlined = func.inlinees.iter().find(|i| i.origin_id == scale_origin).unwrap();
    let frame = symbolize(&sym, inlined.address);
    assert_eq!(frame.function, "work");
    assert_eq!(frame.inlines.len(), 1, "{frame:?}");
    let (name, file, line) = &frame.inlines[0];
    assert_eq!(name, "scale");
    assert!(file.as_deref().unwrap().ends_with("helper.h"), "{frame:?}");
    assert!((2..=4).contains(&line.unwrap()), "scale's body is helper.h:2-4: {frame:?}");
    let oracle = addr2line(&bin, inlined.address);
    assert_eq!(oracle[0].0, "scale", "addr2line: {oracle:?}");
    assert_eq!(
        oracle[0].1,
        format!("{}:{}", file.as_deref().unwrap(), line.unwrap()),
        "{oracle:?}"
    );
    assert_eq!(oracle.last().unwrap().0, "work", "{oracle:?}");
    let (outer_file, outer_line) = frame.file_line.clone().unwrap();
    assert!(outer_file.ends_with("inl.c") && (6..=7).contains(&outer_line), "{frame:?}");
    assert_eq!(
        oracle.last().unwrap().1.split(" (").next().unwrap(),
        format!("{outer_file}:{outer_line}")
    );

    // `main` resolves to main.
    assert_eq!(symbolize(&sym, nm_address(&bin, "main")).function, "main");

    // Adding the same build again is a no-op that says so; the file is not rewritten.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&sym_path).unwrap());
    let again = run(&["symbols", "add", bin.to_str().unwrap(), "--store", store.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout)
            .starts_with(&format!("already stored, nothing written: inl {debug_id}")),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&sym_path).unwrap()), inode);

    // `list` shows it, in text and JSON.
    let list = run(&["symbols", "list", "--store", store.to_str().unwrap()]);
    assert!(list.status.success());
    let list_text = text(&list.stdout);
    assert!(list_text.starts_with("NAME"), "{list_text}");
    let row = list_text.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["inl", debug_id.as_str(), build_id.as_str(), "yes", "yes", "yes"],
        "{row}"
    );
    let json = run(&["--json", "symbols", "list", "--store", store.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!((doc["v"].as_u64(), doc["kind"].as_str()), (Some(1), Some("symbols.list")));
    let m = &doc["modules"][0];
    assert_eq!(m["name"], "inl");
    assert_eq!(m["debug_id"], debug_id.as_str());
    assert_eq!(m["build_id"], build_id.as_str());
    assert_eq!(m["state"], "symbols");
    assert_eq!(
        (m["has_line_info"].as_bool(), m["has_inline_info"].as_bool(), m["has_cfi"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(m["sym_bytes"].as_u64(), Some(std::fs::metadata(&sym_path).unwrap().len()));
    assert!(m["added"].as_str().unwrap().ends_with('Z'), "{m}");
    assert_eq!(m["source"], std::fs::canonicalize(&bin).unwrap().to_str().unwrap());
}

#[test]
fn two_builds_of_one_program_never_lend_each_other_symbols() {
    let tmp = tempfile::tempdir().unwrap();
    let a = compile(&tmp.path().join("a"), 1, &[]);
    let b = compile(&tmp.path().join("b"), 7, &[]);
    let (id_a, id_b) = (readelf_build_id(&a), readelf_build_id(&b));
    assert_ne!(id_a, id_b, "two different programs, two build-ids");
    let store_dir = tmp.path().join("store");
    let store = Store::open(&store_dir).unwrap();
    store.add(&a, None).unwrap();
    store.add(&b, None).unwrap();
    let ids = |build_id: &str| ModuleIds {
        code_file: "/opt/app/inl".into(), // a dump records the full path
        debug_id: debug_id_by_hand(build_id),
        code_id: Some(build_id.to_owned()),
    };
    let none = Debuginfod::none();
    let found = |build_id: &str| match store.lookup(&ids(build_id), &none).unwrap() {
        Lookup::Found(p) => p,
        other => panic!("{other:?}"),
    };
    let (sym_a, sym_b) = (found(&id_a), found(&id_b));
    assert_ne!(sym_a, sym_b);
    for (sym, build_id) in [(&sym_a, &id_a), (&sym_b, &id_b)] {
        let first = std::fs::read_to_string(sym).unwrap().lines().next().unwrap().to_owned();
        assert_eq!(first, format!("MODULE Linux x86_64 {} inl", debug_id_by_hand(build_id)));
    }

    // An id the store does not hold: "no symbols for <id>", never the other build.
    let other = "00112233445566778899aabbccddeeff00112233";
    match store.lookup(&ids(other), &none).unwrap() {
        Lookup::Missing { why } => {
            assert_eq!(why, format!("no symbols for {}", debug_id_by_hand(other)))
        }
        found => panic!("{found:?}"),
    }
    // Two ids that disagree (a debug id of A with the build-id of B) match nothing.
    let mixed = ModuleIds { code_id: Some(id_b.clone()), ..ids(&id_a) };
    assert!(matches!(store.lookup(&mixed, &none).unwrap(), Lookup::Missing { .. }));

    // B's .sym put in A's directory is refused, and so is B's binary there: a lookup of A
    // then finds nothing rather than B's names.
    std::fs::copy(&sym_b, &sym_a).unwrap();
    match store.lookup(&ids(&id_a), &none).unwrap() {
        Lookup::Missing { why } => assert!(
            why.starts_with(&format!("no symbols for {}", debug_id_by_hand(&id_a)))
                && why.contains(&format!("its MODULE line names {}", debug_id_by_hand(&id_b))),
            "{why}"
        ),
        found => panic!("B's .sym under A's id was used: {found:?}"),
    }
    std::fs::remove_file(&sym_a).unwrap();
    let a_dir = sym_a.parent().unwrap();
    std::fs::copy(&b, a_dir.join("inl")).unwrap();
    match store.lookup(&ids(&id_a), &none).unwrap() {
        Lookup::Missing { why } => assert!(
            why.contains(&format!("build-id {id_b}, but {id_a} was asked for: refused")),
            "{why}"
        ),
        found => panic!("B's binary under A's id was used: {found:?}"),
    }
    assert!(!sym_a.exists(), "nothing was written from the refused file");

    // A's own binary in that place is converted on lookup (the server's self-copy path).
    std::fs::copy(&a, a_dir.join("inl")).unwrap();
    assert_eq!(found(&id_a), sym_a);
    let sym = SymbolFile::from_file(&sym_a).unwrap();
    assert_eq!(sym.module_id, debug_id_by_hand(&id_a));
    assert_eq!(symbolize(&sym, nm_address(&a, "work")).function, "work");
}

#[test]
fn debug_ids_agree_with_rust_minidump_on_a_real_linux_dump() {
    // rust-minidump's fixture (see ../shared/fixtures/minidumps/README.md): every ELF module's
    // code id (its build-id) gives, by the store's rule, the debug id minidump computes, and
    // the store path is the one breakpad-symbols looks up.
    use minidump::{Minidump, MinidumpModuleList, Module};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/minidumps/dumps/linux-mini.dmp"
    );
    let dump = Minidump::read_path(path).unwrap();
    let modules: MinidumpModuleList = dump.get_stream().unwrap();
    let mut checked = 0;
    for m in modules.iter() {
        let (Some(code_id), Some(debug_id)) = (m.code_identifier(), m.debug_identifier()) else {
            continue;
        };
        let breakpad = debug_id.breakpad().to_string();
        assert_eq!(
            dispatch_journal::symbols::debug_id_from_build_id(code_id.as_str()).as_deref(),
            Some(breakpad.as_str()),
            "{}",
            m.code_file()
        );
        let lookup = breakpad_symbols::breakpad_sym_lookup(m).unwrap();
        let name = dispatch_journal::symbols::code_file_name(&m.code_file()).to_owned();
        let ours = dispatch_journal::symbols::sym_path(Path::new(""), &name, &breakpad);
        assert_eq!(Path::new(&lookup.cache_rel), ours, "{}", m.code_file());
        checked += 1;
    }
    assert!(checked >= 3, "the dump has ELF modules with build-ids ({checked} checked)");
}

#[test]
fn dispatchctl_itself_converts_with_lines_inlines_and_cfi() {
    let bin = Path::new(env!("CARGO_BIN_EXE_dispatchctl"));
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = run(&[
        "--json",
        "symbols",
        "add",
        bin.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let item = &doc["results"][0];
    assert_eq!(item["status"], "stored", "{item}");
    let build_id = readelf_build_id(bin);
    let m = &item["module"];
    assert_eq!(m["build_id"], build_id.as_str());
    assert_eq!(m["debug_id"], debug_id_by_hand(&build_id).as_str());
    assert_eq!(
        (m["has_line_info"].as_bool(), m["has_inline_info"].as_bool(), m["has_cfi"].as_bool()),
        (Some(true), Some(true), Some(true)),
        "{m}"
    );
    let sym_path = PathBuf::from(m["sym"].as_str().unwrap());
    assert_eq!(
        sym_path,
        store.join("dispatchctl").join(debug_id_by_hand(&build_id)).join("dispatchctl.sym")
    );
    let sym = SymbolFile::from_file(&sym_path).unwrap();
    let main = nm_address(bin, "main");
    assert_eq!(symbolize(&sym, main).function, "main");
}

#[test]
fn bad_inputs_are_named_and_what_is_there_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let s = store.to_str().unwrap();
    let not_elf = tmp.path().join("notes.txt");
    std::fs::write(&not_elf, "not a binary\n").unwrap();
    let no_id = compile(&tmp.path().join("noid"), 1, &["-Wl,--build-id=none"]);
    let missing = tmp.path().join("missing");

    // One bad input: its own error, exit 2.
    let out = run(&["symbols", "add", not_elf.to_str().unwrap(), "--store", s]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!("dispatchctl: error: {}: not an ELF file\n", not_elf.display())
    );
    let out = run(&["symbols", "add", no_id.to_str().unwrap(), "--store", s]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!(
            "dispatchctl: error: {}: no GNU build-id note (link with -Wl,--build-id",
            no_id.display()
        )),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["symbols", "add", missing.to_str().unwrap(), "--store", s]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .starts_with(&format!("dispatchctl: error: reading {}: ", missing.display()))
    );

    // Good and bad together: the good one is stored, each bad one is a skip, exit 1.
    let good = compile(&tmp.path().join("good"), 1, &[]);
    let out =
        run(&["symbols", "add", not_elf.to_str().unwrap(), good.to_str().unwrap(), "--store", s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("stored inl "), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr),
        format!("dispatchctl: skipped {}: not an ELF file (symbols_not_elf)\n", not_elf.display())
    );

    // A binary without DWARF: stored with what it has (PUBLIC and CFI), and said so.
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let nodebug = compile(&plain, 3, &["-g0"]);
    let out = run(&["--json", "symbols", "add", nodebug.to_str().unwrap(), "--store", s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let item = &doc["results"][0];
    assert_eq!(item["status"], "stored");
    assert!(
        item["notes"][0].as_str().unwrap().contains(
            "no debug info (.debug_info): stored what is there, PUBLIC names and STACK CFI only"
        ),
        "{item}"
    );
    assert_eq!(item["module"]["has_line_info"], false);
    assert_eq!(item["module"]["has_cfi"], true);
    let sym = SymbolFile::from_file(Path::new(item["module"]["sym"].as_str().unwrap())).unwrap();
    let work = nm_address(&nodebug, "work");
    assert!(sym.publics.iter().any(|p| p.name == "work" && p.address == work), "PUBLIC work");
    let human = run(&["symbols", "add", nodebug.to_str().unwrap(), "--store", s]);
    assert!(text(&human.stdout).contains("already stored"), "{}", text(&human.stdout));

    // An empty store lists as empty, in both forms.
    let empty = tmp.path().join("empty");
    let out = run(&["symbols", "list", "--store", empty.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), format!("no symbols in {}\n", empty.display()));
    let out = run(&["--json", "symbols", "list", "--store", empty.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["modules"], serde_json::json!([]));
    // The default store is <var dir>/symbols.
    let var = tmp.path().join("var");
    let out = run(&["--var-dir", var.to_str().unwrap(), "symbols", "add", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(var.join("symbols").join("inl").is_dir());
}
