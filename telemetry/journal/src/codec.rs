//! One record per line: the envelope, encoding and the two-step decoder.

use std::borrow::Cow;

use serde::Deserialize;

use crate::record::Record;
use crate::time::Timestamp;

/// The schema version this build writes and reads. Bump only for breaking changes: a renamed,
/// removed, retyped or redefined field (see docs/JOURNAL.md). New kinds and fields keep it.
pub const SCHEMA_VERSION: u32 = 1;

/// The longest line, newline included. Longer string fields are cut and the record gets
/// `"truncated": true`.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Room kept for the `seq` digits when a line is encoded before its `seq` is known.
const SEQ_RESERVE: usize = 20;

/// The fields every line carries besides `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Schema version of the line.
    pub v: u32,
    /// When the record was made.
    pub ts: Timestamp,
    /// Id of the process start that wrote it (UUID v4 text).
    pub boot: String,
    /// Per-boot counter from 0, +1 per line.
    pub seq: u64,
    /// Service name.
    pub service: String,
    /// Whether string fields were cut to fit [`MAX_LINE_BYTES`].
    pub truncated: bool,
}

/// A decoded line of a known kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The envelope.
    pub envelope: Envelope,
    /// The kind and its fields.
    pub record: Record,
}

/// What a line decodes to.
#[derive(Debug, Clone, PartialEq)]
// Not boxed: a decoded line is moved once, and a box would cost the collector an
// allocation per line on its hot path.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    /// A v1 record of a kind this build knows.
    Record(Line),
    /// A valid v1 envelope of a kind this build does not know: count it, do not fail.
    UnknownKind {
        /// The envelope.
        envelope: Envelope,
        /// The kind it named.
        kind: String,
    },
    /// A line from a newer schema version: count it like an unknown kind.
    TooNew {
        /// The version it carried.
        v: u32,
    },
}

/// Why a line was rejected, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DecodeError {
    /// 1-based line number in its file (or stream).
    pub line: u64,
    /// What was wrong.
    pub reason: Reason,
}

impl DecodeError {
    /// Stable snake_case code for logs, `--json` output and runbooks.
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }
}

/// What was wrong with a rejected line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// Nothing but white space.
    #[error("empty line")]
    Empty,
    /// Over [`MAX_LINE_BYTES`].
    #[error("line is {bytes} bytes, over the {max} byte limit")]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not UTF-8.
    #[error("invalid UTF-8 at byte {offset}")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// Valid JSON or not, it is not an object.
    #[error("not a JSON object (starts with {found:?})")]
    NotAnObject {
        /// The first character.
        found: char,
    },
    /// Not valid JSON.
    #[error("invalid JSON: {message}")]
    Json {
        /// The parser's message (with column).
        message: String,
    },
    /// An envelope field is missing.
    #[error("missing envelope field `{field}`")]
    MissingField {
        /// Field name.
        field: &'static str,
    },
    /// A field has the wrong type or value.
    #[error("field `{field}`: {message}")]
    InvalidField {
        /// Path of the field (`jemalloc.allocated`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Reason {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Empty => "journal_line_empty",
            Reason::TooLong { .. } => "journal_line_too_long",
            Reason::NotUtf8 { .. } => "journal_line_not_utf8",
            Reason::NotAnObject { .. } => "journal_line_not_object",
            Reason::Json { .. } => "journal_line_invalid",
            Reason::MissingField { .. } => "journal_field_missing",
            Reason::InvalidField { .. } => "journal_field_invalid",
        }
    }
}

/// A record that cannot be encoded within [`MAX_LINE_BYTES`] even after cutting its strings.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Still too long after truncation (e.g. thousands of array items).
    #[error("`{kind}` record does not fit in {max} bytes even truncated")]
    TooLarge {
        /// The record's kind.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// serde_json refused the record (a map key that is not a string, say).
    #[error("`{kind}` record cannot be serialized")]
    Serialize {
        /// The record's kind.
        kind: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

impl EncodeError {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            EncodeError::TooLarge { .. } => "journal_record_too_large",
            EncodeError::Serialize { .. } => "journal_record_unserializable",
        }
    }
}

/// A line encoded before its `seq` is known: `bytes[..seq_at]` ends with `"seq":` and
/// `bytes[seq_at..]` starts with `,"service"` and ends with `}\n`.
///
/// The journal writer assigns `seq` under its segment lock, so lines reach the file in `seq`
/// order; everything else is encoded beforehand by the calling thread.
#[derive(Debug, Clone)]
pub struct PendingLine {
    bytes: Vec<u8>,
    seq_at: usize,
    kind: &'static str,
    retained: bool,
    critical: bool,
}

