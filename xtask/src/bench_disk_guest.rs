//! The guest half of `cargo xtask bench disk`: Debian's kernel doing direct I/O on a file of an
//! ext4 VHD on each face — through its own xen-blkfront and the hypervisor's blkback on the Xen
//! face, through hv_storvsc and the hypervisor's VMBus storvsc on the Hyper-V face, through
//! Linux's own nvme driver and the hypervisor's emulated NVMe controller on plain emulated
//! hardware (`none`) — against
//! the same kernel and initramfs booted directly by QEMU with a copy of the same VHD on QEMU's
//! NVMe device (`format=vpc`), in one invocation. init.sh (`janus.diskbench=`)
//! brackets each workload with JANUS-BENCH lines; under Janus they are timed by the
//! hypervisor's own stamps of its console lines, under QEMU by their arrival on the host.

use crate::emulator::{Emulator, RunSpec};
use crate::image::{self, BuildOpts};
use crate::linux_guest::{self, DirectBoot};
use crate::util::out_dir;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;

const LABEL: &str = "janus-bench";
const TIMEOUT: Duration = Duration::from_secs(600);

/// (workload, bytes, seconds) from a console's lines, each with its time in seconds.
pub fn workloads<'a>(lines: impl Iterator<Item = (&'a str, f64)>) -> Vec<(String, u64, f64)> {
    let mut begun: Vec<(String, f64)> = Vec::new();
    let mut out = Vec::new();
    for (text, at) in lines {
        let Some(rest) = text.trim_end().split("JANUS-BENCH ").nth(1) else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        match w.as_slice() {
            ["begin", name] => begun.push((name.to_string(), at)),
            ["end", name, bytes] => {
                if let (Some((_, t0)), Ok(bytes)) =
                    (begun.iter().rev().find(|(n, _)| n == name), bytes.parse())
                {
                    out.push((name.to_string(), bytes, at - t0));
                }
            }
            _ => {}
        }
    }
    medians(out)
}

/// One entry per workload, in the order each first ran: the median of its rounds' times (the
/// lower middle one for an even count).
fn medians(rounds: Vec<(String, u64, f64)>) -> Vec<(String, u64, f64)> {
    let mut names: Vec<(String, u64)> = Vec::new();
    for (name, bytes, _) in &rounds {
        if !names.iter().any(|(n, _)| n == name) {
            names.push((name.clone(), *bytes));
        }
    }
    names
        .into_iter()
        .map(|(name, bytes)| {
            let mut secs: Vec<f64> = rounds
                .iter()
                .filter(|(n, b, _)| *n == name && *b == bytes)
                .map(|(_, _, s)| *s)
                .collect();
            secs.sort_by(f64::total_cmp);
            let mid = secs.get((secs.len().saturating_sub(1)) / 2).copied();
            (name, bytes, mid.unwrap_or(f64::NAN))
        })
        .collect()
}

fn fresh_image(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let raw = crate::linux_disk_cases::make_fs(dir, LABEL)?;
    let vhd = dir.join(name);
    crate::linux_disk_cases::raw_to_dynamic(&raw, &vhd)?;
    Ok(vhd)
}

/// The worst ratio of each comparison.
pub struct Figures {
    pub xen_direct: f64,
    pub hyperv_direct: f64,
    pub xen_hyperv: f64,
    /// The enlightened faces against plain emulated hardware: how much an unenlightened guest
    /// loses (below 1: the emulated face is slower).
    pub none_xen: f64,
    pub none_hyperv: f64,
}

/// One face's guest under Janus: its workloads.
fn under_janus(face: &str, dir: &Path) -> Result<Vec<(String, u64, f64)>> {
    let vm = format!("{face}-bench");
    fresh_image(dir, &format!("{face}.vhd"))?;
    let manifest = dir.join(format!("{face}.toml"));
    let (kernel, console) = match face {
        "xen" => ("vmlinux", "hvc0 janus.clockwait=1"),
        _ => ("bzImage", "ttyS0"),
    };
    std::fs::write(
        &manifest,
        format!(
            "[[vm]]\nname = \"{vm}\"\npersonality = \"{face}\"\nmemory_mib = 256\nvcpus = 2\n\
             kernel = \"../../../target/linux/{kernel}\"\n\
             initrd = \"../../../target/linux/initramfs.cpio.gz\"\n\
             cmdline = \"console={console} janus.face={face} janus.vcpus=2 \
             janus.diskbench={LABEL} quiet panic=-1 nokaslr\"\n\
             [[vm.disk]]\npath = \"{face}.vhd\"\n"
        ),
    )?;
    let images = image::build(&BuildOpts {
        release: true,
        ..Default::default()
    })?;
    let staged = crate::manifest::load(&manifest, &dir.join(format!("stage-{face}")))?;
    let spec = RunSpec {
        timeout: TIMEOUT,
        ..RunSpec::staged(&images, &staged)
    };
    let outcome = staged.disks.run(Emulator::Qemu, spec)?;
    if let Err(why) = &outcome.verdict {
        bail!("{vm} under Janus: {why}");
    }
    // The n-th console line of the VM carries the n-th stamp.
    let prefix = format!("[{vm}] ");
    let stamps = outcome.console_stamps();
    let stamps = stamps
        .get(&vm)
        .context("no console stamps from the hypervisor")?;
    let found = workloads(
        outcome
            .com1
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .enumerate()
            .filter_map(|(n, l)| {
                let (_, ns) = stamps.iter().find(|(i, _)| *i as usize == n)?;
                Some((l, *ns as f64 / 1e9))
            }),
    );
    if found.len() < 4 {
        bail!(
            "the {face} guest under Janus finished {} of 4 workloads",
            found.len()
        );
    }
    Ok(found)
}

