//! Shared helpers for the host tests: scratch directories, a seeded PRNG, and access to
//! qemu-img/qemu-io (a hard requirement: a missing tool fails the test, it never skips).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vhd-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: deterministic test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn tool(name: &str) -> Command {
    let found = Command::new(name).arg("--version").output();
    match found {
        Ok(o) if o.status.success() => Command::new(name),
        _ => panic!(
            "{name} is required for the VHD interop tests but was not found or does not run; \
             install it (Debian/Ubuntu: apt-get install qemu-utils)"
        ),
    }
}

/// Runs a qemu tool, panicking with its output on failure.
pub fn qemu(name: &str, args: &[&str]) -> Output {
    let out = tool(name).args(args).output().expect("spawn qemu tool");
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a qemu tool and returns its exit code.
pub fn qemu_status(name: &str, args: &[&str]) -> (i32, String) {
    let out = tool(name).args(args).output().expect("spawn qemu tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Reads a whole image through the library.
pub fn read_all(path: &Path) -> Vec<u8> {
    let mut v = vhd::fs::open(path, vhd::OpenOptions::read_only())
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; v.size() as usize];
    v.read_at(0, &mut buf).expect("read image");
    buf
}

/// Index and value of the first differing byte.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    if a.len() != b.len() {
        return Some((a.len().min(b.len()), 0, 0));
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .map(|i| (i, a[i], b[i]))
}
