//! Crate-level tests: round trips, hostile input, and the documentation contract.

use proptest::prelude::*;
use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::record::*;
use crate::*;

// ---------------------------------------------------------------------------------------------
// Field-name capture: a Deserializer that records the field list serde_derive hands it.

#[derive(Debug)]
struct Captured(&'static [&'static str]);
impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "captured {:?}", self.0)
    }
}
impl std::error::Error for Captured {}
impl de::Error for Captured {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Captured(&[])
    }
}

struct Capture;
impl<'de> Deserializer<'de> for Capture {
    type Error = Captured;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Captured> {
        Err(Captured(&[]))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Captured> {
        Err(Captured(fields))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The serde field names of `T`.
pub(crate) fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(Capture) {
        Err(Captured(f)) => f,
        Ok(_) => &[],
    }
}

const JOURNAL_MD: &str = include_str!("../../../docs/JOURNAL.md");

/// The text of the section that starts with a `### `…`` heading naming `name`.
fn doc_section(name: &str) -> Option<&'static str> {
    let heading = format!("### `{name}`");
    let start = JOURNAL_MD.find(&heading)?;
    let rest = &JOURNAL_MD[start + heading.len()..];
    let end = rest.find("\n### ").or_else(|| rest.find("\n## ")).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn every_kind_and_field_is_documented() {
    let mut missing = Vec::new();
    for kind in KINDS {
        let Some(section) = doc_section(kind) else {
            missing.push(format!("kind `{kind}` has no `### `{kind}`` section"));
            continue;
        };
        for field in Record::field_names(kind).expect("every KINDS entry has a type") {
            if !section.contains(&format!("`{field}`")) {
                missing.push(format!("`{kind}` field `{field}`"));
            }
        }
    }
    let nested: [(&str, &[&str]); 6] = [
        ("jemalloc", field_names::<JemallocStats>()),
        ("cgroup", field_names::<CgroupMemory>()),
        ("cgroup.events", field_names::<CgroupEvents>()),
        ("load", field_names::<Load>()),
        ("limits", field_names::<Limits>()),
        ("envelope", &["v", "ts", "kind", "boot", "seq", "service", "truncated"]),
    ];
    for (name, fields) in nested {
        let Some(section) = doc_section(name) else {
            missing.push(format!("object `{name}` has no section"));
            continue;
        };
        for field in fields {
            if !section.contains(&format!("`{field}`")) {
                missing.push(format!("`{name}` field `{field}`"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/JOURNAL.md is missing:\n{}", missing.join("\n"));
}

#[test]
fn documentation_test_catches_an_undocumented_kind() {
    // The check above must be able to fail: a made-up kind has no section.
    assert!(doc_section("no.such.kind").is_none());
    assert!(doc_section("memory.sample").is_some());
    assert!(field_names::<JemallocStats>().contains(&"allocated"));
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn s() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.-]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        Just("quote \" backslash \\ newline \n tab \t nul \u{0}".to_string()),
    ]
}
fn os() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(s())
}
fn ou() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(any::<u64>())
}
fn ob() -> impl Strategy<Value = Option<bool>> {
    proptest::option::of(any::<bool>())
}
fn ts() -> impl Strategy<Value = Timestamp> {
    (time::MIN_MILLIS..=time::MAX_MILLIS).prop_map(Timestamp::from_unix_millis)
}
fn ovec() -> impl Strategy<Value = Option<Vec<String>>> {
    proptest::option::of(proptest::collection::vec(s(), 0..4))
}

fn jemalloc() -> impl Strategy<Value = JemallocStats> {
    (ou(), ou(), ou(), ou(), ou(), ou()).prop_map(
        |(allocated, active, resident, mapped, retained, metadata)| JemallocStats {
            allocated,
            active,
            resident,
            mapped,
            retained,
            metadata,
        },
    )
}
fn cgroup() -> impl Strategy<Value = CgroupMemory> {
    (ou(), ou(), ou(), ou(), proptest::option::of((ou(), ou(), ou(), ou()))).prop_map(
        |(current, peak, high, max, ev)| CgroupMemory {
            current,
            peak,
            high,
            max,
            events: ev.map(|(high, max, oom, oom_kill)| CgroupEvents { high, max, oom, oom_kill }),
        },
    )
}
fn load() -> impl Strategy<Value = Load> {
    (ou(), ou(), ou(), ou(), ou()).prop_map(|(a, b, c, d, e)| Load {
        conversations_active: a,
        turns_in_flight: b,
        queue_depth: c,
        conversations_loaded: d,
        state_bytes: e,
    })
}
fn sample() -> impl Strategy<Value = MemorySample> {
    (
        (ou(), ou(), ou(), ou(), ou()),
        proptest::option::of(jemalloc()),
        proptest::option::of(cgroup()),
        proptest::option::of(load()),
        (ou(), ou(), ou()),
    )
        .prop_map(
            |((rss, hwm, rss_anon, rss_file, threads), jemalloc, cgroup, load, (u, c, d))| {
                MemorySample {
                    rss,
                    hwm,
                    rss_anon,
                    rss_file,
                    threads,
                    jemalloc,
                    cgroup,
                    load,
                    uptime_ms: u,
                    cost_us: c,
                    dropped: d,
                }
            },
        )
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (any::<u64>(), proptest::option::of(ts()), proptest::option::of(any::<u32>()), os())
            .prop_map(|(segment, created, pid, writer)| Record::SegmentHeader(SegmentHeader {
                segment,
                created,
                pid,
                writer
            })),
        any::<u64>().prop_map(|count| Record::JournalDropped(JournalDropped { count })),
        (
            (proptest::option::of(any::<u32>()), proptest::option::of(any::<u32>()), os(), os()),
            (os(), os(), os(), os()),
            proptest::option::of((ou(), ou())),
            proptest::option::of(proptest::collection::btree_map(
                "[a-z_]{1,8}",
                any::<i64>(),
                0..3
            )),
        )
            .prop_map(
                |((pid, ppid, version, build_id), (git_sha, allocator, host, kernel), l, c)| {
                    Record::ProcessStart(ProcessStart {
                        pid,
                        ppid,
                        version,
                        build_id,
                        git_sha,
                        allocator,
                        host,
                        kernel,
                        limits: l
                            .map(|(memory_high, memory_max)| Limits { memory_high, memory_max }),
                        config: c.map(|m| m.into_iter().map(|(k, v)| (k, v.into())).collect()),
                    })
                }
            ),
        (os(), ou(), ou()).prop_map(|(reason, uptime_ms, turns_sealed)| Record::ProcessStop(
            ProcessStop { reason, uptime_ms, turns_sealed }
        )),
        sample().prop_map(Record::MemorySample),
        (s(), ou(), ou(), ou(), ou(), ou()).prop_map(|(conversation, t, h, l, a, f)| {
            Record::ConversationMemory(ConversationMemory {
                conversation,
                turns: t,
                history_bytes: h,
                live_bytes: l,
                alloc_bytes: a,
                freed_bytes: f,
            })
        }),
        (s(), s(), os(), os()).prop_map(|(conversation, action, turn, detail)| {
            Record::ConversationRepair(ConversationRepair { conversation, action, turn, detail })
        }),
        (os(), os(), os(), os()).prop_map(|(conversation, turn, provider, model)| {
            Record::TurnStart(TurnStart { conversation, turn, provider, model })
        }),
        ((os(), os(), os(), ou()), (ou(), ou(), ou(), ob()), (ou(), ou(), os())).prop_map(
            |(
                (conversation, turn, outcome, duration_ms),
                (steps, tool_calls, ob_, tt),
                (a, f, e),
            )| {
                Record::TurnEnd(TurnEnd {
                    conversation,
                    turn,
                    outcome,
                    duration_ms,
                    steps,
                    tool_calls,
                    output_bytes: ob_,
                    tool_output_truncated: tt,
                    alloc_bytes: a,
                    freed_bytes: f,
                    error: e,
                })
            }
        ),
        ((os(), os(), os(), os()), (os(), os(), os(), ovec(), proptest::option::of(sample())))
            .prop_map(
                |(
                    (message, code, source, conversation),
                    (error_id, turn, backtrace, active, memory),
                )| {
                    Record::ErrorUnhandled(ErrorUnhandled {
                        message,
                        code,
                        source,
                        error_id,
                        conversation,
                        turn,
                        backtrace,
                        active_conversations: active,
                        memory: memory.map(Box::new),
                    })
                }
            ),
        ((os(), os(), os(), os()), (os(), os(), ob(), ovec(), proptest::option::of(sample())))
            .prop_map(
                |(
                    (message, location, thread, backtrace),
                    (conversation, turn, fatal, active, memory),
                )| {
                    Record::Panic(Panic {
                        message,
                        location,
                        thread,
                        backtrace,
                        conversation,
                        turn,
                        fatal,
                        active_conversations: active,
                        memory: memory.map(Box::new),
                    })
                }
            ),
        (
            (os(), proptest::option::of(any::<i32>()), proptest::option::of(any::<i32>())),
            (proptest::option::of(any::<u64>().prop_map(HexU64)), ou(), os()),
            (os(), ou(), os(), os()),
            (ou(), proptest::option::of(sample()), ovec()),
        )
            .prop_map(
                |((signal, signo, code), (fa, thread, tn), (md, mb, de, bid), (up, ls, ac))| {
                    Record::Crash(Crash {
                        signal,
                        signo,
                        code,
                        fault_address: fa,
                        thread,
                        thread_name: tn,
                        minidump: md,
                        minidump_bytes: mb,
                        dump_error: de,
                        build_id: bid,
                        uptime_ms: up,
                        last_sample: ls.map(Box::new),
                        active_conversations: ac,
                    })
                }
            ),
        (
            (proptest::option::of(any::<i32>()), os(), proptest::option::of(any::<i32>())),
            (ob(), ob(), ou(), proptest::option::of(any::<u32>()), os()),
        )
            .prop_map(|((status, signal, signo), (cd, oom, up, pid, eb))| Record::Exit(
                Exit {
                    status,
                    signal,
                    signo,
                    core_dumped: cd,
                    oom_killed: oom,
                    uptime_ms: up,
                    pid,
                    exited_boot: eb,
                }
            )),
        (os(), ou(), ou(), os()).prop_map(|(level, rss, limit, action)| Record::Pressure(
            Pressure { level, rss, limit, action }
        )),
        (os(), os(), ou()).prop_map(|(path, trigger, bytes)| Record::HeapProfile(HeapProfile {
            path,
            trigger,
            bytes
        })),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (ts(), "[0-9a-f-]{1,36}", any::<u64>(), "[a-z][a-z0-9_.-]{0,10}").prop_map(
        |(ts, boot, seq, service)| Envelope { v: 1, ts, boot, seq, service, truncated: false },
    )
}

fn valid_line() -> impl Strategy<Value = Vec<u8>> {
    (envelope(), record()).prop_map(|(e, r)| encode(&e, &r).expect("small records encode"))
}

/// A corruption of a valid line: flipped, inserted, deleted bytes, a cut, or splices.
fn corrupted_line() -> impl Strategy<Value = Vec<u8>> {
    (valid_line(), proptest::collection::vec((any::<u8>(), any::<usize>(), 0u8..5), 1..6)).prop_map(
        |(mut line, edits)| {
            for (byte, at, op) in edits {
                if line.is_empty() {
                    line.push(byte);
                    continue;
                }
                let i = at % line.len();
                match op {
                    0 => line[i] = byte,
                    1 => line.insert(i, byte),
                    2 => {
                        line.remove(i);
                    }
                    3 => line.truncate(i),
                    _ => line[i] ^= 1 << (byte % 8),
                }
            }
            line
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_round_trips(e in envelope(), r in record()) {
        let line = encode(&e, &r).unwrap();
        prop_assert!(line.ends_with(b"\n"));
        prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line, one newline");
        match decode_line(7, &line) {
            Ok(Decoded::Record(l)) => {
                prop_assert_eq!(l.envelope, e);
                prop_assert_eq!(l.record, r);
            }
            other => prop_assert!(false, "expected a record, got {:?}", other),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), n in 1u64..1_000_000) {
        check_outcome(n, &bytes)?;
    }
}

proptest! {
    // The acceptance line: 10k random and corrupted inputs, or `PROPTEST_CASES` for a long run
    // (docs/BENCHMARKS.md, "Fuzzing").
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn ten_thousand_corrupted_lines_never_panic_and_errors_name_line_and_reason(
        line in corrupted_line(),
        n in 1u64..1_000_000,
    ) {
        check_outcome(n, &line)?;
    }

    #[test]
    fn a_line_cut_at_any_byte_is_an_error_never_a_wrong_record(line in valid_line(), cut in any::<usize>()) {
        // Cut before the closing brace: the JSON object is incomplete.
        let body = line.len() - 1; // without '\n'
        let cut = cut % body;
        let r = decode_line(1, &line[..cut]);
        prop_assert!(r.is_err(), "cut at {} of {}: {:?}", cut, body, r);
    }
}

fn check_outcome(n: u64, bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode_line(n, bytes) {
        Ok(_) => {}
        Err(e) => {
            prop_assert_eq!(e.line, n);
            let msg = e.to_string();
            let prefix = format!("line {n}: ");
            prop_assert!(msg.starts_with(&prefix), "{}", msg);
            prop_assert!(msg.len() > prefix.len() + 3, "no reason in {:?}", msg);
            prop_assert!(e.code().starts_with("journal_"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Examples.

fn ok(line: &str) -> Decoded {
    decode_line(3, line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
}
fn bad(line: &str) -> DecodeError {
    match decode_line(3, line.as_bytes()) {
        Err(e) => e,
        Ok(d) => panic!("{line}: expected an error, got {d:?}"),
    }
}
const HEAD: &str =
    r#""v":1,"ts":"2026-06-28T00:12:02.123Z","boot":"b1","seq":5,"service":"dispatch""#;

#[test]
fn unknown_fields_are_ignored_and_unknown_kinds_counted() {
    let d = ok(&format!(r#"{{{HEAD},"kind":"memory.sample","rss":10,"future_field":[1,2]}}"#));
    let Decoded::Record(l) = d else { panic!("{d:?}") };
    assert_eq!(
        l.record,
        Record::MemorySample(MemorySample { rss: Some(10), ..Default::default() })
    );
    let d = ok(&format!(r#"{{{HEAD},"kind":"gpu.sample","vram":1}}"#));
    assert!(matches!(d, Decoded::UnknownKind { ref kind, .. } if kind == "gpu.sample"), "{d:?}");
}

#[test]
fn newer_versions_are_counted_not_failed() {
    assert_eq!(ok(r#"{"v":2,"kind":"memory.sample"}"#), Decoded::TooNew { v: 2 });
    // Even when v2 changed the envelope's types.
    assert_eq!(ok(r#"{"v":3,"ts":1234,"seq":"x"}"#), Decoded::TooNew { v: 3 });
}

#[test]
fn errors_name_line_reason_and_field() {
    let e = bad(&format!(r#"{{{HEAD},"kind":"memory.sample","jemalloc":{{"allocated":"lots"}}}}"#));
    assert_eq!(e.code(), "journal_field_invalid");
    assert!(e.to_string().starts_with("line 3: field `jemalloc.allocated`: invalid type"), "{e}");

    let e = bad(r#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"panic","seq":1,"service":"s"}"#);
    assert_eq!(e.to_string(), "line 3: missing envelope field `boot`");

    let e = bad(r#"{"v":1,"ts":"yesterday","kind":"panic","boot":"b","seq":1,"service":"s"}"#);
    assert!(e.to_string().starts_with("line 3: field `ts`: invalid timestamp"), "{e}");

    let e = bad(&format!(r#"{{{HEAD},"kind":"journal.segment"}}"#));
    assert!(e.to_string().contains("missing field `segment`"), "{e}");

    assert_eq!(bad("[1,2,3]").to_string(), "line 3: not a JSON object (starts with '[')");
    assert_eq!(bad("   ").code(), "journal_line_empty");
    assert_eq!(bad("{\"v\":1,").code(), "journal_line_invalid");
    let e = decode_line(9, b"{\"v\":1,\"k\xff\":2}").unwrap_err();
    assert_eq!(e.to_string(), "line 9: invalid UTF-8 at byte 9");
    let long = format!("{{\"v\":1,\"x\":\"{}\"}}", "a".repeat(MAX_LINE_BYTES));
    assert_eq!(bad(&long).code(), "journal_line_too_long");
}

#[test]
fn long_strings_are_cut_to_fit_and_marked_truncated() {
    let env = Envelope {
        v: 1,
        ts: Timestamp::from_unix_millis(0),
        boot: "b".into(),
        seq: u64::MAX,
        service: "svc".into(),
        truncated: false,
    };
    let huge = "é".repeat(200_000); // 400 KB of two-byte characters
    let r = Record::Panic(Panic {
        message: Some(huge.clone()),
        backtrace: Some(huge),
        ..Default::default()
    });
    let line = encode(&env, &r).unwrap();
    assert!(line.len() <= MAX_LINE_BYTES, "{} bytes", line.len());
    let Decoded::Record(l) = decode_line(1, &line).unwrap() else { panic!() };
    assert!(l.envelope.truncated);
    let Record::Panic(p) = l.record else { panic!() };
    assert!(p.message.unwrap().len() > 1000, "cut no more than needed");

    // Thousands of array items are halved too.
    let ids: Vec<String> = (0..20_000).map(|i| format!("conversation-{i}")).collect();
    let r = Record::Crash(Crash { active_conversations: Some(ids), ..Default::default() });
    let line = encode(&env, &r).unwrap();
    assert!(line.len() <= MAX_LINE_BYTES);
}
