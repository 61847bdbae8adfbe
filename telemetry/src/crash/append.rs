//! Appending records to a dead child's journal, under the child's boot and continuing its
//! `seq`, so one boot's story is in one place.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use dispatch_journal::record::{MemorySample, SegmentHeader};
use dispatch_journal::{Decoded, Envelope, Record, SegmentName, Timestamp, decode_line, encode};

use crate::journal::list_segment_names;

/// The child's journal as the monitor finds it after the child is gone.
pub(crate) struct BootJournal {
    dir: PathBuf,
    service: String,
    boot: String,
    /// The boot's newest segment, if it wrote any.
    segment: Option<SegmentName>,
}

/// What the boot's last segments say about its final moments.
#[derive(Debug, Default)]
pub(crate) struct BootTail {
    pub(crate) last_sample: Option<MemorySample>,
    /// Conversations with a `turn.start` and no `turn.end`, in start order.
    pub(crate) active_conversations: Vec<String>,
}

/// Segments read back for [`BootTail`]: enough for every in-flight turn in practice, bounded
/// so a crash report never waits on gigabytes of journal.
const TAIL_SEGMENTS: usize = 4;

impl BootJournal {
    pub(crate) fn find(dir: &Path, service: &str, boot: &str) -> Self {
        let mut segment = None;
        if let Ok(names) = list_segment_names(dir, service) {
            for name in names.into_iter().rev() {
                if header_boot(&dir.join(name.file_name())).as_deref() == Some(boot) {
                    segment = Some(name);
                    break;
                }
            }
        }
        BootJournal { dir: dir.to_path_buf(), service: service.into(), boot: boot.into(), segment }
    }

    /// Reads the boot's last segments for the last memory sample and the turns in flight.
    pub(crate) fn tail(&self) -> BootTail {
        let mut tail = BootTail::default();
        let Ok(names) = list_segment_names(&self.dir, &self.service) else { return tail };
        let ours: Vec<SegmentName> = names
            .into_iter()
            .rev()
            .filter(|n| header_boot(&self.dir.join(n.file_name())).as_deref() == Some(&self.boot))
            .take(TAIL_SEGMENTS)
            .collect();
        let mut open: Vec<(String, String)> = Vec::new();
        for name in ours.iter().rev() {
            let Ok(data) = std::fs::read(self.dir.join(name.file_name())) else { continue };
            for (i, line) in data.split(|&b| b == b'\n').enumerate() {
                let Ok(Decoded::Record(l)) = decode_line(i as u64 + 1, line) else { continue };
                match l.record {
                    Record::MemorySample(s) => tail.last_sample = Some(s),
                    Record::TurnStart(t) => {
                        if let (Some(c), Some(t)) = (t.conversation, t.turn) {
                            open.push((c, t));
                        }
                    }
                    Record::TurnEnd(t) => {
                        if let Some(turn) = t.turn {
                            open.retain(|(_, x)| *x != turn);
                        }
                    }
                    _ => {}
                }
            }
        }
        for (c, _) in open {
            if !tail.active_conversations.contains(&c) {
                tail.active_conversations.push(c);
            }
        }
        tail
    }

    /// Appends `records` to the boot's newest segment (a new segment if it never wrote one),
    /// syncs it, and marks the segment kept. A torn last line is first ended with `\n` (the
    /// collector quarantines it) and its `seq` is skipped, never reused.
    pub(crate) fn append(&mut self, records: &[Record]) -> io::Result<PathBuf> {
        let (mut file, name, mut seq) = match &self.segment {
            Some(name) => {
                let path = self.dir.join(name.file_name());
                let mut file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)?;
                let (last_seq, torn) = last_seq(&mut file)?;
                if torn {
                    file.write_all(b"\n")?;
                }
                let next = match last_seq {
                    Some(s) => s + if torn { 2 } else { 1 },
                    None => u64::from(torn),
                };
                (file, name.clone(), next)
            }
            None => {
                let number = list_segment_names(&self.dir, &self.service)?
                    .last()
                    .map_or(0, |n| n.segment + 1);
                let name = SegmentName::new(self.service.clone(), number);
                let path = self.dir.join(name.file_name());
                std::fs::create_dir_all(&self.dir)?;
                let mut file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                let header = Record::SegmentHeader(SegmentHeader {
                    segment: number,
                    created: Some(Timestamp::now()),
                    pid: Some(std::process::id()),
                    writer: Some(
                        concat!("dispatch-telemetry crash monitor ", env!("CARGO_PKG_VERSION"))
                            .into(),
                    ),
                });
                file.write_all(&self.encode(0, &header)?)?;
                self.segment = Some(name.clone());
                (file, name, 1)
            }
        };
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&self.encode(seq, r)?);
            seq += 1;
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        let keep = self.dir.join(name.keep_marker());
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(keep)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(self.dir.join(name.file_name()))
    }

    fn encode(&self, seq: u64, record: &Record) -> io::Result<Vec<u8>> {
        let env = Envelope {
            v: dispatch_journal::SCHEMA_VERSION,
            ts: Timestamp::now(),
            boot: self.boot.clone(),
            seq,
            service: self.service.clone(),
            truncated: false,
        };
        encode(&env, record).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }
}

