//! A small tmpfs the test owns, to run a server's data directory out of
//! space or make it read-only without touching the machine's disks.
//!
//! Mounting needs root: where it is not allowed the test is skipped with a
//! loud notice, except under `CI=true`, where it fails
//! ([`super::skip_or_fail`]). The mount is undone when the value is dropped,
//! also when the test panics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A tmpfs mounted on a temporary directory; unmounted when dropped.
pub struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `"1m"`), or says loudly why it cannot
    /// (and fails under `CI=true`).
    pub fn mount_or_skip(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()).output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { dir }),
            Ok(out) => {
                super::skip_or_fail(&format!("cannot mount a tmpfs (this test needs root): {}", String::from_utf8_lossy(&out.stderr).trim()));
                None
            }
            Err(e) => {
                super::skip_or_fail(&format!("cannot run mount: {e}"));
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Takes every free block with a filler file; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open the filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut size = chunk.len();
        // Large writes first, then smaller ones for the last partial blocks.
        while size > 0 {
            match file.write(&chunk[..size]) {
                Ok(0) => size /= 2,
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(28) => size /= 2, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        path
    }

    /// Bytes still free on the filesystem.
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(self.path()).output().expect("df runs");
        String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df's figure")
    }

    /// Remounts it read-only (`true`) or read-write (`false`), in place:
    /// open files stay open and writes to them start failing with EROFS.
    pub fn set_read_only(&self, read_only: bool) {
        let option = if read_only { "remount,ro" } else { "remount,rw" };
        let status = Command::new("mount").args(["-o", option]).arg(self.path()).status().expect("mount runs");
        assert!(status.success(), "mount -o {option} {} failed", self.path().display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy, so a file still open (a failed test's server) cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
