//! A fast path for the lines the collector sees most (`memory.sample`, `conversation.memory`,
//! `turn.start`, `turn.end`) in the exact layout `dispatch_journal::encode` writes.
//!
//! `dispatch_journal::decode_line` is the authority: it reads the envelope, then the kind's
//! fields, in two serde passes, and at about 1M lines/s on one core it was most of the
//! reader thread. This module reads the canonical layout in one pass, allocation-free for
//! samples, and returns `None` for anything it is not sure about (escapes, `null`,
//! white space, unknown or repeated keys, other kinds, numbers that are not plain `u64`),
//! which then goes through `decode_line`. Property tests check that whenever it returns a
//! line, `decode_line` returns the same one.

use dispatch_journal::Record;
use dispatch_journal::Timestamp;
use dispatch_journal::record::{
    CgroupEvents, CgroupMemory, ConversationMemory, JemallocStats, Load, MemorySample, TurnEnd,
    TurnStart,
};

/// A line decoded by the fast path; `boot` and `service` borrow the line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FastLine<'a> {
    pub ts: Timestamp,
    pub boot: &'a str,
    pub seq: u64,
    pub service: &'a str,
    pub truncated: bool,
    pub record: Record,
}

struct P<'a> {
    /// The line, known to be UTF-8; `b` is its bytes.
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> P<'a> {
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + s.len())? == s {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => {}
            }
        }
        // Both ends are ASCII quotes, so char boundaries.
        self.text.get(start..self.i - 1)
    }

    /// A plain non-negative JSON integer that fits a u64.
    fn u64(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        // A fraction or exponent would make it a float: not a u64 to serde either.
        if matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(v)
    }

    fn bool(&mut self) -> Option<bool> {
        if self.lit(b"true").is_some() {
            Some(true)
        } else if self.lit(b"false").is_some() {
            Some(false)
        } else {
            None
        }
    }

    /// Calls `field(key)` for each `"key":` of an object whose `{` is next; `field` parses the
    /// value. Returns `None` on a repeated key (tracked by the bit `field` returns).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Option<u32>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        let mut seen = 0u32;
        loop {
            let key = self.string()?;
            if !self.eat(b':') {
                return None;
            }
            let bit = field(self, key)?;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }
}

fn set<T>(slot: &mut Option<T>, v: T, bit: u32) -> Option<u32> {
    *slot = Some(v);
    Some(bit)
}

fn jemalloc(p: &mut P<'_>) -> Option<JemallocStats> {
    let mut j = JemallocStats::default();
    p.object(|p, k| match k {
        "allocated" => set(&mut j.allocated, p.u64()?, 1),
        "active" => set(&mut j.active, p.u64()?, 2),
        "resident" => set(&mut j.resident, p.u64()?, 4),
        "mapped" => set(&mut j.mapped, p.u64()?, 8),
        "retained" => set(&mut j.retained, p.u64()?, 16),
        "metadata" => set(&mut j.metadata, p.u64()?, 32),
        _ => None,
    })?;
    Some(j)
}

fn events(p: &mut P<'_>) -> Option<CgroupEvents> {
    let mut e = CgroupEvents::default();
    p.object(|p, k| match k {
        "high" => set(&mut e.high, p.u64()?, 1),
        "max" => set(&mut e.max, p.u64()?, 2),
        "oom" => set(&mut e.oom, p.u64()?, 4),
        "oom_kill" => set(&mut e.oom_kill, p.u64()?, 8),
        _ => None,
    })?;
    Some(e)
}

fn cgroup(p: &mut P<'_>) -> Option<CgroupMemory> {
    let mut c = CgroupMemory::default();
    p.object(|p, k| match k {
        "current" => set(&mut c.current, p.u64()?, 1),
        "peak" => set(&mut c.peak, p.u64()?, 2),
        "high" => set(&mut c.high, p.u64()?, 4),
        "max" => set(&mut c.max, p.u64()?, 8),
        "events" => set(&mut c.events, events(p)?, 16),
        _ => None,
    })?;
    Some(c)
}

