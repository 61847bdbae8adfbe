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

/// An ext4 filesystem in a loop-mounted image with `errors=remount-ro`, so the test can make
/// the kernel turn it read-only under a writer that holds files open (a plain `remount,ro` is
/// refused with EBUSY while any file is open for writing). Unmounted when dropped.
pub struct Ext4 {
    /// The mount point.
    pub at: PathBuf,
    device: String,
    image: PathBuf,
}

impl Ext4 {
    /// Makes a `size` (`16M`) ext4 image beside `at` and mounts it at `at`.
    pub fn mount(at: &Path, size: &str) -> Ext4 {
        std::fs::create_dir_all(at).unwrap();
        let image = at.with_extension("ext4.img");
        run("truncate", &["-s", size, image.to_str().unwrap()]);
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        run(
            "mount",
            &["-o", "loop,errors=remount-ro", image.to_str().unwrap(), at.to_str().unwrap()],
        );
        let out = Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(at).output().unwrap();
        let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(device.starts_with("/dev/loop"), "{} is mounted from {device:?}", at.display());
        std::fs::set_permissions(at, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Ext4 { at: at.to_path_buf(), device, image }
    }

    /// An ext4 error, as a failing disk raises one: the kernel aborts the filesystem's journal
    /// and remounts it read-only; every later write, also to files already open, is EROFS.
    pub fn fail_read_only(&self) {
        let dev = self.device.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "dispatch test\n").unwrap();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "this test makes and mounts an ext4 image (it needs root and loop devices, as CI has): \
         {program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
