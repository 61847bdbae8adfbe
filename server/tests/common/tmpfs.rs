//! A real filesystem that fills up: a tmpfs mounted by a test (CI runs as root here; a test
//! that cannot mount fails, it never skips). Shared by the disk-full tests of the server and,
//! through `#[path]`, of the journal writer.

#![allow(dead_code)] // each test binary uses what it needs

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size at a path, unmounted when dropped (also when the test panics).
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`64k`, `2m`) at `at`, mode 0700.
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs to fill it (it needs root, as CI has): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Fills the filesystem but for nothing: `file` grows 4 KiB at a time, then a byte at a
    /// time, until a write fails.
    pub fn fill(&self, file: &str) -> PathBuf {
        use std::io::Write;
        let path = self.0.join(file);
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..1]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a writer's io thread may still hold a file open for a moment.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
