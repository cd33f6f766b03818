//! The guest half of `cargo xtask bench disk`: Debian's kernel on the Xen face doing direct
//! I/O on a file of an ext4 VHD through its own xen-blkfront and the hypervisor's blkback,
//! against the same kernel and initramfs booted directly by QEMU with a copy of the same VHD
//! on QEMU's NVMe device (`format=vpc`), in one invocation. init.sh (`janus.diskbench=`)
//! brackets each workload with JANUS-BENCH lines; under Janus they are timed by the
//! hypervisor's own stamps of its console lines, under QEMU by their arrival on the host.

use crate::emulator::{self, Emulator, RunSpec};
use crate::image::{self, BuildOpts};
use crate::linux_guest::{self, DirectBoot};
use crate::util::out_dir;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;

const LABEL: &str = "janus-bench";
const VM: &str = "xen-bench";
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
    out
}

fn fresh_image(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let raw = crate::linux_disk_cases::make_fs(dir, LABEL)?;
    let vhd = dir.join(name);
    crate::linux_disk_cases::raw_to_dynamic(&raw, &vhd)?;
    Ok(vhd)
}

/// Runs both sides and prints a line per workload; the worst Janus/direct ratio.
pub fn bench() -> Result<f64> {
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

    // Under Janus, on the Xen face.
    let vhd = fresh_image(&dir, "janus.vhd")?;
    let manifest = dir.join("bench.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[vm]]\nname = \"{VM}\"\npersonality = \"xen\"\nmemory_mib = 256\nvcpus = 2\n\
             kernel = \"../../../target/linux/vmlinux\"\n\
             initrd = \"../../../target/linux/initramfs.cpio.gz\"\n\
             cmdline = \"console=hvc0 janus.face=xen janus.vcpus=2 janus.clockwait=1 \
             janus.diskbench={LABEL} quiet panic=-1 nokaslr\"\n\
             [[vm.disk]]\npath = \"{}\"\n",
            vhd.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("janus.vhd")
        ),
    )?;
    let images = image::build(&BuildOpts {
        release: true,
        ..Default::default()
    })?;
    let staged = crate::manifest::load(&manifest, &dir.join("stage"))?;
    let spec = RunSpec {
        via: emulator::Via::Loader,
        boot: images.boot,
        kernel: images.kernel,
        modules: staged.modules.clone(),
        cmdline: String::new(),
        timeout: TIMEOUT,
        memory_mib: 512 + staged.guest_memory_mib,
        cpus: 2,
        echo: false,
        nvme: Vec::new(),
    };
    let outcome = staged.disks.run(Emulator::Qemu, spec)?;
    if let Err(why) = &outcome.verdict {
        bail!("{VM} under Janus: {why}");
    }
    // The n-th console line of the VM carries the n-th stamp.
    let prefix = format!("[{VM}] ");
    let stamps = outcome.console_stamps();
    let stamps = stamps
        .get(VM)
        .context("no console stamps from the hypervisor")?;
    let janus = workloads(
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

    let mut worst = f64::INFINITY;
    for (name, bytes, secs) in &janus {
        let Some((_, dbytes, dsecs)) = direct.iter().find(|(n, _, _)| n == name) else {
            bail!("the direct boot reported no result for {name}");
        };
        let mbs = |b: u64, s: f64| b as f64 / s.max(1e-9) / 1e6;
        let (j, d) = (mbs(*bytes, *secs), mbs(*dbytes, *dsecs));
        worst = worst.min(j / d);
        println!(
            "disk guest {name}: xen {j:.2} MB/s, direct {d:.2} MB/s, xen/direct {:.3}",
            j / d
        );
    }
    if janus.len() < 4 {
        bail!(
            "the guest under Janus finished {} of 4 workloads",
            janus.len()
        );
    }
    Ok(worst)
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
}
