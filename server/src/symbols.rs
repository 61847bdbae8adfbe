//! Self-registration in the symbol store: when `DISPATCH_SYMBOL_STORE` is set, the server
//! copies its own executable to `<store>/<name>/<DEBUG ID>/<name>` (Breakpad's layout, see
//! `dispatch_journal::symbols`), so a post-mortem of this exact build finds its symbols by the
//! dump's debug id even after the binary on disk was replaced. `dispatchctl symbols` turns the
//! copy into a `.sym` on first use: the server links no symbol converter.
//!
//! The copy runs on its own thread (`dispatch-symbols`), never delays the start and never
//! takes the server down: the outcome is one `symbols.stored` journal record, and a failure
//! is also a warning on stderr. Directories are created 0700, the copy 0600, written under a
//! temporary name and renamed, so the store never holds half a binary. A build that is
//! already there (its copy or its `.sym`) is not copied again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dispatch_journal::Record;
use dispatch_journal::record::SymbolsStored;
use dispatch_journal::symbols as layout;
use dispatch_telemetry::journal::Journal;

/// The running executable, readable even when the file on disk was replaced or deleted.
const SELF_EXE: &str = "/proc/self/exe";

/// Starts the `dispatch-symbols` thread that copies the executable into `store` and journals
/// the outcome. A thread that cannot be started is a warning, not an error.
pub fn start(store: PathBuf, journal: Journal) {
    let spawned = std::thread::Builder::new().name("dispatch-symbols".into()).spawn(move || {
        let record = copy_self(&store);
        if let Some(error) = &record.error {
            eprintln!(
                "dispatch-server: WARNING: symbol store: {error}; a post-mortem of this build \
                 needs `dispatchctl symbols add` of this binary"
            );
        }
        journal.emit(Record::SymbolsStored(record));
    });
    if let Err(e) = spawned {
        eprintln!("dispatch-server: WARNING: symbol store: starting its thread: {e}");
    }
}

/// Copies the running executable into `store` (see the module docs) and says what happened.
pub fn copy_self(store: &Path) -> SymbolsStored {
    let started = Instant::now();
    let mut record = SymbolsStored::default();
    let outcome = copy_into(store, Path::new(SELF_EXE), &mut record);
    record.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    match outcome {
        Ok(copied) => record.outcome = Some(if copied { "copied" } else { "present" }.to_owned()),
        Err(e) => {
            record.outcome = Some("failed".to_owned());
            record.error = Some(e);
        }
    }
    record
}

/// Copies `exe` (the running executable's `/proc` link) into `store`; `Ok(false)` when this
/// build is already there. Errors are messages naming the path.
fn copy_into(store: &Path, exe: &Path, record: &mut SymbolsStored) -> Result<bool, String> {
    let target = std::fs::read_link(exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
    let name = layout::code_file_name(&target.to_string_lossy()).to_owned();
    if !layout::is_file_name(&name) {
        return Err(format!("{}: no usable file name", target.display()));
    }
    let build_id = dispatch_telemetry::build_id::build_id(exe).ok_or_else(|| {
        format!("{}: no GNU build-id note: nothing to key it by", target.display())
    })?;
    let debug_id = layout::debug_id_from_build_id(&build_id)
        .ok_or_else(|| format!("{}: build-id {build_id} gives no debug id", target.display()))?;
    let dest = layout::binary_path(store, &name, &debug_id);
    record.build_id = Some(build_id.clone());
    record.debug_id = Some(debug_id.clone());
    record.path = Some(dest.display().to_string());
    let present = layout::sym_path(store, &name, &debug_id).is_file()
        || dispatch_telemetry::build_id::build_id(&dest).as_deref() == Some(build_id.as_str());
    if present {
        record.bytes = std::fs::metadata(exe).ok().map(|m| m.len());
        return Ok(false);
    }
    let dir = layout::module_dir(store, &name, &debug_id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let temp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = write_copy(exe, &temp).and_then(|bytes| {
        std::fs::rename(&temp, &dest)
            .map_err(|e| format!("renaming {} to {}: {e}", temp.display(), dest.display()))?;
        Ok(bytes)
    });
    match result {
        Ok(bytes) => {
            record.bytes = Some(bytes);
            // Best effort: the rename survives a power cut once the directory is synced.
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(true)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Copies `exe` to the new file `temp` (0600), synced; returns its size.
fn write_copy(exe: &Path, temp: &Path) -> Result<u64, String> {
    let mut src = File::open(exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(|e| format!("creating {}: {e}", temp.display()))?;
    let bytes = std::io::copy(&mut src, &mut out)
        .map_err(|e| format!("copying {} to {}: {e}", exe.display(), temp.display()))?;
    out.flush()
        .and_then(|()| out.sync_all())
        .map_err(|e| format!("syncing {}: {e}", temp.display()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_once_then_finds_it_present() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store");
        let first = copy_self(&store);
        assert_eq!(first.outcome.as_deref(), Some("copied"), "{first:?}");
        let path = PathBuf::from(first.path.clone().unwrap());
        assert_eq!(
            dispatch_telemetry::build_id::build_id(&path),
            dispatch_telemetry::build_id::current_build_id()
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let second = copy_self(&store);
        assert_eq!(second.outcome.as_deref(), Some("present"), "{second:?}");
        assert_eq!(second.path, first.path);
    }

    #[test]
    fn a_store_that_cannot_be_made_is_a_failure_record_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let r = copy_self(&file);
        assert_eq!(r.outcome.as_deref(), Some("failed"));
        let error = r.error.unwrap();
        assert!(error.starts_with(&format!("creating {}/", file.display())), "{error}");
    }
}
