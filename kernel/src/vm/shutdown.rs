//! A shutdown the host starts (`janus.shutdown_after=S`): when the time comes, each running VM
//! is asked through its face (Xen: `control/shutdown = "poweroff"`, which Linux's xenbus acts
//! on) and given a grace period; a VM whose face has no way to be asked, or that is still
//! running when the grace period ends, is stopped as an error. While it lasts, VMs that end
//! are not restarted, whatever their `on_poweroff`/`on_reboot` say.

use super::create::{self, MAX_VMS};
use super::host::HostMachine;
use crate::arch::tsc;
use crate::println;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use virt::StopReason;
use virt::personality::ShutdownKind;

/// How long an asked guest has to power itself off.
const GRACE_NS: u64 = 60_000_000_000;

/// Host time (ns) of the request; 0: none armed.
static AT_NS: AtomicU64 = AtomicU64::new(0);
const IDLE: u8 = 0;
const ASKED: u8 = 1;
const FORCED: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(IDLE);

/// Arms the request `secs` from now.
pub fn arm(secs: u32) {
    let at = tsc::now_ns().saturating_add(u64::from(secs) * 1_000_000_000);
    AT_NS.store(at.max(1), Ordering::Release);
}

/// When [`tick`] next has something to do (host ns): the request, then the grace's end.
pub fn next_due_ns() -> Option<u64> {
    let at = AT_NS.load(Ordering::Acquire);
    match STATE.load(Ordering::Acquire) {
        _ if at == 0 => None,
        IDLE => Some(at),
        ASKED => Some(at.saturating_add(GRACE_NS)),
        _ => None,
    }
}

/// The host asked the VMs to shut down: ends are final.
pub fn in_progress() -> bool {
    STATE.load(Ordering::Acquire) != IDLE
}

/// Called by pCPU 0's scheduler loop: asks when the time comes, forces when the grace ends.
pub fn tick() {
    let at = AT_NS.load(Ordering::Acquire);
    let now = tsc::now_ns();
    if at == 0 || now < at {
        return;
    }
    match STATE.load(Ordering::Acquire) {
        IDLE => {
            STATE.store(ASKED, Ordering::Release);
            for i in 0..MAX_VMS as u8 {
                ask(i);
            }
        }
        ASKED if now >= at.saturating_add(GRACE_NS) => {
            STATE.store(FORCED, Ordering::Release);
            for i in 0..MAX_VMS as u8 {
                stop(
                    i,
                    "still running when the host's shutdown grace period ended",
                    GRACE_NS / 1_000_000_000,
                );
            }
        }
        _ => {}
    }
}

fn ask(index: u8) {
    let Some(vm) = create::vm(index).filter(|v| v.live.load(Ordering::Acquire)) else {
        return;
    };
    let name = vm.info.get().map_or("?", |i| i.name.as_str());
    let asked = super::personality::with(vm, &HostMachine, |p, mem, host| {
        p.request_shutdown(ShutdownKind::PowerOff, mem, host)
    });
    if asked == Some(true) {
        println!("vm {name}: asked to power off (host shutdown)");
        defmt::info!("vm-asked {=str} poweroff", name);
    } else {
        stop(index, "its face has no way to ask it to shut down", 0);
    }
}

fn stop(index: u8, why: &'static str, detail: u64) {
    let Some(vm) = create::vm(index).filter(|v| v.live.load(Ordering::Acquire)) else {
        return;
    };
    crate::sched::run::stop(
        vm,
        StopReason::Unsupported {
            vcpu: 0,
            what: why,
            detail,
        },
    );
}
