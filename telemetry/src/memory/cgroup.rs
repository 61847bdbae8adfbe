//! The process's own cgroup v2 memory files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use dispatch_journal::record::{CgroupEvents, CgroupMemory, Limits};

pub(super) struct CgroupFiles {
    current: File,
    peak: Option<File>,
    high: Option<File>,
    max: Option<File>,
    events: Option<File>,
    buf: Vec<u8>,
}

impl CgroupFiles {
    /// Finds the cgroup2 mount in `/proc/self/mountinfo` and the process's path in
    /// `/proc/self/cgroup` (`0::/path`). `None` when there is no cgroup v2 memory controller
    /// for the process (cgroup v1 hosts, containers without it).
    pub(super) fn discover() -> Option<Self> {
        let dir = cgroup_dir()?;
        Self::open_in(&dir)
    }

    pub(super) fn open_in(dir: &Path) -> Option<Self> {
        let open = |name: &str| File::open(dir.join(name)).ok();
        Some(CgroupFiles {
            current: open("memory.current")?,
            peak: open("memory.peak"),
            high: open("memory.high"),
            max: open("memory.max"),
            events: open("memory.events"),
            buf: vec![0; 1024],
        })
    }

    pub(super) fn read(&mut self) -> Option<CgroupMemory> {
        let buf = &mut self.buf;
        let mut m = CgroupMemory { current: read_u64(&self.current, buf), ..Default::default() };
        m.peak = self.peak.as_ref().and_then(|f| read_u64(f, buf));
        m.high = self.high.as_ref().and_then(|f| read_u64(f, buf));
        m.max = self.max.as_ref().and_then(|f| read_u64(f, buf));
        m.events = self.events.as_ref().and_then(|f| {
            let n = f.read_at(buf, 0).ok()?;
            Some(parse_events(std::str::from_utf8(&buf[..n]).ok()?))
        });
        Some(m)
    }
}

/// A single-number cgroup file; `max` (no limit) reads as absent.
fn read_u64(f: &File, buf: &mut [u8]) -> Option<u64> {
    let n = f.read_at(buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

pub(super) fn parse_events(text: &str) -> CgroupEvents {
    let mut e = CgroupEvents::default();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(k), Some(v)) = (it.next(), it.next().and_then(|v| v.parse().ok())) else {
            continue;
        };
        match k {
            "high" => e.high = Some(v),
            "max" => e.max = Some(v),
            "oom" => e.oom = Some(v),
            "oom_kill" => e.oom_kill = Some(v),
            _ => {}
        }
    }
    e
}

/// `memory.high` and `memory.max` of the process's cgroup v2, each absent when unlimited
/// (`max`) or unreadable; `None` without a cgroup v2 memory controller or when both are absent.
pub fn memory_limits() -> Option<Limits> {
    let dir = cgroup_dir()?;
    let mut buf = [0u8; 64];
    let mut read =
        |name: &str| File::open(dir.join(name)).ok().and_then(|f| read_u64(&f, &mut buf));
    let limits = Limits { memory_high: read("memory.high"), memory_max: read("memory.max") };
    (limits != Limits::default()).then_some(limits)
}

/// The `oom_kill` count of the process's cgroup v2 (`None` without one).
#[cfg(feature = "crash")]
pub(crate) fn oom_kill_count() -> Option<u64> {
    let text = std::fs::read_to_string(cgroup_dir()?.join("memory.events")).ok()?;
    parse_events(&text).oom_kill
}

fn cgroup_dir() -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/');
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        // ... mount_point ... - fstype source options
        let (left, right) = l.split_once(" - ")?;
        if right.split_ascii_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_ascii_whitespace().nth(4).map(PathBuf::from)
    })?;
    Some(mount.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memory_events() {
        let e = parse_events("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
        assert_eq!(
            e,
            CgroupEvents { high: Some(12), max: Some(3), oom: Some(1), oom_kill: Some(1) }
        );
    }

    #[test]
    fn reads_a_cgroup_directory_and_treats_max_as_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "1048576\n").unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("memory.high"), "8388608\n").unwrap();
        std::fs::write(dir.path().join("memory.events"), "high 2\noom_kill 0\n").unwrap();
        let mut c = CgroupFiles::open_in(dir.path()).unwrap();
        let m = c.read().unwrap();
        assert_eq!(m.current, Some(1_048_576));
        assert_eq!(m.max, None);
        assert_eq!(m.high, Some(8_388_608));
        assert_eq!(m.peak, None, "missing file is absent, not 0");
        assert_eq!(m.events.unwrap().high, Some(2));
        assert!(CgroupFiles::open_in(&dir.path().join("nope")).is_none());
    }
}
