//! Hyper-V's lazy EOI ("EOI avoidance"): when an injected interrupt is the only one in
//! service, edge-triggered, with nothing waiting behind it, the hypervisor sets bit 0 of the
//! VP assist page's first word; the guest's EOI routine exchanges the word with zero and, on
//! finding the bit, skips its EOI write, one exit fewer per interrupt (Linux: `hv_apic_eoi_write`
//! once the face recommends the synthetic APIC MSRs). The hypervisor then owes that EOI: it
//! performs it at the next exit that finds the bit cleared, or, if the bit is still set when
//! another interrupt must go in, clears the bit itself so that the guest EOIs as usual.
//!
//! The word is read and written only while its vCPU is out of the guest, so the guest's
//! exchange and the hypervisor's accesses never overlap; another vCPU scribbling on the page
//! only confuses its own VM's interrupts.

use super::lapic::VLapic;
use virt::GuestMemory;

const NO_EOI_REQUIRED: u32 = 1;

/// One vCPU's lazy EOI state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyEoi {
    /// The guest-physical address of the flag word (the enabled VP assist page).
    assist: Option<u64>,
    /// The vector whose EOI the guest was told it may skip.
    offered: Option<u8>,
    /// EOIs the guest skipped and the hypervisor performed, for the VM's end report.
    pub taken: u64,
}

impl LazyEoi {
    /// Where the flag word is now; an offer at the old place is settled first.
    pub fn set_assist(&mut self, assist: Option<u64>, lapic: &mut VLapic, mem: &dyn GuestMemory) {
        if assist != self.assist {
            self.withdraw(lapic, mem);
            self.assist = assist;
        }
    }

    /// After an exit: an offer the guest took (bit cleared) is EOId now.
    pub fn settle(&mut self, lapic: &mut VLapic, mem: &dyn GuestMemory) {
        let (Some(_), Some(at)) = (self.offered, self.assist) else {
            return;
        };
        if read(mem, at).is_some_and(|w| w & NO_EOI_REQUIRED == 0) {
            self.offered = None;
            self.taken = self.taken.saturating_add(1);
            // Only edge vectors are offered: their EOI has nothing to tell the IOAPIC.
            let _ = lapic.eoi_for_guest();
        }
    }

    /// Before another interrupt goes in: an offer not taken yet is taken back (the guest
    /// will EOI itself), one taken is EOId now.
    pub fn withdraw(&mut self, lapic: &mut VLapic, mem: &dyn GuestMemory) {
        let (Some(_), Some(at)) = (self.offered.take(), self.assist) else {
            return;
        };
        match read(mem, at) {
            Some(w) if w & NO_EOI_REQUIRED != 0 => {
                let _ = mem.write(at, &(w & !NO_EOI_REQUIRED).to_le_bytes());
            }
            _ => {
                self.taken = self.taken.saturating_add(1);
                let _ = lapic.eoi_for_guest();
            }
        }
    }

    /// `vector` was just injected: the guest is told it may skip its EOI where that is safe.
    pub fn offer(&mut self, vector: u8, lapic: &VLapic, mem: &dyn GuestMemory) {
        let Some(at) = self.assist else { return };
        if self.offered.is_some() || !lapic.sole_edge_in_service(vector) {
            return;
        }
        let Some(w) = read(mem, at) else { return };
        if mem.write(at, &(w | NO_EOI_REQUIRED).to_le_bytes()).is_ok() {
            self.offered = Some(vector);
        }
    }

    /// Forgets the page and any offer, for a VM that starts over (its APIC is new).
    pub fn reset(&mut self) {
        self.assist = None;
        self.offered = None;
    }

    /// Whether an offer is outstanding (an exit must settle it before the guest's APIC
    /// state is looked at).
    pub fn is_offered(&self) -> bool {
        self.offered.is_some()
    }
}