/// The boot id in a segment's header line.
fn header_boot(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = f.read(&mut buf).ok()?;
    let end = buf[..n].iter().position(|&b| b == b'\n')?;
    match decode_line(1, &buf[..end]) {
        Ok(Decoded::Record(l)) => Some(l.envelope.boot),
        _ => None,
    }
}

/// The `seq` of the file's last complete line, and whether a partial line follows it.
fn last_seq(file: &mut File) -> io::Result<(Option<u64>, bool)> {
    let len = file.seek(SeekFrom::End(0))?;
    let window = len.min(2 * dispatch_journal::MAX_LINE_BYTES as u64 + 2);
    file.seek(SeekFrom::Start(len - window))?;
    let mut buf = Vec::with_capacity(window as usize);
    file.read_to_end(&mut buf)?;
    let torn = !buf.is_empty() && buf.last() != Some(&b'\n');
    let complete = match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => &buf[..i],
        None => return Ok((None, torn)),
    };
    let last_line = match complete.iter().rposition(|&b| b == b'\n') {
        Some(i) => &complete[i + 1..],
        None => complete,
    };
    let seq = match decode_line(1, last_line) {
        Ok(Decoded::Record(l)) => Some(l.envelope.seq),
        Ok(Decoded::UnknownKind { envelope, .. }) => Some(envelope.seq),
        _ => None,
    };
    Ok((seq, torn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalBuilder;
    use dispatch_journal::record::{Exit, TurnEnd, TurnStart};
    use std::time::Duration;

    #[test]
    fn continues_the_boots_seq_and_skips_a_torn_line() {
        let d = tempfile::tempdir().unwrap();
        let j = JournalBuilder::new(d.path()).service("m").open().unwrap();
        let boot = j.boot().to_string();
        for (c, t) in [("c1", "t1"), ("c2", "t2"), ("c3", "t3")] {
            j.emit(Record::TurnStart(TurnStart {
                conversation: Some(c.into()),
                turn: Some(t.into()),
                ..Default::default()
            }));
        }
        j.emit(Record::TurnEnd(TurnEnd { turn: Some("t2".into()), ..Default::default() }));
        j.emit(Record::MemorySample(MemorySample { rss: Some(42), ..Default::default() }));
        assert!(j.flush(Duration::from_secs(10)));
        let path = j.current_segment_path().unwrap();
        drop(j);
        // A torn line, as a kill mid-write leaves it.
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"v\":1,\"ts\"").unwrap();

        let mut bj = BootJournal::find(d.path(), "m", &boot);
        let tail = bj.tail();
        assert_eq!(tail.last_sample.unwrap().rss, Some(42));
        assert_eq!(tail.active_conversations, vec!["c1".to_string(), "c3".to_string()]);
        bj.append(&[Record::Exit(Exit { status: Some(3), ..Default::default() })]).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[lines.len() - 2], "{\"v\":1,\"ts\"", "torn line ended, not glued");
        let Ok(Decoded::Record(exit)) = decode_line(1, lines.last().unwrap().as_bytes()) else {
            panic!()
        };
        assert_eq!(exit.envelope.boot, boot);
        // header 0, three starts 1-3, end 4, sample 5, torn 6 (skipped), exit 7.
        assert_eq!(exit.envelope.seq, 7);
        let name = SegmentName::parse(path.file_name().unwrap().to_str().unwrap()).unwrap();
        assert!(d.path().join(name.keep_marker()).exists());
    }

    #[test]
    fn a_boot_without_a_segment_gets_one() {
        let d = tempfile::tempdir().unwrap();
        let mut bj = BootJournal::find(d.path(), "m", "boot-x");
        let path =
            bj.append(&[Record::Exit(Exit { status: Some(1), ..Default::default() })]).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("\"kind\":\"journal.segment\"") && lines[0].contains("\"seq\":0")
        );
        assert!(lines[1].contains("\"kind\":\"exit\"") && lines[1].contains("\"seq\":1"));
    }
}
