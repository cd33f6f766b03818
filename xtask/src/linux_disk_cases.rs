//! Linux on a disk: an ext4 file system made on the host (`mke2fs -d`, no root rights), turned
//! into a dynamic VHD by the project's converter, mounted by label inside the guest through
//! the face's own disk driver; afterwards the image is read back with QEMU's converter and
//! checked with `e2fsck`, and the file the guest wrote is compared byte for byte.

use crate::util::out_dir;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file system's label: what the guest mounts (`janus.disk=`).
pub const LABEL: &str = "janus-data";
const HELLO_BYTES: usize = 1 << 20;
/// What the guest writes: `janus-disk-line\n` over and over, cut at 4 MiB.
const NEW_BYTES: usize = 4 << 20;
const NEW_LINE: &[u8] = b"janus-disk-line\n";

fn dir() -> PathBuf {
    out_dir().join("linux-disk")
}

/// e2fsprogs lives in /sbin, which a user's PATH often lacks.
fn e2fs(tool: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(tool))
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn hello() -> Vec<u8> {
    (0..HELLO_BYTES)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect()
}

fn expected_new() -> Vec<u8> {
    NEW_LINE.iter().copied().cycle().take(NEW_BYTES).collect()
}

/// The file system's files, a 64 MiB ext4 image of them, its dynamic VHD, and the manifest of
/// a Xen VM (Debian's cloud kernel) with that disk.
pub fn setup_xen() -> Result<()> {
    crate::prereq::tools(&[&crate::prereq::E2FSPROGS])?;
    let d = dir();
    let _ = std::fs::remove_dir_all(&d);
    let files = d.join("files");
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("hello.bin"), hello())?;
    let sum = run(
        Command::new("sha256sum")
            .arg("hello.bin")
            .current_dir(&files),
        "sha256sum",
    )?;
    std::fs::write(files.join("hello.sha256"), sum)?;
    let raw = d.join("fs.raw");
    run(
        Command::new(e2fs("mke2fs"))
            .args(["-q", "-F", "-t", "ext4", "-L", LABEL, "-d"])
            .arg(&files)
            .arg(&raw)
            .arg("64M"),
        "mke2fs",
    )?;
    let vhd = d.join("xen-disk.vhd");
    let mut src = crate::vhd_cli::image::Source::open(&raw).map_err(anyhow::Error::msg)?;
    let size = src.size();
    crate::vhd_cli::image::write_vhd(&mut src, &vhd, vhd::DiskType::Dynamic, size, true)
        .map_err(anyhow::Error::msg)?;
    std::fs::remove_file(&raw)?;
    std::fs::write(
        d.join("xen-disk.toml"),
        format!(
            "# Made by `cargo xtask test` (qemu-svm-xen-linux-disk).\n\
             [[vm]]\nname = \"xen-disk\"\npersonality = \"xen\"\nmemory_mib = 256\nvcpus = 2\n\
             kernel = \"../../../target/linux/vmlinux\"\n\
             initrd = \"../../../target/linux/initramfs.cpio.gz\"\n\
             cmdline = \"console=hvc0 janus.face=xen janus.vcpus=2 janus.clockwait=1 \
             janus.disk={LABEL} quiet panic=-1 nokaslr\"\n\
             [[vm.disk]]\npath = \"xen-disk.vhd\"\n"
        ),
    )?;
    Ok(())
}

/// After the run: QEMU reads the image, e2fsck finds the file system clean, and it holds the
/// file the guest wrote, byte for byte, beside the one it read.
pub fn verify_xen() -> Result<()> {
    let d = dir();
    let vhd = d.join("xen-disk.vhd");
    let raw = d.join("after.raw");
    let _ = std::fs::remove_file(&raw);
    run(
        Command::new(crate::prereq::QEMU_IMG.binary)
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(&vhd)
            .arg(&raw),
        "qemu-img convert",
    )?;
    run(
        Command::new(e2fs("e2fsck")).arg("-fn").arg(&raw),
        "e2fsck -fn (the file system the guest wrote)",
    )?;
    for (name, want) in [("new.bin", expected_new()), ("hello.bin", hello())] {
        let out = d.join(format!("after-{name}"));
        let _ = std::fs::remove_file(&out);
        run(
            Command::new(e2fs("debugfs"))
                .arg("-R")
                .arg(format!("dump /{name} {}", out.display()))
                .arg(&raw),
            "debugfs dump",
        )?;
        let got = std::fs::read(&out)
            .with_context(|| format!("{name} is not on the disk after the run"))?;
        if got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b);
            bail!(
                "{name} on the disk differs from what was written ({} bytes, want {}; first difference at {:?})",
                got.len(),
                want.len(),
                at
            );
        }
    }
    std::fs::remove_file(&raw)?;
    Ok(())
}
