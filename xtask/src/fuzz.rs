//! `cargo xtask fuzz [TARGET] [--time S]`: the project's libFuzzer targets (cargo-fuzz, on a
//! nightly toolchain), each for a bounded time, through the scripts CI runs, and how many
//! executions each survived. The same fuzz bodies run on stable, seeded, in `cargo xtask test`.

use crate::util::root;
use anyhow::{Context, Result, bail};
use std::process::Command;

/// (name, script, libFuzzer target).
pub const TARGETS: &[(&str, &str, &str)] = &[
    ("vhd", "fuzz/run.sh", "open_read_write"),
    ("xen-dispatch", "abi-xen/fuzz/run.sh", "dispatch"),
    ("xen-xenstore", "abi-xen/fuzz/run.sh", "xenstore"),
    ("xen-blkif", "abi-xen/fuzz/run.sh", "blkif"),
    ("hyperv-dispatch", "abi-hyperv/fuzz/run.sh", "dispatch"),
    ("hyperv-vmbus", "abi-hyperv/fuzz/run.sh", "vmbus"),
    ("kernel-dispatch", "kernel/fuzz/run.sh", "dispatch"),
    ("kernel-devices", "kernel/fuzz/run.sh", "devices"),
    ("virt-decode", "virt/fuzz/run.sh", "decode"),
    ("virt-walk", "virt/fuzz/run.sh", "walk"),
    ("hwemu-nvme", "hwemu/fuzz/run.sh", "nvme"),
];

/// libFuzzer's closing "Done N runs in S second(s)".
pub fn executions(output: &str) -> Option<u64> {
    output.lines().rev().find_map(|l| {
        l.split("Done ")
            .nth(1)?
            .split(" runs")
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

pub fn run(target: Option<&str>, secs: u32) -> Result<bool> {
    let chosen: Vec<_> = TARGETS
        .iter()
        .filter(|(n, ..)| target.is_none_or(|t| t == *n))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
        bail!(
            "no fuzz target '{}'; targets: {}",
            target.unwrap_or(""),
            names.join(", ")
        );
    }
    let mut ok = true;
    for (name, script, inner) in chosen {
        // The vhd script has one target and takes no name.
        let mut cmd = Command::new("sh");
        cmd.arg(root().join(script)).arg(secs.to_string());
        if !script.starts_with("fuzz/") {
            cmd.arg(inner);
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {script}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match (out.status.success(), executions(&text)) {
            (true, Some(n)) => println!("fuzz {name}: {n} executions survived in {secs} s"),
            (true, None) => println!("fuzz {name}: finished (no execution count reported)"),
            (false, _) => {
                ok = false;
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!(
                    "fuzz {name}: FAILED ({})\n{}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
    Ok(ok)
}

/// `cargo xtask fuzz guest --ops N`: the chaos guest (`probe.chaos`) on each face beside a
/// neighbour, under QEMU; the figure is the operations the weaker face survived. The verdict
/// is the hypervisor's: the run completes, both VMs end by powering off, the neighbour passes.
pub fn guest(ops: u64, seed: Option<u64>) -> Result<bool> {
    use crate::emulator::{Emulator, RunSpec};
    let images = crate::image::build(&crate::image::BuildOpts::default())?;
    crate::image::build_guest("probe", false)?;
    let dir = crate::util::out_dir().join("fuzz-guest");
    std::fs::create_dir_all(&dir)?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |t| t.as_nanos() as u64)
    });
    let mut least = u64::MAX;
    let mut ok = true;
    for face in ["xen", "hyperv"] {
        let manifest = dir.join(format!("chaos-{face}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[[vm]]\nname = \"chaos\"\npersonality = \"{face}\"\nmemory_mib = 32\nvcpus = 1\n\
                 kernel = \"../guests/probe\"\ncmdline = \"probe.face={face} probe.chaos={seed},{ops}\"\n\
                 [[vm]]\nname = \"neighbour\"\npersonality = \"none\"\nmemory_mib = 16\nvcpus = 1\n\
                 kernel = \"../guests/probe\"\ncmdline = \"probe.spin=2500\"\n"
            ),
        )?;
        let staged = crate::manifest::load(&manifest, &dir.join(format!("stage-{face}")))?;
        let spec = RunSpec {
            // Both VMs on one pCPU, so that the chaos VM competes with its neighbour for it.
            cmdline: "janus.nosmp".into(),
            // About 10^4 operations a second under QEMU, and room for a slow machine.
            timeout: std::time::Duration::from_secs(120 + ops / 250),
            ..RunSpec::staged(&images, &staged)
        };
        let outcome = crate::emulator::run(Emulator::Qemu, spec)?;
        let survived = outcome
            .com1
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("[chaos] probe: chaos: ")?;
                rest.split(' ').next()?.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0);
        let ends = outcome.vm_ends();
        let ended = |vm: &str| {
            ends.iter()
                .find(|(n, _)| n == vm)
                .map_or("none", |(_, c)| c.as_str())
                .to_string()
        };
        let neighbour_ok = outcome
            .com1
            .lines()
            .any(|l| l.starts_with("[neighbour] probe: verdict: PASS"));
        // The neighbour's share of the pCPU while both wanted it, as the hypervisor measured.
        let share = outcome
            .cpu_times()
            .into_iter()
            .find(|(vm, _)| vm == "neighbour")
            .and_then(|(_, t)| t.share());
        let good = outcome.verdict.is_ok()
            && ended("chaos") == "poweroff"
            && ended("neighbour") == "poweroff"
            && neighbour_ok
            && survived == ops
            && share.is_some_and(|s| s >= crate::emulator::FAIR_SHARE_OF_TWO);
        println!(
            "guest fuzz {face}: seed {seed}, {survived} of {ops} ops; chaos ended {}, neighbour ended {} with {} of the shared pCPU{}",
            ended("chaos"),
            ended("neighbour"),
            share.map_or("none".into(), |s| format!("{:.1}%", s * 100.0)),
            if good { "" } else { " — FAILED" }
        );
        if !good {
            ok = false;
            if let Err(why) = &outcome.verdict {
                eprintln!("guest fuzz {face}: {why}");
            }
        }
        least = least.min(survived);
    }
    println!("guest fuzz ops survived: {least}");
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_execution_count_is_read_from_libfuzzer() {
        let out = "#2 INITED\n#1000 pulse\nDone 123456 runs in 31 second(s)\n";
        assert_eq!(executions(out), Some(123456));
        assert_eq!(executions("crash"), None);
    }

    #[test]
    fn every_target_has_its_script() {
        for (name, script, inner) in TARGETS {
            let text = std::fs::read_to_string(root().join(script)).unwrap();
            assert!(
                script.starts_with("fuzz/") || text.contains("[TARGET]") || *inner == "dispatch",
                "{name}: {script} takes no target name"
            );
        }
    }
}
