//! `cargo xtask bench exits`: what one exit of each kind costs a guest, in its own TSC cycles.
//! The probe (`probe.bench=N`) times a CPUID exit, an MSR read and a port read the platform
//! answers, each face's null hypercall (Xen `xen_version(0)`, Hyper-V a fast
//! `HvCallNotifyLongSpinWait`), an MMIO read (the Hyper-V face's IOAPIC; the Xen face has no
//! MMIO device), an IPI round trip between its two vCPUs (a fixed IPI to vCPU 1, whose handler
//! answers one back), a Xen event-channel round trip (send to a loopback port until its upcall
//! ran) and a Hyper-V SynIC round trip (a synthetic timer due at once posts its message to a
//! SINT until the probe took the SINT and emptied the slot), on each face under QEMU (SVM) and
//! Bochs (VMX). The CPUID exit in the same run is the baseline: the figure is the null
//! hypercall's cost over it (goal ≤ 1.10).

use crate::emulator::{Emulator, RunSpec};
use crate::image::{self, BuildOpts};
use crate::util::out_dir;
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::time::Duration;

/// Operations per measurement (nine batches; the median batch counts).
const REPS: u32 = 9_000;
const FACES: [(&str, &str); 2] = [("xen", "xen"), ("hyperv", "hyperv")];
const EMULATORS: [(Emulator, &str); 2] =
    [(Emulator::Qemu, "qemu-svm"), (Emulator::Bochs, "bochs-vmx")];
/// Figures every face prints, and each face's own.
const COMMON: [&str; 5] = ["cpuid", "msr", "port", "hypercall", "ipi"];
fn own(face: &str) -> &'static [&'static str] {
    match face {
        "xen" => &["event"],
        "hyperv" => &["mmio", "synic"],
        _ => &[],
    }
}

/// The figures a face should have printed and did not (a round trip the probe gave up on
/// prints none).
fn missing(f: &BTreeMap<String, u64>, face: &str) -> Vec<&'static str> {
    COMMON
        .iter()
        .chain(own(face))
        .copied()
        .filter(|k| !f.contains_key(*k))
        .collect()
}

/// `probe: bench NAME CYCLES` lines of VM `vm`.
fn figures(com1: &str, vm: &str) -> BTreeMap<String, u64> {
    let prefix = format!("[{vm}] probe: bench ");
    com1.lines()
        .filter_map(|l| {
            let mut w = l.trim_end().strip_prefix(&prefix)?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

pub fn bench() -> Result<bool> {
    let images = image::build(&BuildOpts {
        release: true,
        ..Default::default()
    })?;
    image::build_guest("probe", true)?;
    let dir = out_dir().join("bench-exits");
    std::fs::create_dir_all(&dir)?;
    let mut worst: f64 = 0.0;
    let mut complete = true;
    for (emulator, ename) in EMULATORS {
        for (face, personality) in FACES {
            let vm = format!("bench-{face}");
            let manifest = dir.join(format!("{face}.toml"));
            std::fs::write(
                &manifest,
                format!(
                    "[[vm]]\nname = \"{vm}\"\npersonality = \"{personality}\"\nmemory_mib = 32\n\
                     vcpus = 2\nkernel = \"../guests/probe\"\n\
                     cmdline = \"probe.face={face} probe.bench={REPS}\"\n"
                ),
            )?;
            let staged = crate::manifest::load(&manifest, &dir.join(format!("stage-{face}")))?;
            let spec = RunSpec {
                timeout: Duration::from_secs(600),
                ..RunSpec::staged(&images, &staged)
            };
            let outcome = staged.disks.run(emulator, spec)?;
            if let Err(why) = &outcome.verdict {
                bail!("{ename} {face}: the probe's run failed: {why}");
            }
            let f = figures(&outcome.com1, &vm);
            let (Some(&cpuid), Some(&call)) = (f.get("cpuid"), f.get("hypercall")) else {
                bail!("{ename} {face}: the probe printed no cpuid/hypercall figures: {f:?}");
            };
            let row: Vec<String> = f.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "exits {ename} {face} (guest TSC cycles): {}",
                row.join(", ")
            );
            let gone = missing(&f, face);
            if !gone.is_empty() {
                println!("exits {ename} {face}: no figure for {}", gone.join(", "));
                complete = false;
            }
            let ratio = call as f64 / cpuid.max(1) as f64;
            println!("exits {ename} {face} hypercall/cpuid: {ratio:.2}");
            worst = worst.max(ratio);
        }
    }
    println!("exits hypercall/cpuid: {worst:.2}");
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_the_vms_own_lines() {
        let com1 = "[bench-xen] probe: bench cpuid 1200\n\
                    [bench-xen] probe: bench hypercall 1300\r\n\
                    [other] probe: bench cpuid 1\n\
                    [bench-xen] probe: bench broken x\n";
        let f = figures(com1, "bench-xen");
        assert_eq!(f.len(), 2);
        assert_eq!(f["cpuid"], 1200);
        assert_eq!(f["hypercall"], 1300);
    }

    #[test]
    fn each_face_owes_its_round_trips() {
        let line = |k: &str| format!("[bench-hyperv] probe: bench {k} 10\n");
        let all: String = ["cpuid", "msr", "port", "hypercall", "ipi", "mmio", "synic"]
            .map(line)
            .concat();
        assert!(missing(&figures(&all, "bench-hyperv"), "hyperv").is_empty());
        assert_eq!(missing(&figures(&all, "bench-hyperv"), "xen"), ["event"]);
        let lost = all.replace("bench synic 10", "bench synic-lost 3");
        assert_eq!(
            missing(&figures(&lost, "bench-hyperv"), "hyperv"),
            ["synic"]
        );
    }
}