fn load(p: &mut P<'_>) -> Option<Load> {
    let mut l = Load::default();
    p.object(|p, k| match k {
        "conversations_active" => set(&mut l.conversations_active, p.u64()?, 1),
        "turns_in_flight" => set(&mut l.turns_in_flight, p.u64()?, 2),
        "queue_depth" => set(&mut l.queue_depth, p.u64()?, 4),
        "conversations_loaded" => set(&mut l.conversations_loaded, p.u64()?, 8),
        "state_bytes" => set(&mut l.state_bytes, p.u64()?, 16),
        _ => None,
    })?;
    Some(l)
}

/// Parses the kind fields that follow the envelope (`,"k":v,...}`) with `field`.
fn fields(p: &mut P<'_>, mut field: impl FnMut(&mut P<'_>, &str) -> Option<u32>) -> Option<()> {
    let mut seen = 0u32;
    while p.eat(b',') {
        let key = p.string()?;
        if !p.eat(b':') {
            return None;
        }
        let bit = field(p, key)?;
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
    }
    if p.eat(b'}') && p.i == p.b.len() { Some(()) } else { None }
}

fn sample(p: &mut P<'_>) -> Option<MemorySample> {
    let mut s = MemorySample::default();
    fields(p, |p, k| match k {
        "rss" => set(&mut s.rss, p.u64()?, 1),
        "hwm" => set(&mut s.hwm, p.u64()?, 1 << 1),
        "rss_anon" => set(&mut s.rss_anon, p.u64()?, 1 << 2),
        "rss_file" => set(&mut s.rss_file, p.u64()?, 1 << 3),
        "threads" => set(&mut s.threads, p.u64()?, 1 << 4),
        "jemalloc" => set(&mut s.jemalloc, jemalloc(p)?, 1 << 5),
        "cgroup" => set(&mut s.cgroup, cgroup(p)?, 1 << 6),
        "load" => set(&mut s.load, load(p)?, 1 << 7),
        "uptime_ms" => set(&mut s.uptime_ms, p.u64()?, 1 << 8),
        "cost_us" => set(&mut s.cost_us, p.u64()?, 1 << 9),
        "dropped" => set(&mut s.dropped, p.u64()?, 1 << 10),
        _ => None,
    })?;
    Some(s)
}

fn conversation_memory(p: &mut P<'_>) -> Option<ConversationMemory> {
    let mut c = ConversationMemory::default();
    let mut conversation = None;
    fields(p, |p, k| match k {
        "conversation" => set(&mut conversation, p.string()?.to_string(), 1),
        "turns" => set(&mut c.turns, p.u64()?, 2),
        "history_bytes" => set(&mut c.history_bytes, p.u64()?, 4),
        "live_bytes" => set(&mut c.live_bytes, p.u64()?, 8),
        "alloc_bytes" => set(&mut c.alloc_bytes, p.u64()?, 16),
        "freed_bytes" => set(&mut c.freed_bytes, p.u64()?, 32),
        _ => None,
    })?;
    c.conversation = conversation?; // required: decode_line reports its absence
    Some(c)
}

fn turn_start(p: &mut P<'_>) -> Option<TurnStart> {
    let mut t = TurnStart::default();
    fields(p, |p, k| match k {
        "conversation" => set(&mut t.conversation, p.string()?.to_string(), 1),
        "turn" => set(&mut t.turn, p.string()?.to_string(), 2),
        "provider" => set(&mut t.provider, p.string()?.to_string(), 4),
        "model" => set(&mut t.model, p.string()?.to_string(), 8),
        _ => None,
    })?;
    Some(t)
}

