//! `cargo xtask bench boot`: Debian's kernel booted to its initramfs marker under Janus, on
//! each face, against the same kernel and initramfs booted directly by QEMU — all in one
//! invocation on this machine, medians of a few runs, plus the VM exits per boot by reason.

use crate::emulator::{self, Emulator, RunSpec};
use crate::image::{self, BuildOpts};
use crate::linux_guest::{self, DirectBoot, Entry, MARKER};
use crate::manifest;
use crate::util::{out_dir, root};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::time::Duration;

const RUNS: usize = 5;
const VCPUS: u8 = 2;
const MEMORY_MIB: u32 = 256;
const TIMEOUT: Duration = Duration::from_secs(300);

struct Face {
    name: &'static str,
    manifest: &'static str,
    vm: &'static str,
    direct: Entry,
}

const FACES: [Face; 2] = [
    Face {
        name: "xen",
        manifest: "manifests/xen-linux.toml",
        vm: "xen-linux",
        direct: Entry::Pvh,
    },
    Face {
        name: "hyperv",
        manifest: "manifests/hyperv-linux.toml",
        vm: "hyperv-linux",
        direct: Entry::Bzimage,
    },
];

/// One face's medians, in seconds from QEMU's start (guest: from the VM's start) to the marker.
struct Medians {
    direct: f64,
    janus: f64,
    guest: f64,
}

impl Medians {
    /// Janus's time over the direct QEMU boot of the same image.
    fn overhead(&self) -> f64 {
        self.janus / self.direct
    }
}

/// The same kernel boots through a different door on each face: PVH takes the 53 MB vmlinux
/// as it is, the Linux boot protocol a 14 MB bzImage that decompresses itself, and the direct
/// QEMU boots show that difference as much as Janus does. So the faces are compared three
/// ways: end to end, from each VM's first instruction to the marker, and on Janus's overhead
/// over the direct boot of the same image (the figure that says whether one face costs more).
fn face_comparison(xen: &Medians, hyperv: &Medians) -> [String; 3] {
    [
        format!(
            "boot personalities xen/hyperv, end to end: {:.3} (direct QEMU: {:.3})",
            xen.janus / hyperv.janus,
            xen.direct / hyperv.direct
        ),
        format!(
            "boot personalities xen/hyperv, guest start to marker: {:.3}",
            xen.guest / hyperv.guest
        ),
        format!(
            "boot personalities xen/hyperv, overhead over direct: {:.3}",
            xen.overhead() / hyperv.overhead()
        ),
    ]
}

