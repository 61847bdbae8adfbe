//! Property tests over the parsers of outside input that dispatchctl reads: minidumps
//! (`postmortem --dump`) and jemalloc heap profiles (`heap diff`). Every input, however
//! mangled, gets a result or an error that names what was wrong; never a panic.
//!
//! Inputs are mutations of real files: rust-minidump's test dumps (byte flips, overwritten
//! runs, truncations, a stream directory entry pointed elsewhere), and a `heap_v2` profile in
//! the shape jemalloc writes (lines dropped, duplicated, cut, digits and separators replaced).
//! The normal suite runs 256 cases per parser; the long run (docs/BENCHMARKS.md, "Fuzzing")
//! sets `PROPTEST_CASES`:
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test -p dispatch-cli --test fuzz_inputs -- --test-threads 1 --nocapture
//! ```

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dispatch_cli::postmortem::dump::analyze_dump;
use dispatch_cli::postmortem::symbols::BreakpadStores;
use proptest::prelude::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/minidumps");

/// Dumps small enough to walk thousands of times.
const DUMPS: &[&str] = &["dumps/linux-mini.dmp", "dumps/test.dmp", "dumps/simple-crashpad.dmp"];

/// Inputs the stack walker panicked on (caught by `analyze_dump`'s backstop and reported as a
/// malformed dump): counted, printed, not a failure of ours.
static WALKER_PANICS: AtomicU64 = AtomicU64::new(0);
/// Outcomes, for the note of a long run: walked, truncated, malformed.
static WALKED: AtomicU64 = AtomicU64::new(0);
static TRUNCATED: AtomicU64 = AtomicU64::new(0);
static MALFORMED: AtomicU64 = AtomicU64::new(0);

fn dumps() -> Vec<Vec<u8>> {
    DUMPS.iter().map(|d| std::fs::read(Path::new(FIXTURES).join(d)).unwrap()).collect()
}

/// One mutation of a dump.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte.
    Flip { at: usize, with: u8 },
    /// Overwrite a run with one byte value.
    Fill { at: usize, len: usize, with: u8 },
    /// Keep only the first part.
    Truncate { keep: usize },
    /// Point a stream directory entry (its size or offset field) at `value`.
    Directory { entry: usize, field_offset: usize, value: u32 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, with)| Mutation::Flip { at, with }),
        (any::<usize>(), 1usize..512, any::<u8>()).prop_map(|(at, len, with)| Mutation::Fill {
            at,
            len,
            with
        }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        (0usize..16, prop_oneof![Just(4usize), Just(8usize)], any::<u32>()).prop_map(
            |(entry, field_offset, value)| Mutation::Directory { entry, field_offset, value }
        ),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let n = bytes.len();
        match *m {
            Mutation::Flip { at, with } => bytes[at % n] ^= with,
            Mutation::Fill { at, len, with } => {
                let start = at % n;
                for b in &mut bytes[start..(start + len).min(n)] {
                    *b = with;
                }
            }
            Mutation::Truncate { keep } => bytes.truncate(keep % n),
            Mutation::Directory { entry, field_offset, value } => {
                // MINIDUMP_HEADER: the stream directory's RVA is at byte 12.
                if n >= 16 {
                    let rva = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
                    let at = rva.saturating_add(entry * 12 + field_offset);
                    if at + 4 <= n {
                        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
                    }
                }
            }
        }
    }
    bytes
}

