//! Stack signatures already computed: `<crash dir>/signatures.json` (0600, written to a
//! temporary file and renamed), so `dispatchctl crashes` walks each dump once, not on every
//! run. Walking and symbolicating a dump is the slow part (about 0.1 s for the 120 KiB
//! fixture with minidump-stackwalk, more for a server's dump; docs/BENCHMARKS.md).
//!
//! An entry is keyed by the dump's file name, size and modification time, the state of the
//! symbol store ([`symbols_stamp`]: adding symbols for a build changes it) and
//! [`super::signature::RULES_VERSION`]. Only signatures that came from a stack are kept: a
//! dump that gave none is walked again next time, so symbols stored later are used at once. The cache is best effort: one that cannot be read or written
//! is ignored (the crash directory may belong to the server's user).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::signature::RULES_VERSION;

/// File name of the cache in the crash directory.
pub const CACHE_NAME: &str = "signatures.json";

/// What a cached signature depends on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    /// The dump's file name.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// Its modification time, Unix ns.
    pub mtime_ns: i128,
    /// [`symbols_stamp`] of the symbol store.
    pub symbols: String,
    /// The signature rules' version.
    pub rules: u32,
}

impl Key {
    /// The key of the dump at `path` given the symbol store's stamp; `None` when the dump
    /// cannot be stat'ed.
    pub fn of(path: &Path, symbols: &str) -> Option<Key> {
        let m = std::fs::metadata(path).ok()?;
        Some(Key {
            file: path.file_name()?.to_string_lossy().into_owned(),
            bytes: m.len(),
            mtime_ns: m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos() as i128,
            symbols: symbols.to_owned(),
            rules: RULES_VERSION,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct File {
    v: u32,
    entries: Vec<(Key, String)>,
}

/// The cache, loaded once per run.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    path: PathBuf,
    entries: BTreeMap<Key, String>,
    dirty: bool,
}

impl Cache {
    /// Loads `<crash_dir>/signatures.json`; missing or unreadable is empty.
    pub fn load(crash_dir: &Path) -> Cache {
        let path = crash_dir.join(CACHE_NAME);
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<File>(&b).ok())
            .filter(|f| f.v == 1)
            .map(|f| f.entries.into_iter().collect())
            .unwrap_or_default();
        Cache { path, entries, dirty: false }
    }

    /// The signature cached for `key`.
    pub fn get(&self, key: &Key) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Remembers `signature` for `key`, dropping entries of the same file under an older key.
    pub fn put(&mut self, key: Key, signature: String) {
        self.entries.retain(|k, _| k.file != key.file);
        self.entries.insert(key, signature);
        self.dirty = true;
    }

    /// Writes the cache if it changed, keeping only entries whose dump is in `keep` (file
    /// names). Errors are ignored: the cache only saves time.
    pub fn save(mut self, keep: &[String]) {
        if !self.dirty {
            return;
        }
        self.entries.retain(|k, _| keep.contains(&k.file));
        let file = File { v: 1, entries: self.entries.into_iter().collect() };
        let Ok(text) = serde_json::to_vec(&file) else { return };
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// The state of the symbol store at `dir`: how many entries its first three levels hold
/// (`<name>/<debug id>/<file>`) and their newest modification time. Storing a symbol file for
/// any build changes it; a missing store is `"none"`.
pub fn symbols_stamp(dir: &Path) -> String {
    fn walk(dir: &Path, depth: u32, n: &mut u64, newest: &mut u128) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            *n += 1;
            if let Ok(m) = e.metadata() {
                let t = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                *newest = (*newest).max(t.map_or(0, |t| t.as_nanos()));
                if m.is_dir() && depth < 3 {
                    walk(&e.path(), depth + 1, n, newest);
                }
            }
        }
    }
    if !dir.is_dir() {
        return "none".into();
    }
    let (mut n, mut newest) = (0, 0);
    walk(dir, 1, &mut n, &mut newest);
    format!("{n}:{newest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_kept_until_the_dump_or_the_symbols_change() {
        let d = tempfile::tempdir().unwrap();
        let dump = d.path().join("b-1.dmp");
        std::fs::write(&dump, b"MDMP....").unwrap();
        let symbols = d.path().join("symbols");
        let before = symbols_stamp(&symbols);
        assert_eq!(before, "none");
        let key = Key::of(&dump, &before).unwrap();
        let mut c = Cache::load(d.path());
        assert_eq!(c.get(&key), None);
        c.put(key.clone(), "dispatch_server::faults::null_write".into());
        c.save(&["b-1.dmp".into()]);
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(d.path().join(CACHE_NAME)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let c = Cache::load(d.path());
        assert_eq!(c.get(&key), Some("dispatch_server::faults::null_write"));
        // Symbols stored for some build: another stamp, no hit.
        std::fs::create_dir_all(symbols.join("dispatch-server/0123ABCD0")).unwrap();
        let after = symbols_stamp(&symbols);
        assert_ne!(after, before);
        assert_eq!(c.get(&Key::of(&dump, &after).unwrap()), None);
        // The dump rewritten with another size: no hit.
        std::fs::write(&dump, b"MDMP........").unwrap();
        assert_eq!(c.get(&Key::of(&dump, &before).unwrap()), None);
        // Entries of dumps that are gone are dropped on the next save.
        let mut c = Cache::load(d.path());
        c.put(Key::of(&dump, &after).unwrap(), "x".into());
        c.save(&[]);
        assert!(Cache::load(d.path()).entries.is_empty());
    }
}