/// The runs in order, so that a median can be read with its spread.
fn samples(v: &[f64]) -> String {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.iter()
        .map(|x| format!("{x:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The "vm NAME: N exits:" block the hypervisor prints when a VM ends.
fn exits_by_reason(com1: &str, vm: &str) -> BTreeMap<String, u64> {
    let head = format!("vm {vm}: ");
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in com1.lines() {
        let line = line.trim_end();
        if line.starts_with(&head) && line.ends_with(" exits:") {
            inside = true;
            continue;
        }
        if inside {
            let mut words = line.split_whitespace();
            match (
                line.starts_with("  "),
                words.next(),
                words.next(),
                words.next(),
            ) {
                (true, Some(kind), Some(n), None) if n.parse::<u64>().is_ok() => {
                    out.insert(kind.to_string(), n.parse().unwrap_or(0));
                }
                _ => inside = false,
            }
        }
    }
    out
}

pub fn bench() -> Result<bool> {
    let guest = linux_guest::prepare()?;
    let images = image::build(&BuildOpts {
        release: true,
        ..Default::default()
    })?;
    let mut faces = Vec::new();
    for face in &FACES {
        let mut direct = Vec::new();
        for _ in 0..RUNS {
            let opts = DirectBoot {
                entry: face.direct,
                ..DirectBoot::pvh(VCPUS, MEMORY_MIB, TIMEOUT)
            };
            let report = linux_guest::direct_boot(&guest, &opts)?;
            let t = report
                .time_to_marker()
                .context("the direct boot never reached the marker")?;
            direct.push(t.as_secs_f64());
        }
        let stage = out_dir().join("bench-stage").join(face.name);
        let staged = manifest::load(&root().join(face.manifest), &stage)?;
        let mut janus = Vec::new();
        let mut setup = Vec::new();
        let mut from_banner = Vec::new();
        let mut guest = Vec::new();
        let mut exits = BTreeMap::new();
        for _ in 0..RUNS {
            let spec = RunSpec {
                timeout: TIMEOUT,
                ..RunSpec::staged(&images, &staged)
            };
            let outcome = emulator::run(Emulator::Qemu, spec)?;
            if let Err(why) = &outcome.verdict {
                bail!("{} under Janus: {why}", face.vm);
            }
            let prefix = format!("[{}] ", face.vm);
            let Some(at) = outcome
                .lines
                .iter()
                .find(|l| l.text.starts_with(&prefix) && l.text.trim_end().ends_with(MARKER))
                .map(|l| l.at)
            else {
                let tail: Vec<&str> = outcome.com1.lines().rev().take(15).collect();
                bail!(
                    "{} never printed its marker; COM1 ended with:\n{}",
                    face.vm,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            };
            janus.push(at.as_secs_f64());
            // Where Janus's own share ends: the VMs are built and about to run.
            if let Some(start) = outcome
                .lines
                .iter()
                .find(|l| l.text.starts_with("janus: running"))
            {
                setup.push(start.at.as_secs_f64());
                guest.push((at - start.at).as_secs_f64());
            }
            if let Some(&ns) = outcome.numbers("vms-start-after-banner").first() {
                from_banner.push(ns as f64 / 1e9);
            }
            exits = exits_by_reason(&outcome.com1, face.vm);
        }
        println!(
            "boot {} samples: direct {}; Janus {}; guest start to marker {}",
            face.name,
            samples(&direct),
            samples(&janus),
            samples(&guest)
        );
        let (s, g) = if setup.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (median(setup), median(guest))
        };
        let m = Medians {
            direct: median(direct),
            janus: median(janus),
            guest: g,
        };
        println!(
            "boot {}: direct QEMU {:.3} s, Janus {:.3} s (VMs built after {s:.3} s, guest \
             start to marker {g:.3} s; medians of {RUNS})",
            face.name, m.direct, m.janus
        );
        let total: u64 = exits.values().sum();
        let by_reason: Vec<String> = exits.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "boot {} exits per boot: {total} ({})",
            face.name,
            by_reason.join(", ")
        );
        if !from_banner.is_empty() {
            println!(
                "boot {}: VMs start {:.3} s after the banner (the hypervisor's clock; samples {})",
                face.name,
                median(from_banner.clone()),
                samples(&from_banner)
            );
        }
        println!("boot janus/direct {}: {:.3}", face.name, m.overhead());
        faces.push(m);
    }
    for line in face_comparison(&faces[0], &faces[1]) {
        println!("{line}");
    }
    let worst = faces.iter().map(Medians::overhead).fold(0.0, f64::max);
    println!("boot janus/direct: {worst:.3}");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_tables_are_read_per_vm() {
        let com1 = "vm a: stopped: powered off\nvm a: 12 exits:\n  io             10\n  hlt            2\n  vcpu 0: ran 5 us; rip 0x1\nvm b: 3 exits:\n  cpuid 3\n";
        let a = exits_by_reason(com1, "a");
        assert_eq!(a.get("io"), Some(&10));
        assert_eq!(a.get("hlt"), Some(&2));
        assert_eq!(a.len(), 2);
        let b = exits_by_reason(com1, "b");
        assert_eq!(b.get("cpuid"), Some(&3));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(samples(&[2.5, 1.0, 1.25]), "1.000 1.250 2.500");
    }

    /// Equal overheads make the faces equal even when their images boot at different speeds.
    #[test]
    fn faces_compare_on_overhead() {
        let xen = Medians {
            direct: 1.8,
            janus: 2.7,
            guest: 1.5,
        };
        let hyperv = Medians {
            direct: 2.0,
            janus: 3.0,
            guest: 2.0,
        };
        let [end, guest, overhead] = face_comparison(&xen, &hyperv);
        assert_eq!(
            end,
            "boot personalities xen/hyperv, end to end: 0.900 (direct QEMU: 0.900)"
        );
        assert!(guest.ends_with(": 0.750"), "{guest}");
        assert!(
            overhead.ends_with("overhead over direct: 1.000"),
            "{overhead}"
        );
    }
}
