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

pub struct RunSpec {
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
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: Result<(), String>,
    pub com1: String,
    /// COM1 split into lines stamped with their arrival time on the host.
    pub lines: Vec<crate::linux_guest::TimedLine>,
    pub defmt: Vec<String>,
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
pub fn run(emulator: Emulator, spec: &RunSpec) -> anyhow::Result<Outcome> {
    match emulator {
        Emulator::Qemu => qemu::run(spec),
        Emulator::Bochs | Emulator::BochsSvm => bochs::run(emulator, spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_needs_both_the_exit_device_and_the_completion_line() {
        assert!(judge(Ok(()), "banner\njanus: done\n").is_ok());
        assert!(judge(Ok(()), "banner\r\njanus: done\r\n").is_ok());
        assert!(judge(Ok(()), "banner\n").is_err());
        assert!(judge(Err("status 35".into()), "janus: done\n").is_err());
    }
}
