//! Linux on its disks: ext4 file systems made on the host (`mke2fs -d`, no root rights), turned
//! into VHDs by the project's converter (a dynamic image, and a differencing child over a
//! parent the manifest cannot write), mounted by label inside the guest through the face's own
//! disk driver. Afterwards each image is read back (the dynamic one by QEMU's converter, the
//! child by the project's reader, as QEMU cannot follow chains) and checked with `e2fsck`, the
//! file the guest wrote is compared byte for byte, and the parent must be unchanged.

use crate::util::out_dir;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file systems' labels: what the guest mounts (`janus.disk=`).
pub const LABEL: &str = "janus-data";
pub const CHILD_LABEL: &str = "janus-child";
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

/// A 64 MiB ext4 file system labelled `label` holding hello.bin and its checksum, as raw.
pub fn make_fs(d: &Path, label: &str) -> Result<PathBuf> {
    let files = d.join(format!("files-{label}"));
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("hello.bin"), hello())?;
    let sum = run(
        Command::new("sha256sum")
            .arg("hello.bin")
            .current_dir(&files),
        "sha256sum",
    )?;
    std::fs::write(files.join("hello.sha256"), sum)?;
    let raw = d.join(format!("{label}.raw"));
    run(
        Command::new(e2fs("mke2fs"))
            .args(["-q", "-F", "-t", "ext4", "-L", label, "-d"])
            .arg(&files)
            .arg(&raw)
            .arg("64M"),
        "mke2fs",
    )?;
    Ok(raw)
}

pub fn raw_to_dynamic(raw: &Path, vhd: &Path) -> Result<()> {
    let mut src = crate::vhd_cli::image::Source::open(raw).map_err(anyhow::Error::msg)?;
    let size = src.size();
    crate::vhd_cli::image::write_vhd(&mut src, vhd, vhd::DiskType::Dynamic, size, true)
        .map_err(anyhow::Error::msg)?;
    std::fs::remove_file(raw)?;
    Ok(())
}

/// The two images and the manifest of a Xen VM (Debian's cloud kernel) with them: xvda a
/// dynamic VHD, xvdb a differencing VHD whose parent (another file system) stays read-only.
pub fn setup_xen() -> Result<()> {
    crate::prereq::tools(&[&crate::prereq::E2FSPROGS])?;
    let d = dir();
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    raw_to_dynamic(&make_fs(&d, LABEL)?, &d.join("xen-disk.vhd"))?;
    let parent = d.join("parent.vhd");
    raw_to_dynamic(&make_fs(&d, CHILD_LABEL)?, &parent)?;
    vhd::fs::create_differencing(
        &d.join("child.vhd"),
        &parent,
        None,
        &vhd::fs::create_options(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(d.join("parent.before"), std::fs::read(&parent)?)?;
    std::fs::write(
        d.join("xen-disk.toml"),
        format!(
            "# Made by `cargo xtask test` (qemu-svm-xen-linux-disk).\n\
             [[vm]]\nname = \"xen-disk\"\npersonality = \"xen\"\nmemory_mib = 256\nvcpus = 2\n\
             kernel = \"../../../target/linux/vmlinux\"\n\
             initrd = \"../../../target/linux/initramfs.cpio.gz\"\n\
             cmdline = \"console=hvc0 janus.face=xen janus.vcpus=2 janus.clockwait=1 \
             janus.disk={LABEL},{CHILD_LABEL} quiet panic=-1 nokaslr\"\n\
             [[vm.disk]]\npath = \"xen-disk.vhd\"\n\
             [[vm.disk]]\npath = \"child.vhd\"\n"
        ),
    )?;
    Ok(())
}

/// e2fsck finds the file system in `raw` clean, and it holds the file the guest wrote beside
/// the one it read, byte for byte.
fn check_fs(raw: &Path, what: &str) -> Result<()> {
    run(
        Command::new(e2fs("e2fsck")).arg("-fn").arg(raw),
        &format!("e2fsck -fn ({what})"),
    )?;
    for (name, want) in [("new.bin", expected_new()), ("hello.bin", hello())] {
        let out = raw.with_extension(name);
        let _ = std::fs::remove_file(&out);
        run(
            Command::new(e2fs("debugfs"))
                .arg("-R")
                .arg(format!("dump /{name} {}", out.display()))
                .arg(raw),
            "debugfs dump",
        )?;
        let got = std::fs::read(&out)
            .with_context(|| format!("{what}: {name} is not on the disk after the run"))?;
        if got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b);
            bail!(
                "{what}: {name} differs from what was written ({} bytes, want {}; first difference at {:?})",
                got.len(),
                want.len(),
                at
            );
        }
        std::fs::remove_file(&out)?;
    }
    std::fs::remove_file(raw)?;
    Ok(())
}

/// After the run: the dynamic image through QEMU's converter, the child through the project's
/// reader; both file systems clean and holding the guest's file; the parent unchanged.
pub fn verify_xen() -> Result<()> {
    let d = dir();
    let raw = d.join("after-dynamic.raw");
    let _ = std::fs::remove_file(&raw);
    run(
        Command::new(crate::prereq::QEMU_IMG.binary)
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(d.join("xen-disk.vhd"))
            .arg(&raw),
        "qemu-img convert",
    )?;
    check_fs(&raw, "xen-disk.vhd")?;
    let child = d.join("child.vhd");
    let raw = d.join("after-child.raw");
    let mut src = crate::vhd_cli::image::Source::open(&child).map_err(anyhow::Error::msg)?;
    crate::vhd_cli::image::write_raw(&mut src, &raw).map_err(anyhow::Error::msg)?;
    check_fs(&raw, "child.vhd")?;
    if std::fs::read(d.join("parent.vhd"))? != std::fs::read(d.join("parent.before"))? {
        bail!("parent.vhd changed: a read-only parent was written");
    }
    Ok(())
}
