//! Running a staged Janus boot under an emulator, with one pass/fail contract for all:
//! the hypervisor's exit device says pass AND COM1 holds the completion line.

pub mod bochs;
pub mod qemu;

use crate::defmt_rx::Lines;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// COM1's line when the hypervisor finished everything it was asked to run.
pub const COMPLETION_LINE: &str = "janus: done";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emulator {
    /// QEMU TCG, `-cpu max`: AMD SVM with nested paging.
    Qemu,
    /// Bochs `corei7_skylake_x` from a GRUB ISO: Intel VMX with EPT.
    Bochs,
    /// Bochs `ryzen` from a GRUB ISO: AMD SVM with NRIP save.
    BochsSvm,
}

/// A file attached as an NVMe namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub file: PathBuf,
    pub read_only: bool,
}

impl From<PathBuf> for Namespace {
    fn from(file: PathBuf) -> Self {
        Namespace {
            file,
            read_only: false,
        }
    }
}

/// How the emulator gets Janus into memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// The emulator's own multiboot loader (QEMU `-kernel`, Bochs through a GRUB ISO), with
    /// the files and command line of the spec.
    Loader,
    /// QEMU's own iPXE over user-net TFTP from a directory `cargo xtask pxe` staged: what a
    /// lab machine does. The spec's files name the same images for decoding; the boot
    /// script in the directory carries the command line.
    Pxe(PathBuf),
}

pub struct RunSpec {
    pub via: Via,
    pub boot: PathBuf,
    pub kernel: PathBuf,
    /// (file, module name) after the kernel, in order.
    pub modules: Vec<(PathBuf, String)>,
    pub cmdline: String,
    pub timeout: Duration,
    pub memory_mib: u64,
    pub cpus: u8,
    /// Echo COM1 and decoded defmt frames while running.
    pub echo: bool,
    /// Raw files that become the namespaces (1, 2, …) of one NVMe controller (QEMU only).
    /// Files attached as the namespaces of one NVMe controller (QEMU), nsid 1 first.
    pub nvme: Vec<Namespace>,
    /// What is typed on the hypervisor's console (COM1).
    pub input: Input,
}

impl RunSpec {
    /// A run of `staged`'s VMs on `images` through the emulator's loader: a machine with
    /// 512 MiB for the hypervisor beside the guests' RAM and a pCPU per vCPU (at least two),
    /// no command line, 300 s, quiet, no host NVMe disks, nobody typing. Callers change what
    /// differs with struct update syntax.
    pub fn staged(images: &crate::image::Images, staged: &crate::manifest::Staged) -> Self {
        RunSpec {
            via: Via::Loader,
            boot: images.boot.clone(),
            kernel: images.kernel.clone(),
            modules: staged.modules.clone(),
            cmdline: String::new(),
            timeout: Duration::from_secs(300),
            memory_mib: 512 + staged.guest_memory_mib,
            cpus: 2.max(staged.max_vcpus),
            echo: false,
            nvme: Vec::new(),
            input: Input::None,
        }
    }
}

/// Who types on the hypervisor's console (QEMU only; Bochs runs get nothing typed).
#[derive(Default)]
pub enum Input {
    /// Nobody: the emulator's standard input is empty.
    #[default]
    None,
    /// The terminal xtask runs in, which QEMU's stdio backend takes over in raw mode.
    Terminal,
    /// A program that reads COM1 as it arrives and answers with keys.
    Typist(Box<dyn Typist>),
}

/// Reads the hypervisor's console and types into it.
pub trait Typist: Send {
    /// COM1 bytes that just arrived; returns the keys to type now (empty: none).
    fn seen(&mut self, com1: &[u8]) -> Vec<u8>;
}

/// The least share of one pCPU a VM must get while it and one other VM both want it: round
/// robin gives each about half (see the README's Security section for what is measured).
pub const FAIR_SHARE_OF_TWO: f64 = 0.40;

/// A VM's time on pCPUs, summed over its vCPUs (the hypervisor's `sched::account`), in µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmCpu {
    /// On a pCPU, in guest mode or handling its exits.
    pub run_us: u64,
    /// The part of `run_us` in turns begun with another vCPU ready on the same pCPU.
    pub contended_us: u64,
    /// Runnable while another vCPU had its pCPU.
    pub waited_us: u64,
}

