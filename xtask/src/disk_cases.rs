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

/// A dynamic VHD made by QEMU's own tool, the kind of image users bring.
pub fn qemu_img_dynamic(path: &Path, size: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=dynamic",
        &path.display().to_string(),
        size,
    ])
    .map(|_| ())
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
    qemu_img_dynamic(&dynamic, "64M")?;
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
         kernel = \"../guests/probe\"\ncmdline = \"probe.disks=2\"\n\
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

/// Power cuts: the hypervisor writes and flushes round after round (`janus.selftest=
/// disk-stress`) and QEMU is killed at a random moment, `runs` times. Each time the image must
/// check clean, and every sector must hold a round no older than the last flushed round that
/// wrote it (a flushed write is never lost; nothing but whole rounds' writes appears).
pub fn power_cut(images: &crate::image::Images, runs: usize) -> Result<()> {
    use crate::emulator::{Emulator, RunSpec};
    let d = dir().join("power-cut");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |t| t.as_nanos() as u64)
        | 1;
    for run in 0..runs {
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        let image = d.join("stress.vhd");
        // Large enough that every round until the cut allocates a block (the second half
        // holds 1024 of them), so cuts land inside allocations too.
        qemu_img_dynamic(&image, "4G")?;
        let manifest = d.join("stress.toml");
        std::fs::write(
            &manifest,
            "[[vm]]\nname = \"probe\"\npersonality = \"none\"\nmemory_mib = 16\n\
             kernel = \"../../guests/probe\"\n[[vm.disk]]\npath = \"stress.vhd\"\n",
        )?;
        let staged = crate::manifest::load(&manifest, &d.join("stage"))?;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // The hypervisor is up after about half a second; then it flushes a round every few
        // milliseconds.
        let cut = std::time::Duration::from_millis(1200 + seed % 3000);
        let spec = RunSpec {
            cmdline: "janus.selftest=disk-stress".into(),
            timeout: cut,
            ..RunSpec::staged(images, &staged)
        };
        let outcome = staged.disks.run(Emulator::Qemu, spec)?;
        if !outcome.timed_out {
            bail!(
                "run {run}: the stress test ended before the cut: {:?}",
                outcome.verdict
            );
        }
        let flushed = outcome
            .numbers("disk-flushed")
            .into_iter()
            .max()
            .unwrap_or(0) as u32;
        check_layer(&image)?;
        verify_rounds(&image, flushed).with_context(|| format!("run {run}"))?;
        println!(
            "power cut {run}: after {} ms, {flushed} rounds flushed; the image checks clean and holds them",
            cut.as_millis()
        );
    }
    Ok(())
}

/// Rounds past the last one reported flushed that may have reached the image (the report of
/// a flushed round can be lost with the machine).
const ROUNDS_AHEAD: u32 = 4;

fn verify_rounds(image: &Path, flushed: u32) -> Result<()> {
    let mut v =
        vhd::fs::open(image, vhd::OpenOptions::read_only()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sectors = v.size() / SECTOR;
    // Which rounds wrote each sector, up to the last one that may have.
    let mut writers: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
    for r in 1..=flushed + ROUNDS_AHEAD {
        for s in virt::block::stress_sectors(r, sectors) {
            writers.entry(s).or_default().push(r);
        }
    }
    let mut buf = vec![0u8; SECTOR as usize];
    let mut want = vec![0u8; SECTOR as usize];
    for (s, rounds) in writers {
        v.read_at(s * SECTOR, &mut buf)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let floor = rounds.iter().copied().filter(|&r| r <= flushed).max();
        let ok = rounds.iter().any(|&r| {
            floor.is_none_or(|f| r >= f) && {
                test_pattern(r, s, &mut want);
                buf == want
            }
        }) || (floor.is_none() && buf.iter().all(|&b| b == 0));
        if !ok {
            bail!(
                "sector {s}: holds none of the rounds {rounds:?} it may hold ({flushed} flushed)"
            );
        }
    }
    Ok(())
}

/// Three images that xtask checked and that are then damaged before the run (a truncated
/// file, a bad footer checksum, a block table entry past the end), all disks of one VM;
/// a second VM beside it has none.
pub fn setup_bad() -> Result<()> {
    let d = dir().join("bad");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    for name in ["truncated.vhd", "badsum.vhd", "badbat.vhd"] {
        let p = d.join(name);
        vhd::fs::create(
            &p,
            vhd::DiskType::Dynamic,
            16 << 20,
            &vhd::fs::create_options(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut v = vhd::fs::open(&p, vhd::OpenOptions::read_write())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        v.write_at(0, &[0x44; 4096])
            .and_then(|_| v.flush())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    std::fs::write(
        d.join("bad.toml"),
        "# Made by `cargo xtask test` (the disk cases).\n\
         [[vm]]\nname = \"victim\"\npersonality = \"none\"\nmemory_mib = 16\n\
         kernel = \"../../guests/probe\"\n\
         [[vm.disk]]\npath = \"truncated.vhd\"\nread_only = true\n\
         [[vm.disk]]\npath = \"badsum.vhd\"\nread_only = true\n\
         [[vm.disk]]\npath = \"badbat.vhd\"\nread_only = true\n\
         [[vm]]\nname = \"neighbour\"\npersonality = \"none\"\nmemory_mib = 16\n\
         kernel = \"../../guests/probe\"\n",
    )?;
    Ok(())
}

/// Damages the three images after xtask accepted them.
pub fn tamper_bad() -> Result<()> {
    let d = dir().join("bad");
    let t = d.join("truncated.vhd");
    let len = std::fs::metadata(&t)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&t)?
        .set_len(len / 2 / 512 * 512)?;
    let s = d.join("badsum.vhd");
    let mut b = std::fs::read(&s)?;
    let n = b.len();
    // The checksum field of both footer copies.
    for at in [64, n - 512 + 64] {
        b[at] ^= 0xFF;
    }
    std::fs::write(&s, b)?;
    let p = d.join("badbat.vhd");
    let mut b = std::fs::read(&p)?;
    let past = (b.len() as u32 / 512 + 100).to_be_bytes();
    // The first block table entry (the table follows the footer copy and the header).
    b[1536..1540].copy_from_slice(&past);
    std::fs::write(&p, b)?;
    Ok(())
}