fn walk(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutated.dmp");
    std::fs::write(&path, bytes).unwrap();
    match analyze_dump(&path, Arc::new(BreakpadStores::new(Vec::new()))) {
        Ok(_) => {
            WALKED.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            match e.code() {
                "postmortem_dump_truncated" => TRUNCATED.fetch_add(1, Ordering::Relaxed),
                "postmortem_dump_malformed" => MALFORMED.fetch_add(1, Ordering::Relaxed),
                other => panic!("a mutated dump is truncated or malformed, not {other}: {e}"),
            };
            let message = format!("{e}");
            assert!(message.contains("mutated.dmp"), "the error names the file: {message}");
            if message.contains("the stack walker failed") {
                WALKER_PANICS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_minidump_is_walked_or_named_never_a_panic(
        which in 0usize..DUMPS.len(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(dumps().swap_remove(which), &mutations);
        walk(&bytes);
    }
}

/// The outcomes so far in this process, for the note of a long run (`--test-threads 1`, so
/// that this test, last by name, runs after the others).
#[test]
fn zz_report_outcomes() {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "mutated dumps: {} walked, {} truncated, {} malformed ({} of them the walker's caught panic)",
        n(&WALKED),
        n(&TRUNCATED),
        n(&MALFORMED),
        n(&WALKER_PANICS)
    );
}

/// A profile in the shape jemalloc's `prof.dump` writes (`heap_v2`).
const PROFILE: &str = "heap_v2/524288
  t*: 28106: 56637512 [0: 0]
  t0: 28106: 56637512 [0: 0]
@ 0x55a5c0a1f2b3 0x55a5c0a1e111 0x7f3c2b9d1d90
  t*: 1: 1048576 [0: 0]
  t0: 1: 1048576 [0: 0]
@ 0x55a5c0a20000 0x55a5c0a1e111
  t*: 12: 49152 [0: 0]
  t0: 12: 49152 [0: 0]

MAPPED_LIBRARIES:
55a5c0800000-55a5c0c00000 r-xp 00000000 08:01 1234 /usr/bin/dispatch-server
7f3c2b800000-7f3c2ba00000 r-xp 00028000 08:01 5678 /usr/lib/x86_64-linux-gnu/libc.so.6
";

/// One mutation of a profile's text.
#[derive(Debug, Clone)]
enum TextMutation {
    DropLine(usize),
    DuplicateLine(usize),
    CutLine { line: usize, keep: usize },
    ReplaceChar { at: usize, with: char },
    Insert { at: usize, text: String },
}

fn text_mutation() -> impl Strategy<Value = TextMutation> {
    let junk = prop_oneof![
        Just(String::from(":")),
        Just(String::from("@ ")),
        Just(String::from("0x")),
        Just(String::from("18446744073709551616")),
        Just(String::from("-1")),
        Just(String::from("\n")),
        Just(String::from("MAPPED_LIBRARIES:\n")),
        Just(String::from("ffffffffffffffff-0 r-xp zz 0 0 /x\n")),
        "[ -~]{0,12}",
    ];
    prop_oneof![
        any::<usize>().prop_map(TextMutation::DropLine),
        any::<usize>().prop_map(TextMutation::DuplicateLine),
        (any::<usize>(), any::<usize>())
            .prop_map(|(line, keep)| TextMutation::CutLine { line, keep }),
        (
            any::<usize>(),
            prop_oneof![Just(' '), Just(':'), Just('x'), Just('9'), Just('-'), Just('\u{fffd}')]
        )
            .prop_map(|(at, with)| TextMutation::ReplaceChar { at, with }),
        (any::<usize>(), junk).prop_map(|(at, text)| TextMutation::Insert { at, text }),
    ]
}

fn apply_text(text: &str, mutations: &[TextMutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in mutations {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match m {
            TextMutation::DropLine(i) => {
                lines.remove(i % n);
            }
            TextMutation::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            TextMutation::CutLine { line, keep } => {
                let l = &mut lines[line % n];
                let cut: String = l.chars().take(keep % (l.chars().count() + 1)).collect();
                *l = cut;
            }
            TextMutation::ReplaceChar { at, with } => {
                let l = &mut lines[at % n];
                let chars: Vec<char> = l.chars().collect();
                if !chars.is_empty() {
                    let i = at % chars.len();
                    *l = chars
                        .iter()
                        .enumerate()
                        .map(|(j, c)| if j == i { *with } else { *c })
                        .collect();
                }
            }
            TextMutation::Insert { at, text } => {
                let l = &mut lines[at % n];
                let chars: Vec<char> = l.chars().collect();
                let i = at % (chars.len() + 1);
                *l = chars[..i].iter().collect::<String>()
                    + text
                    + &chars[i..].iter().collect::<String>();
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_heap_profile_parses_or_names_its_line(
        mutations in proptest::collection::vec(text_mutation(), 1..8),
    ) {
        let text = apply_text(PROFILE, &mutations);
        match dispatch_cli::heap::parse(&text) {
            Ok(p) => {
                // What parsed is usable: a diff against itself and against the original runs.
                let original = dispatch_cli::heap::parse(PROFILE).unwrap();
                let none = |_: &dispatch_cli::heap::Profile, _: &[u64]| std::collections::HashMap::new();
                let _ = dispatch_cli::heap::diff(&original, &p, 10, &none);
                let _ = dispatch_cli::heap::diff(&p, &p, 10, &none);
            }
            Err(e) => {
                let message = format!("{e}");
                prop_assert!(message.contains("line "), "the error names the line: {}", message);
            }
        }
    }
}

#[test]
fn the_unmutated_inputs_are_good() {
    for d in DUMPS {
        let path = Path::new(FIXTURES).join(d);
        analyze_dump(&path, Arc::new(BreakpadStores::new(Vec::new())))
            .unwrap_or_else(|e| panic!("{d}: {e}"));
    }
    let p = dispatch_cli::heap::parse(PROFILE).unwrap();
    assert_eq!((p.sample_period, p.sites.len(), p.mappings.len()), (524288, 2, 2));
}
