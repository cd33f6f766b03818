//! The disk cases of `cargo xtask test`: images made on the host (by `qemu-img` and by the
//! project's own library), a manifest naming them, and afterwards the images read back with
//! independent tools (`qemu-img check` and `convert` for what QEMU reads; the project's reader
//! for differencing chains, which QEMU's `vpc` driver does not follow).

use crate::util::out_dir;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use virt::block::{SECTOR, test_pattern};

fn dir() -> PathBuf {
    out_dir().join("disk-test")
}

/// Sectors `janus.selftest=disk` writes: 128 from sector 2048, and one three from the end.
const RUN_AT: u64 = 2048;
const RUN: u64 = 128;

fn qemu_img(args: &[&str]) -> Result<String> {
    let out = Command::new(crate::prereq::QEMU_IMG.binary)
        .args(args)
        .output()
        .context("cannot run qemu-img")?;
    if !out.status.success() {
        bail!(
            "qemu-img {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A dynamic VHD by `qemu-img`, a base VHD with data in it and a differencing child of it by
/// the project's library, and the manifest of a probe VM with the dynamic image and the child
/// as its disks.
pub fn setup_selftest() -> Result<()> {
    let d = dir();
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    let dynamic = d.join("dynamic.vhd");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=dynamic",
        &dynamic.display().to_string(),
        "64M",
    ])?;
    let base = d.join("base.vhd");
    vhd::fs::create(
        &base,
        vhd::DiskType::Dynamic,
        64 << 20,
        &vhd::fs::create_options(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    {
        let mut v = vhd::fs::open(&base, vhd::OpenOptions::read_write())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        v.write_at(0, &[0x33; 1 << 20])
            .and_then(|_| v.flush())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let child = d.join("child.vhd");
    vhd::fs::create_differencing(&child, &base, None, &vhd::fs::create_options())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(d.join("base.before"), sha(&base)?)?;
    std::fs::write(
        d.join("disks.toml"),
        "# Made by `cargo xtask test` (the disk cases).\n\
         [[vm]]\nname = \"probe\"\npersonality = \"none\"\nmemory_mib = 32\nvcpus = 2\n\
         kernel = \"../guests/probe\"\n\
         [[vm.disk]]\npath = \"dynamic.vhd\"\n\
         [[vm.disk]]\npath = \"child.vhd\"\n",
    )?;
    Ok(())
}

fn expect_pattern(what: &str, data: &[u8], sector: u64) -> Result<()> {
    let mut want = vec![0u8; data.len()];
    test_pattern(0, sector, &mut want);
    if data != want.as_slice() {
        bail!("{what}: sector {sector} does not hold what the hypervisor wrote");
    }
    Ok(())
}

fn check_layer(path: &Path) -> Result<()> {
    let mut l = vhd::fs::open_layer(path, vhd::OpenOptions::read_only())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = l.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    if !r.is_clean() {
        bail!("{}: vhd check: {:?}", path.display(), r.findings);
    }
    Ok(())
}

/// After the run: QEMU's tools (`info`, `convert`) and the project's reader find the pattern,
/// both images check clean with the project's checker, and the parent is unchanged.
pub fn verify_selftest() -> Result<()> {
    let d = dir();
    let dynamic = d.join("dynamic.vhd");
    // QEMU's vpc driver has no `check`; `info` opens and validates the image.
    qemu_img(&["info", "-f", "vpc", &dynamic.display().to_string()])?;
    let raw = d.join("dynamic.raw");
    qemu_img(&[
        "convert",
        "-f",
        "vpc",
        "-O",
        "raw",
        &dynamic.display().to_string(),
        &raw.display().to_string(),
    ])?;
    let bytes = std::fs::read(&raw)?;
    let sectors = bytes.len() as u64 / SECTOR;
    let at = |s: u64, n: u64| &bytes[(s * SECTOR) as usize..((s + n) * SECTOR) as usize];
    expect_pattern("dynamic.vhd (qemu-img convert)", at(RUN_AT, RUN), RUN_AT)?;
    expect_pattern(
        "dynamic.vhd (qemu-img convert)",
        at(sectors - 3, 1),
        sectors - 3,
    )?;
    check_layer(&dynamic)?;
    let child = d.join("child.vhd");
    check_layer(&child)?;
    let mut v =
        vhd::fs::open(&child, vhd::OpenOptions::read_only()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut buf = vec![0u8; (RUN * SECTOR) as usize];
    v.read_at(RUN_AT * SECTOR, &mut buf)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    expect_pattern("child.vhd (project reader)", &buf, RUN_AT)?;
    let mut first = vec![0u8; 512];
    v.read_at(0, &mut first)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if first.iter().any(|&b| b != 0x33) {
        bail!("child.vhd: sector 0 should still come from its parent");
    }
    if sha(&d.join("base.vhd"))? != std::fs::read(d.join("base.before"))? {
        bail!("base.vhd changed: a read-only parent was written");
    }
    Ok(())
}

/// Runs `f` and turns its error into the suite's message.
pub fn step(f: fn() -> Result<()>) -> Result<(), String> {
    f().map_err(|e| format!("{e:#}"))
}
