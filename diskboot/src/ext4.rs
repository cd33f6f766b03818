//! The planner's view of an ext4 filesystem, read with `ext4-view` (read-only, no_std): paths
//! with their links followed, bounded reads of configuration files, the filesystem's UUID.

use crate::plan::FileSystem;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use ext4_view::{Ext4, Ext4Error};

pub struct Ext4Fs(pub Ext4);

impl FileSystem for Ext4Fs {
    fn read(&mut self, path: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
        match self.0.metadata(path) {
            Ok(m) if m.is_dir() => Ok(None),
            Ok(m) if m.len() > max as u64 => Err(format!("{path} is larger than {max} bytes")),
            Ok(_) => self
                .0
                .read(path)
                .map(Some)
                .map_err(|e| format!("{path}: {e}")),
            Err(Ext4Error::NotFound) => Ok(None),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    fn is_file(&mut self, path: &str) -> Result<bool, String> {
        match self.0.metadata(path) {
            Ok(m) => Ok(!m.is_dir()),
            Err(Ext4Error::NotFound) => Ok(false),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    fn uuid(&self) -> [u8; 16] {
        *self.0.uuid().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Face, plan};
    use alloc::boxed::Box;
    use std::process::Command;

    fn next_id() -> usize {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A small ext4 image made by mke2fs from a tree shaped like a Debian system, or `None`
    /// where e2fsprogs is missing.
    fn debian_like() -> Option<Vec<u8>> {
        let dir = std::env::temp_dir().join(format!(
            "diskboot-ext4-{}-{}",
            std::process::id(),
            next_id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join("boot/grub")).ok()?;
        std::fs::write(tree.join("boot/vmlinuz-6.1"), vec![0xaa; 300_000]).ok()?;
        std::fs::write(tree.join("boot/initrd.img-6.1"), vec![0xbb; 100_000]).ok()?;
        std::os::unix::fs::symlink("boot/vmlinuz-6.1", tree.join("vmlinuz")).ok()?;
        std::os::unix::fs::symlink("boot/initrd.img-6.1", tree.join("initrd.img")).ok()?;
        let img = dir.join("fs.img");
        let mke2fs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let ok = Command::new(mke2fs)
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-U",
                "8d2c4f0e-1234-4567-89ab-cdef00010203",
                "-d",
            ])
            .arg(&tree)
            .arg(&img)
            .arg("4M")
            .status()
            .ok()?
            .success();
        let image = ok.then(|| std::fs::read(&img).ok()).flatten();
        let _ = std::fs::remove_dir_all(&dir);
        image
    }

    #[test]
    fn a_debian_like_filesystem_plans_its_links() {
        let Some(image) = debian_like() else {
            eprintln!("no mke2fs: not checked");
            return;
        };
        let mut fs = Ext4Fs(Ext4::load(Box::new(image)).unwrap());
        let p = plan(&mut fs, Face::Xen, "quiet").unwrap();
        assert_eq!(p.kernel, "/vmlinuz");
        assert_eq!(
            p.cmdline,
            "root=UUID=8d2c4f0e-1234-4567-89ab-cdef00010203 ro console=hvc0 quiet"
        );
        assert_eq!(fs.0.read(&p.kernel).unwrap().len(), 300_000);
    }

    /// Damaged filesystems give errors, never a panic: the hypervisor reads whatever a user's
    /// disk holds.
    #[test]
    fn damaged_filesystems_are_errors_not_panics() {
        let Some(image) = debian_like() else {
            eprintln!("no mke2fs: not checked");
            return;
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // The metadata lives in the first 256 KiB of so small a filesystem.
        for _ in 0..3000 {
            let mut bad = image.clone();
            for _ in 0..(next() % 16 + 1) {
                let at = (next() % (256 * 1024)) as usize;
                bad[at] = next() as u8;
            }
            if let Ok(fs) = Ext4::load(Box::new(bad)) {
                let mut fs = Ext4Fs(fs);
                if let Ok(p) = plan(&mut fs, Face::HyperV, "") {
                    let _ = fs.0.read(&p.kernel);
                }
            }
        }
    }
}