impl PendingLine {
    /// Encodes everything but `seq`. Long strings are cut to fit [`MAX_LINE_BYTES`].
    pub fn encode(
        ts: Timestamp,
        boot: &str,
        service: &str,
        record: &Record,
    ) -> Result<PendingLine, EncodeError> {
        let kind = record.kind();
        let mut bytes = Vec::with_capacity(256);
        let seq_at = write_head(&mut bytes, ts, kind, boot);
        let tail_at = write_service(&mut bytes, service, false);
        let ser = |source| EncodeError::Serialize { kind, source };
        record.write_fields(&mut bytes).map_err(ser)?;
        splice_fields(&mut bytes, tail_at);
        if bytes.len() + SEQ_RESERVE > MAX_LINE_BYTES {
            let mut value = record.fields_value().map_err(ser)?;
            let budget = MAX_LINE_BYTES - SEQ_RESERVE;
            for _ in 0..64 {
                if !shrink_largest(&mut value) {
                    break;
                }
                bytes.truncate(seq_at);
                let tail_at = write_service(&mut bytes, service, true);
                serde_json::to_writer(&mut bytes, &value).map_err(ser)?;
                splice_fields(&mut bytes, tail_at);
                if bytes.len() <= budget {
                    break;
                }
            }
            if bytes.len() > budget {
                return Err(EncodeError::TooLarge { kind, max: MAX_LINE_BYTES });
            }
        }
        Ok(PendingLine {
            bytes,
            seq_at,
            kind,
            retained: record.is_retained(),
            critical: record.is_critical(),
        })
    }

    /// The record's kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Whether the writer syncs right after this line.
    pub fn is_critical(&self) -> bool {
        self.critical
    }

    /// Whether this line's segment is kept until drained (`crash`, `panic`, `exit`).
    pub fn is_retained(&self) -> bool {
        self.retained
    }

    /// Length of the finished line for `seq`, newline included.
    pub fn len_with_seq(&self, seq: u64) -> usize {
        self.bytes.len() + decimal_len(seq)
    }

    /// Appends the finished line, with `seq`, to `out`.
    pub fn finish_into(&self, seq: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes[..self.seq_at]);
        write_u64(out, seq);
        out.extend_from_slice(&self.bytes[self.seq_at..]);
    }
}

/// Encodes a whole line (envelope and record), `\n` terminated.
///
/// `envelope.v` and `envelope.truncated` are ignored: the line is written as
/// [`SCHEMA_VERSION`], and `truncated` is set only if this encoding had to cut strings.
pub fn encode(envelope: &Envelope, record: &Record) -> Result<Vec<u8>, EncodeError> {
    let p = PendingLine::encode(envelope.ts, &envelope.boot, &envelope.service, record)?;
    let mut out = Vec::with_capacity(p.len_with_seq(envelope.seq));
    p.finish_into(envelope.seq, &mut out);
    Ok(out)
}

fn write_head(out: &mut Vec<u8>, ts: Timestamp, kind: &str, boot: &str) -> usize {
    out.extend_from_slice(b"{\"v\":");
    write_u64(out, u64::from(SCHEMA_VERSION));
    out.extend_from_slice(b",\"ts\":\"");
    ts.write_rfc3339(out);
    out.extend_from_slice(b"\",\"kind\":");
    write_json_str(out, kind);
    out.extend_from_slice(b",\"boot\":");
    write_json_str(out, boot);
    out.extend_from_slice(b",\"seq\":");
    out.len()
}

/// Writes `,"service":"…"[,"truncated":true]` and returns where the kind fields start.
fn write_service(out: &mut Vec<u8>, service: &str, truncated: bool) -> usize {
    out.extend_from_slice(b",\"service\":");
    write_json_str(out, service);
    if truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.len()
}

/// `out[at..]` holds a JSON object `{…}` of kind fields: turn it into `,…}` (or just `}`) so
/// the fields continue the envelope's object, then end the line.
fn splice_fields(out: &mut Vec<u8>, at: usize) {
    if out.len() == at + 2 {
        out.truncate(at);
        out.push(b'}');
    } else {
        out[at] = b',';
    }
    out.push(b'\n');
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn decimal_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Halves the longest string (or the longest array) in `value`. Returns false when nothing
/// is left to shrink.
fn shrink_largest(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    fn weight(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(weight).sum::<usize>() + a.len(),
            Value::Object(o) => o.values().map(weight).sum(),
            _ => 0,
        }
    }
    match value {
        Value::String(s) if s.len() > 16 => {
            let mut cut = s.len() / 2;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            true
        }
        Value::Array(a) => {
            let own = a.len();
            let heaviest = a.iter().map(weight).max().unwrap_or(0);
            if own > 1 && own * 8 >= heaviest {
                a.truncate(own / 2);
                return true;
            }
            a.iter_mut().max_by_key(|x| weight(x)).is_some_and(shrink_largest)
        }
        Value::Object(o) => o.values_mut().max_by_key(|x| weight(x)).is_some_and(shrink_largest),
        _ => false,
    }
}

