//! `cargo xtask bench disk`: raw volume throughput inside the hypervisor (its NVMe driver and
//! VHD volume layer, `janus.selftest=disk-bench`, timed on its own clock) against `qemu-io`
//! doing the same requests on the same kind of image, in one invocation. Both start from a
//! fresh 1 GiB dynamic VHD made by `qemu-img`.
//!
//! The two do not run on equal terms: the hypervisor runs inside QEMU's TCG emulation with an
//! emulated NVMe controller, `qemu-io` natively on the host. The figure says how far the
//! hypervisor's storage path is from QEMU's own VHD driver on this machine.

use crate::emulator::{Emulator, RunSpec};
use crate::image::{self, BuildOpts};
use crate::util::out_dir;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// (name, request bytes, requests, random, write): the hypervisor's `storage::selftest::BENCH`.
const WORKLOADS: [(&str, u64, u32, bool, bool); 4] = [
    ("seq-write-1M", 1 << 20, 64, false, true),
    ("seq-read-1M", 1 << 20, 64, false, false),
    ("rand-write-4K", 4096, 1024, true, true),
    ("rand-read-4K", 4096, 1024, true, false),
];
const SPAN: u64 = 64 << 20;

/// The offsets the hypervisor's benchmark uses (the same generator and seed).
fn offsets(size: u64, count: u32, random: bool, rng: &mut u64) -> Vec<u64> {
    (0..count)
        .map(|i| {
            if random {
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                *rng % (SPAN / size) * size
            } else {
                u64::from(i) * size
            }
        })
        .collect()
}

fn qemu_io(image: &Path, commands: &[String]) -> Result<Duration> {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "vpc", "-t", "writeback"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.arg(image);
    let started = Instant::now();
    let out = cmd.output().context("cannot run qemu-io")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("qemu-io: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

pub fn bench() -> Result<bool> {
    crate::prereq::tools(&[&crate::prereq::QEMU_IMG, &crate::prereq::QEMU])?;
    let dir = out_dir().join("bench-disk");
    std::fs::create_dir_all(&dir)?;
    let images = image::build(&BuildOpts::default())?;
    image::build_guest("probe", false)?;

    // The hypervisor.
    crate::disk_cases::qemu_img_dynamic(&dir.join("janus.vhd"), "1G")?;
    let manifest = dir.join("bench.toml");
    std::fs::write(
        &manifest,
        "[[vm]]\nname = \"probe\"\npersonality = \"none\"\nmemory_mib = 16\n\
         kernel = \"../guests/probe\"\n[[vm.disk]]\npath = \"janus.vhd\"\n",
    )?;
    let staged = crate::manifest::load(&manifest, &dir.join("stage"))?;
    let spec = RunSpec {
        cmdline: "janus.selftest=disk-bench".into(),
        timeout: Duration::from_secs(600),
        ..RunSpec::staged(&images, &staged)
    };
    let outcome = staged.disks.run(Emulator::Qemu, spec)?;
    if let Err(why) = &outcome.verdict {
        bail!("the hypervisor's benchmark run failed: {why}");
    }
    let janus: Vec<(String, u64, u64)> = outcome
        .defmt
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("info") && w.next() == Some("disk-bench")).then_some(())?;
            Some((
                w.next()?.to_string(),
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect();

    // qemu-io: its start-up cost measured alone and taken off each workload.
    let qimage = dir.join("qemu-io.vhd");
    crate::disk_cases::qemu_img_dynamic(&qimage, "1G")?;
    let startup = (0..3)
        .map(|_| qemu_io(&qimage, &["flush".into()]))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .min()
        .unwrap_or_default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut worst = f64::INFINITY;
    for (name, size, count, random, write) in WORKLOADS {
        let mut commands: Vec<String> = offsets(size, count, random, &mut rng)
            .into_iter()
            .map(|at| {
                if write {
                    format!("write -P 0x5a {at} {size}")
                } else {
                    format!("read {at} {size}")
                }
            })
            .collect();
        if write {
            commands.push("flush".into());
        }
        let q = qemu_io(&qimage, &commands)?.saturating_sub(startup);
        let Some((_, bytes, ns)) = janus.iter().find(|(n, _, _)| n == name) else {
            bail!("the hypervisor reported no result for {name}");
        };
        let mbs = |bytes: u64, secs: f64| bytes as f64 / secs.max(1e-9) / 1e6;
        let j = mbs(*bytes, *ns as f64 / 1e9);
        let qm = mbs(size * u64::from(count), q.as_secs_f64());
        let ratio = j / qm;
        worst = worst.min(ratio);
        println!("disk {name}: janus {j:.1} MB/s, qemu-io {qm:.1} MB/s, janus/qemu-io {ratio:.3}");
    }
    println!("disk janus/qemu-io: {worst:.3}");
    // Last, so that its figure ends the output.
    let guest = crate::bench_disk_guest::bench()?;
    println!("disk none/xen: {:.3}", guest.none_xen);
    println!("disk none/hyperv: {:.3}", guest.none_hyperv);
    println!("disk xen/hyperv: {:.3}", guest.xen_hyperv);
    println!("disk hyperv/direct: {:.3}", guest.hyperv_direct);
    println!("disk xen/direct: {:.3}", guest.xen_direct);
    Ok(true)
}
