//! The probe guest: a tiny PVH kernel that exercises the machine Janus presents to a VM and
//! reports each check by name on its UART, then a verdict, then powers the VM off.
//!
//! Command line words (PVH `hvm_start_info`): `probe.spin=MS` makes every vCPU count for
//! MS milliseconds and report its counter (scheduler fairness); `probe.triple_fault` ends the
//! VM with a triple fault after the checks instead of powering off; `probe.reboot_once`
//! resets the VM after the checks unless a mark in CMOS RAM says it did so already;
//! `probe.face=xen` or
//! `probe.face=hyperv` adds the checks of that hypervisor ABI; `probe.flood=N` prints N lines
//! first; `probe.chaos=SEED,OPS` is a hostile guest instead of the checks (see `chaos`);
//! `probe.disks=N` says how many disks the manifest gives the VM (the Hyper-V face's VMBus
//! offers one SCSI controller each); `probe.bench=N` times each kind of exit N times after
//! the checks (see `bench`).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod bench;
#[cfg(target_os = "none")]
mod chaos;
#[cfg(target_os = "none")]
mod checks;
#[cfg(target_os = "none")]
mod hyperv;
#[cfg(target_os = "none")]
mod io;
#[cfg(target_os = "none")]
mod page;
#[cfg(target_os = "none")]
mod pci;
#[cfg(target_os = "none")]
mod policy;
#[cfg(target_os = "none")]
mod xapic;
#[cfg(target_os = "none")]
mod xen;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("probe is a guest kernel for x86_64-unknown-none: build it with `cargo xtask build`");
    std::process::exit(2);
}