fn turn_end(p: &mut P<'_>) -> Option<TurnEnd> {
    let mut t = TurnEnd::default();
    fields(p, |p, k| match k {
        "conversation" => set(&mut t.conversation, p.string()?.to_string(), 1),
        "turn" => set(&mut t.turn, p.string()?.to_string(), 2),
        "outcome" => set(&mut t.outcome, p.string()?.to_string(), 4),
        "duration_ms" => set(&mut t.duration_ms, p.u64()?, 8),
        "steps" => set(&mut t.steps, p.u64()?, 16),
        "tool_calls" => set(&mut t.tool_calls, p.u64()?, 32),
        "output_bytes" => set(&mut t.output_bytes, p.u64()?, 64),
        "tool_output_truncated" => set(&mut t.tool_output_truncated, p.bool()?, 128),
        "alloc_bytes" => set(&mut t.alloc_bytes, p.u64()?, 256),
        "freed_bytes" => set(&mut t.freed_bytes, p.u64()?, 512),
        "error" => set(&mut t.error, p.string()?.to_string(), 1024),
        _ => None,
    })?;
    Some(t)
}

/// Decodes `line` (without its newline) when it is a hot kind in the canonical layout.
pub(crate) fn decode(line: &[u8]) -> Option<FastLine<'_>> {
    let text = std::str::from_utf8(line).ok()?;
    let mut p = P { text, b: line, i: 0 };
    p.lit(b"{\"v\":1,\"ts\":")?;
    let ts = Timestamp::parse_rfc3339(p.string()?).ok()?;
    p.lit(b",\"kind\":")?;
    let kind = p.string()?;
    p.lit(b",\"boot\":")?;
    let boot = p.string()?;
    if boot.is_empty() {
        return None;
    }
    p.lit(b",\"seq\":")?;
    let seq = p.u64()?;
    p.lit(b",\"service\":")?;
    let service = p.string()?;
    let mut truncated = false;
    if p.lit(b",\"truncated\":").is_some() {
        truncated = p.bool()?;
    }
    let record = match kind {
        "memory.sample" => Record::MemorySample(sample(&mut p)?),
        "conversation.memory" => Record::ConversationMemory(conversation_memory(&mut p)?),
        "turn.start" => Record::TurnStart(turn_start(&mut p)?),
        "turn.end" => Record::TurnEnd(turn_end(&mut p)?),
        _ => return None,
    };
    Some(FastLine { ts, boot, seq, service, truncated, record })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_journal::{Decoded, Envelope, decode_line, encode};
    use proptest::prelude::*;

    fn via_slow(line: &[u8]) -> Option<FastLine<'_>> {
        match decode_line(1, line) {
            Ok(Decoded::Record(l)) => {
                // Borrow boot and service from the line for comparison.
                let find = |s: &str| {
                    let text = std::str::from_utf8(line).ok()?;
                    let at = text.find(&format!("\"{s}\""))? + 1;
                    Some(&text[at..at + s.len()])
                };
                Some(FastLine {
                    ts: l.envelope.ts,
                    boot: find(&l.envelope.boot)?,
                    seq: l.envelope.seq,
                    service: find(&l.envelope.service)?,
                    truncated: l.envelope.truncated,
                    record: l.record,
                })
            }
            _ => None,
        }
    }

    fn env(seq: u64) -> Envelope {
        Envelope {
            v: 1,
            ts: Timestamp::from_unix_millis(1_782_605_522_123),
            boot: "6f1c2d9e-8a41-4b7e-9a55-0c1e2f3a4b5c".into(),
            seq,
            service: "dispatch".into(),
            truncated: false,
        }
    }

    fn opt_u64() -> impl Strategy<Value = Option<u64>> {
        prop_oneof![Just(None), any::<u64>().prop_map(Some), (0u64..1000).prop_map(Some)]
    }

    fn opt_str() -> impl Strategy<Value = Option<String>> {
        prop_oneof![Just(None), "[a-z0-9-]{0,12}".prop_map(Some), ".{0,6}".prop_map(Some)]
    }

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (opt_u64(), opt_u64(), opt_u64(), opt_u64(), opt_u64(), any::<bool>(), any::<bool>())
                .prop_map(|(a, b, c, d, e, je, lo)| Record::MemorySample(MemorySample {
                    rss: a,
                    hwm: b,
                    jemalloc: je.then(|| JemallocStats {
                        allocated: c,
                        resident: d,
                        ..Default::default()
                    }),
                    load: lo.then(|| Load { turns_in_flight: e, ..Default::default() }),
                    cgroup: lo.then(|| CgroupMemory {
                        current: a,
                        events: je.then(|| CgroupEvents { oom_kill: b, ..Default::default() }),
                        ..Default::default()
                    }),
                    cost_us: e,
                    ..Default::default()
                })),
            ("[a-z0-9\\\\\"é-]{0,12}", opt_u64(), opt_u64()).prop_map(|(c, a, b)| {
                Record::ConversationMemory(ConversationMemory {
                    conversation: c,
                    turns: a,
                    alloc_bytes: b,
                    ..Default::default()
                })
            }),
            (opt_str(), opt_str(), opt_str()).prop_map(|(c, t, m)| Record::TurnStart(TurnStart {
                conversation: c,
                turn: t,
                model: m,
                ..Default::default()
            })),
            (opt_str(), opt_str(), opt_u64(), proptest::option::of(any::<bool>())).prop_map(
                |(c, o, d, tr)| Record::TurnEnd(TurnEnd {
                    conversation: c,
                    outcome: o,
                    duration_ms: d,
                    tool_output_truncated: tr,
                    ..Default::default()
                })
            ),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_decode_line_on_encoded_records(r in record(), seq in any::<u64>()) {
            let line = encode(&env(seq), &r).unwrap();
            let body = &line[..line.len() - 1];
            let slow = via_slow(body);
            prop_assert!(slow.is_some());
            if let Some(fast) = decode(body) {
                prop_assert_eq!(Some(fast), slow);
            }
        }

        #[test]
        fn never_accepts_what_decode_line_reads_differently(
            r in record(),
            cut in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            mode in 0u8..3,
        ) {
            let mut line = encode(&env(7), &r).unwrap();
            line.pop();
            let at = cut.index(line.len());
            match mode {
                0 => line[at] = byte,
                1 => line.insert(at, byte),
                _ => { line.remove(at); }
            }
            if let Some(fast) = decode(&line) {
                prop_assert_eq!(Some(fast), via_slow(&line));
            }
        }
    }

    #[test]
    fn the_common_kinds_take_the_fast_path() {
        let s = Record::MemorySample(MemorySample {
            rss: Some(1),
            jemalloc: Some(JemallocStats { allocated: Some(2), ..Default::default() }),
            ..Default::default()
        });
        let line = encode(&env(3), &s).unwrap();
        let fast = decode(&line[..line.len() - 1]).expect("canonical sample");
        assert_eq!((fast.seq, fast.record), (3, s));
    }

    #[test]
    fn anything_unusual_falls_back() {
        for line in [
            &br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"memory.sample","boot":"b","seq":1,"service":"d","rss":null}"#[..],
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"memory.sample","boot":"b","seq":1,"service":"d","rss":1,"rss":2}"#,
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"memory.sample","boot":"b","seq":1,"service":"d","rss":01}"#,
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"memory.sample","boot":"b","seq":1,"service":"d","rss":1.5}"#,
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"memory.sample","boot":"b","seq":1,"service":"d","x":1}"#,
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"memory.sample","boot":"b","seq":1,"service":"d"} "#,
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"panic","boot":"b","seq":1,"service":"d"}"#,
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"conversation.memory","boot":"b","seq":1,"service":"d"}"#,
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"memory.sample","boot":"","seq":1,"service":"d"}"#,
            br#"{"v":1,"ts":"2026-06-28T00:12:02.123Z","kind":"memory.sample","boot":"b","seq":18446744073709551616,"service":"d"}"#,
        ] {
            assert_eq!(decode(line), None, "{}", String::from_utf8_lossy(line));
        }
    }
}
