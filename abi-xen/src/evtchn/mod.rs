//! 2-level event channels: the port table, the `EVTCHNOP_*` operations and delivery into
//! shared_info's pending/mask bitmaps and the target vCPU's vcpu_info.
//!
//! The guest owns the mask bits and clears pending bits; the hypervisor only sets pending
//! (and clears a mask on `EVTCHNOP_unmask`). Those words are shared with running vCPUs, so
//! every update goes through the host's atomic fetch-or/fetch-and.

mod delivery;
mod ops;

pub(crate) use delivery::{
    any_pending, deliver_upcall, has_pending_work, redeliver_pending, set_pending, upcall_pending,
};
pub(crate) use ops::op;

use crate::errno::Errno;
use crate::{CONSOLE_PORT, Config, DOMID_SELF, MAX_PORTS, MAX_VCPUS, STORE_PORT};

/// `NR_VIRQS`.
pub const NR_VIRQS: u32 = 24;
pub const VIRQ_TIMER: u32 = 0;

/// VIRQs bound per vCPU (timer, debug, xenoprof, xenpmu); the rest are domain-wide and bind
/// on vCPU 0 only.
fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, 0 | 1 | 7 | 13)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    Free,
    /// Allocated, waiting for `remote_dom` to connect.
    Unbound {
        remote_dom: u16,
    },
    /// Connected: to this same domain (a loopback pair) or to a backend in domain 0.
    Interdomain {
        remote_dom: u16,
        remote_port: u16,
    },
    Virq(u8),
    Ipi,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Port {
    binding: Binding,
    /// The vCPU notified when the port becomes pending.
    vcpu: u8,
}

const FREE: Port = Port {
    binding: Binding::Free,
    vcpu: 0,
};

/// What `EVTCHNOP_status` reports for a port (also for the kernel's diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PortStatus {
    Closed,
    Unbound { remote_dom: u16 },
    Interdomain { remote_dom: u16, remote_port: u32 },
    Virq { virq: u32, vcpu: u32 },
    Ipi { vcpu: u32 },
}

pub(crate) struct Ports {
    table: [Port; MAX_PORTS as usize],
    virq: [[u16; NR_VIRQS as usize]; MAX_VCPUS as usize],
    kicks: [u64; (MAX_PORTS / 64) as usize],
    domid: u16,
    console_open: bool,
}

impl Ports {
    pub fn new(cfg: &Config) -> Self {
        let mut p = Ports {
            table: [FREE; MAX_PORTS as usize],
            virq: [[0; NR_VIRQS as usize]; MAX_VCPUS as usize],
            kicks: [0; (MAX_PORTS / 64) as usize],
            domid: cfg.domid,
            console_open: cfg.console_pfn.is_some(),
        };
        // Linux treats these as already connected to their backends and never binds them.
        if cfg.console_pfn.is_some() {
            p.table[CONSOLE_PORT as usize].binding = Binding::Interdomain {
                remote_dom: 0,
                remote_port: CONSOLE_PORT as u16,
            };
        }
        if cfg.store_pfn.is_some() {
            p.table[STORE_PORT as usize].binding = Binding::Interdomain {
                remote_dom: 0,
                remote_port: STORE_PORT as u16,
            };
        }
        p
    }

    fn get(&self, port: u32) -> Option<&Port> {
        self.table.get(port as usize)
    }

    fn get_mut(&mut self, port: u32) -> Option<&mut Port> {
        self.table.get_mut(port as usize)
    }

    pub fn is_bound(&self, port: u32) -> bool {
        port != 0 && self.get(port).is_some_and(|p| p.binding != Binding::Free)
    }

    pub fn notify_vcpu(&self, port: u32) -> u32 {
        self.get(port).map_or(0, |p| u32::from(p.vcpu))
    }

    /// The port bound to `virq` on `vcpu`, if any.
    pub fn virq_port(&self, vcpu: u32, virq: u32) -> Option<u32> {
        let p = *self.virq.get(vcpu as usize)?.get(virq as usize)?;
        (p != 0).then_some(u32::from(p))
    }

    fn is_self(&self, dom: u16) -> bool {
        dom == DOMID_SELF || dom == self.domid
    }

    fn alloc(&mut self, binding: Binding, vcpu: u32) -> Result<u32, Errno> {
        let idx = (1..MAX_PORTS)
            .find(|&p| self.table[p as usize].binding == Binding::Free)
            .ok_or(Errno::ENOSPC)?;
        let slot = self.get_mut(idx).ok_or(Errno::ENOSPC)?;
        slot.binding = binding;
        slot.vcpu = vcpu as u8;
        Ok(idx)
    }

    pub fn take_kick(&mut self) -> Option<u32> {
        for (w, word) in self.kicks.iter_mut().enumerate() {
            if *word != 0 {
                let bit = word.trailing_zeros();
                *word &= !(1u64 << bit);
                return Some(w as u32 * 64 + bit);
            }
        }
        None
    }

    fn kick(&mut self, port: u32) {
        if let Some(w) = self.kicks.get_mut((port / 64) as usize) {
            *w |= 1 << (port % 64);
        }
    }

    pub fn backend_bind(&mut self, port: u32) -> Result<(), Errno> {
        let p = self
            .get_mut(port)
            .filter(|_| port != 0)
            .ok_or(Errno::EINVAL)?;
        match p.binding {
            Binding::Unbound { remote_dom: 0 } => {
                p.binding = Binding::Interdomain {
                    remote_dom: 0,
                    remote_port: port as u16,
                };
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    pub fn status(&self, port: u32) -> Option<PortStatus> {
        let p = self.get(port)?;
        Some(match p.binding {
            Binding::Free => PortStatus::Closed,
            Binding::Unbound { remote_dom } => PortStatus::Unbound { remote_dom },
            Binding::Interdomain {
                remote_dom,
                remote_port,
            } => PortStatus::Interdomain {
                remote_dom,
                remote_port: u32::from(remote_port),
            },
            Binding::Virq(v) => PortStatus::Virq {
                virq: u32::from(v),
                vcpu: u32::from(p.vcpu),
            },
            Binding::Ipi => PortStatus::Ipi {
                vcpu: u32::from(p.vcpu),
            },
        })
    }
}