impl VmCpu {
    /// Time it wanted a pCPU another vCPU wanted too.
    pub fn contending_us(&self) -> u64 {
        self.contended_us.saturating_add(self.waited_us)
    }

    /// The share of that time it ran (0.0..=1.0), if it ever contended.
    pub fn share(&self) -> Option<f64> {
        let total = self.contending_us();
        (total > 0).then(|| self.contended_us as f64 / total as f64)
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: Result<(), String>,
    /// The emulator was stopped at the run's time limit.
    pub timed_out: bool,
    pub com1: String,
    /// COM1 split into lines stamped with their arrival time on the host.
    pub lines: Vec<crate::linux_guest::TimedLine>,
    pub defmt: Vec<String>,
}

/// `cargo xtask run`'s exit codes (README "Commands"); 1 and 2 are xtask's own errors and
/// usage errors. When several apply, the first in this order wins.
pub mod exit_code {
    pub const PASS: u8 = 0;
    /// The hypervisor failed: a panic, a host exception, or no completion line.
    pub const HYPERVISOR: u8 = 7;
    /// The run reached its time limit.
    pub const TIMEOUT: u8 = 6;
    /// A VM triple-faulted.
    pub const TRIPLE_FAULT: u8 = 4;
    /// A VM's guest reported a crash (a kernel panic, through its ABI).
    pub const CRASH: u8 = 3;
    /// A VM stopped on an error the hypervisor could not continue from, or never booted.
    pub const VM_ERROR: u8 = 5;
}

/// A record the hypervisor writes on the log channel (defmt on COM2), which no guest can
/// write: `info <tag> <words...>`.
fn records<'a>(defmt: &'a [String], tag: &'a str) -> impl Iterator<Item = Vec<&'a str>> + 'a {
    defmt.iter().filter_map(move |l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("info") && w.next() == Some(tag)).then(|| w.collect())
    })
}

impl Outcome {
    /// How each VM ended, in the order they ended: (VM, class) from `vm-end` records.
    pub fn vm_ends(&self) -> Vec<(String, String)> {
        records(&self.defmt, "vm-end")
            .filter_map(|w| Some((w.first()?.to_string(), w.get(1)?.to_string())))
            .collect()
    }

    /// The numbers of a record the hypervisor writes with one number (e.g. `disk-flushed N`).
    pub fn numbers(&self, tag: &str) -> Vec<u64> {
        records(&self.defmt, tag)
            .filter_map(|w| w.first()?.parse().ok())
            .collect()
    }

    /// Each VM's time on pCPUs as the hypervisor measured it, from `vm-cpu` records.
    pub fn cpu_times(&self) -> Vec<(String, VmCpu)> {
        records(&self.defmt, "vm-cpu")
            .filter_map(|w| {
                let n = |i: usize| w.get(i)?.parse().ok();
                let t = VmCpu {
                    run_us: n(1)?,
                    contended_us: n(2)?,
                    waited_us: n(3)?,
                };
                Some((w.first()?.to_string(), t))
            })
            .collect()
    }

    /// VMs that started over, and after what: `vm-restart` records.
    pub fn vm_restarts(&self) -> Vec<(String, String)> {
        records(&self.defmt, "vm-restart")
            .filter_map(|w| Some((w.first()?.to_string(), w.get(1)?.to_string())))
            .collect()
    }

    /// The hypervisor's stamps of each VM's console lines: VM -> [(line number, host ns)].
    pub fn console_stamps(&self) -> std::collections::HashMap<String, Vec<(u32, u64)>> {
        let mut m: std::collections::HashMap<String, Vec<(u32, u64)>> = Default::default();
        for w in records(&self.defmt, "con") {
            if let (Some(vm), Some(Ok(n)), Some(Ok(ns))) = (
                w.first(),
                w.get(1).map(|s| s.parse()),
                w.get(2).map(|s| s.parse()),
            ) {
                m.entry(vm.to_string()).or_default().push((n, ns));
            }
        }
        m
    }

    pub fn exit_code(&self) -> u8 {
        if self.verdict.is_ok() {
            return exit_code::PASS;
        }
        if self.timed_out {
            return exit_code::TIMEOUT;
        }
        let completed = self.com1.lines().any(|l| l.trim_end() == COMPLETION_LINE);
        let ends = self.vm_ends();
        let any = |class: &str| ends.iter().any(|(_, c)| c == class);
        if !completed {
            exit_code::HYPERVISOR
        } else if any("triple-fault") {
            exit_code::TRIPLE_FAULT
        } else if any("crash") {
            exit_code::CRASH
        } else if any("error") || any("boot-failure") {
            exit_code::VM_ERROR
        } else {
            exit_code::HYPERVISOR
        }
    }
}