fn read(mem: &dyn GuestMemory, at: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    mem.read(at, &mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::lapic::X2APIC_MSR_FIRST;
    use virt::VecMemory;

    const EOI_MSR: u32 = X2APIC_MSR_FIRST + 0x0B;
    const AT: u64 = 0x3000;

    fn lapic() -> VLapic {
        let mut l = VLapic::new(0, true, 1_000_000_000, 1_000_000_000);
        let _ = l.wrmsr(X2APIC_MSR_FIRST + 0xF, 0x1FF, 0);
        l
    }

    fn inject(l: &mut VLapic, v: u8) {
        l.accept(v);
        assert_eq!(l.deliverable(), Some(v));
        l.delivered(v);
    }

    /// Vector 0x30 injected alone, its EOI offered through the word at `AT`.
    fn offered_0x30() -> (VecMemory, VLapic, LazyEoi) {
        let mem = VecMemory::new(0x10000);
        let mut l = lapic();
        let mut lazy = LazyEoi::default();
        lazy.set_assist(Some(AT), &mut l, &mem);
        inject(&mut l, 0x30);
        lazy.offer(0x30, &l, &mem);
        assert!(lazy.is_offered());
        (mem, l, lazy)
    }

    fn flag(mem: &VecMemory) -> u32 {
        read(mem, AT).unwrap()
    }

    #[test]
    fn a_taken_offer_is_eoid_at_the_next_exit() {
        let (mem, mut l, mut lazy) = offered_0x30();
        assert_eq!(flag(&mem), 1);
        // The guest's handler exchanges the word with zero and skips its EOI.
        mem.write(AT, &0u32.to_le_bytes()).unwrap();
        lazy.settle(&mut l, &mem);
        assert!(!lazy.is_offered());
        assert_eq!(lazy.taken, 1);
        inject(&mut l, 0x20);
        assert!(l.sole_edge_in_service(0x20), "0x30 left ISR");
    }

    #[test]
    fn an_offer_not_taken_is_withdrawn_and_the_guest_eois_itself() {
        let (mem, mut l, mut lazy) = offered_0x30();
        lazy.settle(&mut l, &mem);
        assert!(lazy.is_offered(), "the guest has not got to its EOI");
        lazy.withdraw(&mut l, &mem);
        assert_eq!(flag(&mem), 0);
        assert_eq!(lazy.taken, 0);
        // 0x30 is still in service until the guest's own EOI.
        l.accept(0x30);
        assert_eq!(l.deliverable(), None);
        l.wrmsr(EOI_MSR, 0, 0).unwrap();
        assert_eq!(l.deliverable(), Some(0x30));
    }

    #[test]
    fn nothing_is_offered_without_a_page_behind_another_vector_or_outside_ram() {
        let mem = VecMemory::new(0x10000);
        let mut l = lapic();
        let mut lazy = LazyEoi::default();
        inject(&mut l, 0x30);
        lazy.offer(0x30, &l, &mem);
        assert!(!lazy.is_offered(), "no assist page");
        lazy.set_assist(Some(AT), &mut l, &mem);
        inject(&mut l, 0x40);
        lazy.offer(0x40, &l, &mem);
        assert!(!lazy.is_offered(), "0x30 is in service too");
        assert_eq!(flag(&mem), 0);
        // A page outside RAM is never written.
        lazy.set_assist(Some(0x20000), &mut l, &mem);
        l.wrmsr(EOI_MSR, 0, 0).unwrap();
        l.wrmsr(EOI_MSR, 0, 0).unwrap();
        inject(&mut l, 0x50);
        lazy.offer(0x50, &l, &mem);
        assert!(!lazy.is_offered());
    }

    #[test]
    fn moving_the_page_settles_the_offer_at_the_old_place() {
        let (mem, mut l, mut lazy) = offered_0x30();
        lazy.set_assist(None, &mut l, &mem);
        assert_eq!(flag(&mem), 0, "the guest will EOI it itself");
        assert!(!lazy.is_offered());
    }
}