/// The envelope as first read: every field optional, so a missing one gets its own message.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    v: Option<u32>,
    ts: Option<Timestamp>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    boot: Option<Cow<'a, str>>,
    seq: Option<u64>,
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    truncated: Option<bool>,
}

/// Only the version, for telling a newer schema from a broken line.
#[derive(Deserialize)]
struct VersionOnly {
    v: Option<serde_json::Value>,
}

/// Decodes one line (with or without its trailing `\n`). `line_no` is the 1-based line number
/// that errors carry.
///
/// Step one reads the envelope; a newer `v` is [`Decoded::TooNew`] and an unknown `kind` is
/// [`Decoded::UnknownKind`]. Step two decodes the kind's own fields. Unknown fields are
/// ignored everywhere. Never panics, whatever the bytes.
pub fn decode_line(line_no: u64, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let err = |reason| DecodeError { line: line_no, reason };
    if bytes.len() > MAX_LINE_BYTES {
        return Err(err(Reason::TooLong { bytes: bytes.len(), max: MAX_LINE_BYTES }));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| err(Reason::NotUtf8 { offset: e.valid_up_to() }))?;
    let Some(first) = text.trim_start().chars().next() else {
        return Err(err(Reason::Empty));
    };
    if first != '{' {
        return Err(err(Reason::NotAnObject { found: first }));
    }
    let raw: RawEnvelope<'_> = match serde_json::from_slice(bytes) {
        Ok(raw) => raw,
        Err(e) => {
            // A newer version may have changed the envelope itself: never an error.
            if let Some(v) = newer_version(bytes) {
                return Ok(Decoded::TooNew { v });
            }
            return Err(err(explain(bytes, e)));
        }
    };
    let v = raw.v.ok_or(err(Reason::MissingField { field: "v" }))?;
    if v > SCHEMA_VERSION {
        return Ok(Decoded::TooNew { v });
    }
    if v == 0 {
        return Err(err(Reason::InvalidField {
            field: "v".into(),
            message: "version 0 does not exist; v1 is the first".into(),
        }));
    }
    let ts = raw.ts.ok_or(err(Reason::MissingField { field: "ts" }))?;
    let kind = raw.kind.ok_or(err(Reason::MissingField { field: "kind" }))?;
    let boot = raw.boot.ok_or(err(Reason::MissingField { field: "boot" }))?;
    let seq = raw.seq.ok_or(err(Reason::MissingField { field: "seq" }))?;
    let service = raw.service.ok_or(err(Reason::MissingField { field: "service" }))?;
    if boot.is_empty() {
        return Err(err(Reason::InvalidField { field: "boot".into(), message: "empty".into() }));
    }
    let envelope = Envelope {
        v,
        ts,
        boot: boot.into_owned(),
        seq,
        service: service.into_owned(),
        truncated: raw.truncated.unwrap_or(false),
    };
    match Record::decode_fields(&kind, bytes) {
        None => Ok(Decoded::UnknownKind { envelope, kind: kind.into_owned() }),
        Some(Ok(record)) => Ok(Decoded::Record(Line { envelope, record })),
        Some(Err(_)) => {
            // Slow path: decode again, tracking the path, to name the field.
            let reason = match Record::decode_fields_traced(&kind, bytes) {
                Some(Err(e)) => Reason::InvalidField {
                    field: field_path(&kind, &e.path().to_string()),
                    message: e.into_inner().to_string(),
                },
                _ => Reason::InvalidField {
                    field: kind.to_string(),
                    message: "fields do not decode".into(),
                },
            };
            Err(err(reason))
        }
    }
}

fn field_path(kind: &str, path: &str) -> String {
    if path.is_empty() || path == "." { kind.to_string() } else { path.to_string() }
}

/// Turns a failed envelope parse into a reason: broken JSON, or a bad envelope field.
fn explain(bytes: &[u8], e: serde_json::Error) -> Reason {
    if e.is_syntax() || e.is_eof() {
        return Reason::Json { message: e.to_string() };
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, RawEnvelope<'_>>(&mut de) {
        Err(pe) => Reason::InvalidField {
            field: field_path("envelope", &pe.path().to_string()),
            message: pe.into_inner().to_string(),
        },
        Ok(_) => Reason::Json { message: e.to_string() },
    }
}

/// The line's `v` when it is a number newer than [`SCHEMA_VERSION`] (saturating at `u32::MAX`).
fn newer_version(bytes: &[u8]) -> Option<u32> {
    let n = serde_json::from_slice::<VersionOnly>(bytes).ok()?.v?;
    let v = n.as_u64()?;
    (v > u64::from(SCHEMA_VERSION)).then(|| u32::try_from(v).unwrap_or(u32::MAX))
}
