//! Reading a journal stream line by line, with line numbers, byte offsets and torn tails.

use std::io::{self, BufRead};

use crate::codec::{DecodeError, Decoded, MAX_LINE_BYTES, decode_line};

/// One line read from a stream.
#[derive(Debug)]
pub struct ReadLine {
    /// 1-based line number.
    pub line_no: u64,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// What the line held.
    pub outcome: Outcome,
}

/// What a line held.
#[derive(Debug)]
// Not boxed: a decoded line is moved once, and a box would cost the collector an
// allocation per line on its hot path.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// A record, an unknown kind or a newer version.
    Decoded(Decoded),
    /// A complete line that does not decode.
    Invalid(DecodeError),
    /// The last bytes of the stream with no `\n`: a writer is mid-line or was killed there.
    /// Not an error; read it again later.
    Incomplete {
        /// Bytes of the partial line.
        bytes: usize,
    },
}

/// Iterates the lines of a journal stream. Lines longer than [`MAX_LINE_BYTES`] are reported
/// as invalid without being held in memory whole.
pub struct Lines<R> {
    reader: R,
    line_no: u64,
    offset: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Lines<R> {
    /// Reads `reader` from its current position, which is taken as offset 0 and line 1.
    pub fn new(reader: R) -> Self {
        Lines { reader, line_no: 0, offset: 0, buf: Vec::with_capacity(512), done: false }
    }

    /// Starts numbering at `line_no` + 1 and `offset` (resuming from a checkpoint).
    pub fn starting_at(reader: R, line_no: u64, offset: u64) -> Self {
        Lines { reader, line_no, offset, buf: Vec::with_capacity(512), done: false }
    }

    fn next_line(&mut self) -> io::Result<Option<ReadLine>> {
        self.buf.clear();
        let start = self.offset;
        let mut total = 0usize;
        let mut complete = false;
        loop {
            let avail = self.reader.fill_buf()?;
            if avail.is_empty() {
                break;
            }
            let (take, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            if self.buf.len() < MAX_LINE_BYTES + 1 {
                let room = (MAX_LINE_BYTES + 1 - self.buf.len()).min(take);
                self.buf.extend_from_slice(&avail[..room]);
            }
            self.reader.consume(take);
            total += take;
            if found {
                complete = true;
                break;
            }
        }
        if total == 0 {
            return Ok(None);
        }
        self.offset += total as u64;
        self.line_no += 1;
        let outcome = if !complete {
            self.done = true;
            Outcome::Incomplete { bytes: total }
        } else if total > MAX_LINE_BYTES {
            Outcome::Invalid(DecodeError {
                line: self.line_no,
                reason: crate::codec::Reason::TooLong { bytes: total, max: MAX_LINE_BYTES },
            })
        } else {
            match decode_line(self.line_no, &self.buf) {
                Ok(d) => Outcome::Decoded(d),
                Err(e) => Outcome::Invalid(e),
            }
        };
        Ok(Some(ReadLine { line_no: self.line_no, offset: start, outcome }))
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = io::Result<ReadLine>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.next_line().transpose()
    }
}