pub fn new_lines() -> Lines {
    Arc::new(Mutex::new(Vec::new()))
}

/// Applies the contract to what the emulator reported.
pub fn judge(exit_said_pass: Result<(), String>, com1: &str) -> Result<(), String> {
    exit_said_pass?;
    if com1.lines().any(|l| l.trim_end() == COMPLETION_LINE) {
        Ok(())
    } else {
        Err(format!(
            "the exit device said pass but COM1 lacks '{COMPLETION_LINE}'"
        ))
    }
}

/// Runs `spec` under `emulator`.
pub fn run(emulator: Emulator, spec: RunSpec) -> anyhow::Result<Outcome> {
    match emulator {
        Emulator::Qemu => qemu::run(spec),
        Emulator::Bochs | Emulator::BochsSvm => bochs::run(emulator, &spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(verdict: Result<(), String>, com1: &str, defmt: &[&str]) -> Outcome {
        Outcome {
            verdict,
            timed_out: false,
            com1: com1.into(),
            lines: Vec::new(),
            defmt: defmt.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn exit_codes_come_from_the_hypervisors_records() {
        let done = "vm a: stopped: guest crash 0x0\njanus: done\n";
        let fail = || Err("the hypervisor reported failure".to_string());
        assert_eq!(outcome(Ok(()), done, &[]).exit_code(), 0);
        let crash = outcome(
            fail(),
            done,
            &["info vm-end a crash", "info vm-end b poweroff"],
        );
        assert_eq!(crash.exit_code(), exit_code::CRASH);
        assert_eq!(
            crash.vm_ends(),
            [
                ("a".into(), "crash".into()),
                ("b".into(), "poweroff".into())
            ]
        );
        let tf = outcome(
            fail(),
            done,
            &["info vm-end a crash", "info vm-end b triple-fault"],
        );
        assert_eq!(tf.exit_code(), exit_code::TRIPLE_FAULT);
        let boot = outcome(fail(), done, &["info vm-end a boot-failure"]);
        assert_eq!(boot.exit_code(), exit_code::VM_ERROR);
        // A guest printing the words on COM1 changes nothing: only the log channel counts.
        let forged = outcome(fail(), "[a] info vm-end a crash\njanus: done\n", &[]);
        assert_eq!(forged.exit_code(), exit_code::HYPERVISOR);
        assert_eq!(outcome(fail(), "janus: PANIC", &[]).exit_code(), 7);
        let mut late = outcome(fail(), "", &[]);
        late.timed_out = true;
        assert_eq!(late.exit_code(), exit_code::TIMEOUT);
    }

    #[test]
    fn cpu_times_come_from_the_log_channel() {
        let o = outcome(
            Ok(()),
            "[a] info vm-cpu a 1 1 1\n",
            &[
                "info vm-cpu a 9000 4000 6000",
                "info vm-cpu b 7",
                "info vm-cpu c 5 0 0",
            ],
        );
        let t = o.cpu_times();
        assert_eq!(
            t.len(),
            2,
            "the guest's line and the short record are not counted"
        );
        assert_eq!(t[0].0, "a");
        assert_eq!(t[0].1.contending_us(), 10_000);
        assert_eq!(t[0].1.share(), Some(0.4));
        assert_eq!(t[1].1.share(), None, "never contended");
    }

    #[test]
    fn console_stamps_are_read_per_vm() {
        let o = outcome(
            Ok(()),
            "",
            &[
                "info con xen 0 100",
                "info con hv 0 150",
                "info con xen 1 200",
                "info con x",
            ],
        );
        let s = o.console_stamps();
        assert_eq!(s["xen"], [(0, 100), (1, 200)]);
        assert_eq!(s["hv"], [(0, 150)]);
    }

    #[test]
    fn a_pass_needs_both_the_exit_device_and_the_completion_line() {
        assert!(judge(Ok(()), "banner\njanus: done\n").is_ok());
        assert!(judge(Ok(()), "banner\r\njanus: done\r\n").is_ok());
        assert!(judge(Ok(()), "banner\n").is_err());
        assert!(judge(Err("status 35".into()), "janus: done\n").is_err());
    }
}