fn mbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

/// The worst ratio of `a` to `b` over the workloads of `a`, printing each.
fn compare(
    a: &[(String, u64, f64)],
    b: &[(String, u64, f64)],
    (an, bn): (&str, &str),
) -> Result<f64> {
    let mut worst = f64::INFINITY;
    for (name, bytes, secs) in a {
        let Some((_, bbytes, bsecs)) = b.iter().find(|(n, _, _)| n == name) else {
            bail!("{bn} reported no result for {name}");
        };
        let (x, y) = (mbs(*bytes, *secs), mbs(*bbytes, *bsecs));
        worst = worst.min(x / y);
        println!(
            "disk guest {name}: {an} {x:.2} MB/s, {bn} {y:.2} MB/s, {an}/{bn} {:.3}",
            x / y
        );
    }
    Ok(worst)
}

/// Runs the direct boot and both faces, printing a line per workload and comparison.
pub fn bench() -> Result<Figures> {
    crate::prereq::tools(&[&crate::prereq::E2FSPROGS, &crate::prereq::QEMU])?;
    let guest = linux_guest::prepare()?;
    let dir = out_dir().join("bench-disk-guest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    // Directly under QEMU.
    let direct_vhd = fresh_image(&dir, "direct.vhd")?;
    let opts = DirectBoot {
        cmdline_extra: format!("janus.diskbench={LABEL}"),
        qemu_extra: vec![
            "-drive".into(),
            format!(
                "file={},format=vpc,if=none,id=d0,cache=writeback",
                direct_vhd.display()
            ),
            "-device".into(),
            "nvme,serial=bench,drive=d0".into(),
        ],
        clockwait_s: 1,
        ..DirectBoot::pvh(2, 256, TIMEOUT)
    };
    let report = linux_guest::direct_boot(&guest, &opts)?;
    let direct = workloads(
        report
            .lines
            .iter()
            .map(|l| (l.text.as_str(), l.at.as_secs_f64())),
    );

    let xen = under_janus("xen", &dir)?;
    let hyperv = under_janus("hyperv", &dir)?;
    let none = under_janus("none", &dir)?;
    Ok(Figures {
        xen_direct: compare(&xen, &direct, ("xen", "direct"))?,
        hyperv_direct: compare(&hyperv, &direct, ("hyperv", "direct"))?,
        xen_hyperv: compare(&xen, &hyperv, ("xen", "hyperv"))?,
        none_xen: compare(&none, &xen, ("none", "xen"))?,
        none_hyperv: compare(&none, &hyperv, ("none", "hyperv"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_pair_begin_and_end() {
        let lines = [
            ("[vm] JANUS-BENCH begin seq", 1.0),
            ("noise", 1.5),
            ("[vm] JANUS-BENCH end seq 1000", 3.0),
            ("JANUS-BENCH end orphan 5", 4.0),
            ("JANUS-BENCH begin rand", 5.0),
            ("JANUS-BENCH end rand x", 6.0),
        ];
        assert_eq!(
            workloads(lines.into_iter()),
            [("seq".to_string(), 1000, 2.0)]
        );
    }

    #[test]
    fn rounds_of_a_workload_give_their_median() {
        let mut lines = Vec::new();
        let mut t = 0.0;
        for (name, secs) in [("read", 3.0), ("read", 1.0), ("write", 4.0), ("read", 9.0)] {
            lines.push((format!("JANUS-BENCH begin {name}"), t));
            t += secs;
            lines.push((format!("JANUS-BENCH end {name} 100"), t));
        }
        let got = workloads(lines.iter().map(|(l, t)| (l.as_str(), *t)));
        assert_eq!(
            got,
            [
                ("read".to_string(), 100, 3.0),
                ("write".to_string(), 100, 4.0)
            ]
        );
        // An even count takes the lower middle.
        let two = vec![("w".to_string(), 1, 5.0), ("w".to_string(), 1, 2.0)];
        assert_eq!(medians(two), [("w".to_string(), 1, 2.0)]);
    }
}
