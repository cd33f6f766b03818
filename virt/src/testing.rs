//! Test doubles for crates built on this one (feature `test-util`): a [`FakeHost`] that records
//! what a personality asked of the kernel and whose clock the test moves, and a seeded
//! generator for the stable fuzz tests. Guest memory for tests is [`crate::VecMemory`].

use crate::personality::Host;
use alloc::vec::Vec;

/// The kernel as a personality sees it, with every request recorded.
///
/// It also holds the personality to the seam's contract: a timer, interrupt or kick for a vCPU
/// the VM does not have, or an exception vector (below 16) raised as an interrupt, panics the
/// test.
#[derive(Clone, Debug)]
pub struct FakeHost {
    pub ns: u64,
    pub tsc_hz: u64,
    pub vcpus: u32,
    /// Every `set_timer`, in order: (vCPU, deadline or `None` for a cancel).
    pub timers: Vec<(u32, Option<u64>)>,
    /// Every `raise_vector`: (vCPU, vector, needs EOI).
    pub raised: Vec<(u32, u8, bool)>,
    pub kicks: Vec<u32>,
    pub console: Vec<u8>,
    pub console_writes: usize,
    /// What `vcpu_is_up` answers; `None`: the kernel does not track it.
    pub up: Option<Vec<bool>>,
    /// Live page aliases, (alias GPA, backing GPA), as `alias_page` left them.
    pub aliases: Vec<(u64, u64)>,
    /// What `alias_page` answers instead of recording (`None`: it records).
    pub alias_refusal: Option<crate::personality::AliasError>,
    /// The VM's disks, in manifest order.
    pub disks: Vec<crate::block::MemVolume>,
}

impl FakeHost {
    /// A host at 1 s of uptime (not zero, so that clocks that must start at zero in the guest
    /// are seen to be offset) with a 2.5 GHz TSC.
    pub fn new(vcpus: u32) -> Self {
        FakeHost {
            ns: 1_000_000_000,
            tsc_hz: 2_500_000_000,
            vcpus,
            timers: Vec::new(),
            raised: Vec::new(),
            kicks: Vec::new(),
            console: Vec::new(),
            console_writes: 0,
            up: None,
            aliases: Vec::new(),
            alias_refusal: None,
            disks: Vec::new(),
        }
    }

    pub fn advance_ns(&mut self, ns: u64) {
        self.ns += ns;
    }

    /// The deadline last armed for `vcpu` (`None`: cancelled or never armed).
    pub fn timer(&self, vcpu: u32) -> Option<u64> {
        self.timers
            .iter()
            .rev()
            .find(|(v, _)| *v == vcpu)
            .and_then(|(_, d)| *d)
    }

    fn check_vcpu(&self, what: &str, vcpu: u32) {
        assert!(
            vcpu < self.vcpus,
            "{what} for vCPU {vcpu} of a VM with {}",
            self.vcpus
        );
    }
}

impl Host for FakeHost {
    fn now_ns(&self) -> u64 {
        self.ns
    }
    fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }
    fn tsc(&self) -> u64 {
        (u128::from(self.ns) * u128::from(self.tsc_hz) / 1_000_000_000) as u64
    }
    fn vcpu_count(&self) -> u32 {
        self.vcpus
    }
    fn set_timer(&mut self, vcpu: u32, deadline_ns: Option<u64>) {
        self.check_vcpu("timer", vcpu);
        self.timers.push((vcpu, deadline_ns));
    }
    fn raise_vector(&mut self, vcpu: u32, vector: u8, needs_eoi: bool) {
        self.check_vcpu("interrupt", vcpu);
        assert!(vector >= 0x10, "exception vector {vector:#x} raised");
        self.raised.push((vcpu, vector, needs_eoi));
    }
    fn kick(&mut self, vcpu: u32) {
        self.check_vcpu("kick", vcpu);
        self.kicks.push(vcpu);
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.console.extend_from_slice(bytes);
        self.console_writes += 1;
    }
    fn alias_page(&mut self, gpa: u64, backing: u64) -> Result<(), crate::personality::AliasError> {
        assert!(
            (gpa | backing).is_multiple_of(4096),
            "unaligned alias {gpa:#x} -> {backing:#x}"
        );
        if let Some(e) = self.alias_refusal {
            return Err(e);
        }
        self.aliases.retain(|&(g, _)| g != gpa);
        self.aliases.push((gpa, backing));
        Ok(())
    }
    fn unalias_page(&mut self, gpa: u64) {
        self.aliases.retain(|&(g, _)| g != gpa);
    }
    fn disk(&self, index: u32) -> Option<crate::block::DiskInfo> {
        use crate::block::Volume;
        let d = self.disks.get(index as usize)?;
        Some(crate::block::DiskInfo {
            sectors: d.sectors(),
            read_only: d.read_only(),
        })
    }
    fn disk_io(
        &mut self,
        index: u32,
        io: &mut dyn FnMut(&mut dyn crate::block::Volume) -> Result<(), crate::block::VolumeError>,
    ) -> Result<(), crate::block::VolumeError> {
        let d = self
            .disks
            .get_mut(index as usize)
            .ok_or(crate::block::VolumeError::Io)?;
        io(d)
    }
    fn vcpu_is_up(&self, vcpu: u32) -> Option<bool> {
        self.up
            .as_ref()
            .map(|u| u.get(vcpu as usize).copied().unwrap_or(false))
    }
}

/// A tiny deterministic generator for seeded fuzz tests.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_arming_wins() {
        let mut h = FakeHost::new(2);
        h.set_timer(1, Some(5));
        h.set_timer(0, Some(7));
        h.set_timer(1, None);
        assert_eq!(h.timer(0), Some(7));
        assert_eq!(h.timer(1), None);
        h.advance_ns(1_000_000_000);
        assert_eq!(h.tsc(), 5_000_000_000);
    }

    #[test]
    #[should_panic(expected = "kick for vCPU 2")]
    fn a_kick_past_the_last_vcpu_is_a_personality_bug() {
        FakeHost::new(2).kick(2);
    }
}
