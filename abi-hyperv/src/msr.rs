//! Synthetic MSRs: numbers, decoding, and the read/write semantics of each.

use crate::synic::{self, SINT_COUNT, Synic};
use crate::{HyperV, clock, crash, hypercall_page};
use virt::personality::{Host, StopReason};
use virt::{Event, GuestMemory};

pub const GUEST_OS_ID: u32 = 0x4000_0000;
pub const HYPERCALL: u32 = 0x4000_0001;
pub const VP_INDEX: u32 = 0x4000_0002;
pub const RESET: u32 = 0x4000_0003;
pub const TIME_REF_COUNT: u32 = 0x4000_0020;
pub const REFERENCE_TSC: u32 = 0x4000_0021;
pub const TSC_FREQUENCY: u32 = 0x4000_0022;
pub const APIC_FREQUENCY: u32 = 0x4000_0023;
pub const VP_ASSIST_PAGE: u32 = 0x4000_0073;
pub const SCONTROL: u32 = 0x4000_0080;
pub const SVERSION: u32 = 0x4000_0081;
pub const SIEFP: u32 = 0x4000_0082;
pub const SIMP: u32 = 0x4000_0083;
pub const EOM: u32 = 0x4000_0084;
pub const SINT0: u32 = 0x4000_0090;
pub const SINT15: u32 = 0x4000_009F;
pub const STIMER0_CONFIG: u32 = 0x4000_00B0;
pub const STIMER3_COUNT: u32 = 0x4000_00B7;
pub const CRASH_P0: u32 = 0x4000_0100;
pub const CRASH_P4: u32 = 0x4000_0104;
pub const CRASH_CTL: u32 = 0x4000_0105;

/// The synthetic MSR range this personality answers for; everything in it that is not
/// implemented is a #GP, counted so the kernel can log what the guest tried.
pub const RANGE: core::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_01FF;

/// `HV_SYNIC_VERSION_1`.
pub const SYNIC_VERSION: u64 = 1;

/// HYPERCALL MSR bits.
pub mod hc {
    pub const ENABLE: u64 = 1 << 0;
    pub const LOCKED: u64 = 1 << 1;
}

/// Bit 0 of the page MSRs (hypercall, reference TSC, VP assist, SIMP, SIEFP).
const ENABLE: u64 = 1;
/// The enable bit of `HV_X64_MSR_VP_ASSIST_PAGE`.
pub const VP_ASSIST_ENABLE: u64 = ENABLE;
const GPFN_MASK: u64 = !0xfff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msr {
    GuestOsId,
    Hypercall,
    VpIndex,
    Reset,
    TimeRefCount,
    ReferenceTsc,
    TscFrequency,
    ApicFrequency,
    VpAssist,
    Scontrol,
    Sversion,
    Siefp,
    Simp,
    Eom,
    Sint(usize),
    StimerConfig(usize),
    StimerCount(usize),
    CrashParam(usize),
    CrashCtl,
}

fn decode(msr: u32) -> Option<Msr> {
    Some(match msr {
        GUEST_OS_ID => Msr::GuestOsId,
        HYPERCALL => Msr::Hypercall,
        VP_INDEX => Msr::VpIndex,
        RESET => Msr::Reset,
        TIME_REF_COUNT => Msr::TimeRefCount,
        REFERENCE_TSC => Msr::ReferenceTsc,
        TSC_FREQUENCY => Msr::TscFrequency,
        APIC_FREQUENCY => Msr::ApicFrequency,
        VP_ASSIST_PAGE => Msr::VpAssist,
        SCONTROL => Msr::Scontrol,
        SVERSION => Msr::Sversion,
        SIEFP => Msr::Siefp,
        SIMP => Msr::Simp,
        EOM => Msr::Eom,
        SINT0..=SINT15 => Msr::Sint((msr - SINT0) as usize),
        STIMER0_CONFIG..=STIMER3_COUNT => {
            let n = (msr - STIMER0_CONFIG) as usize;
            if n.is_multiple_of(2) {
                Msr::StimerConfig(n / 2)
            } else {
                Msr::StimerCount(n / 2)
            }
        }
        CRASH_P0..=CRASH_P4 => Msr::CrashParam((msr - CRASH_P0) as usize),
        CRASH_CTL => Msr::CrashCtl,
        _ => return None,
    })
}

impl HyperV {
    fn frequencies(&self) -> Option<(u64, u64)> {
        self.features
            .has(crate::cpuid::privilege::FREQUENCY_MSRS)
            .then_some((self.clock.tsc_hz(), self.apic_hz))
    }

    pub(crate) fn read_msr(
        &mut self,
        vp: u32,
        msr: u32,
        host: &mut dyn Host,
    ) -> Result<Option<u64>, Event> {
        if !RANGE.contains(&msr) {
            return Ok(None);
        }
        let value = decode(msr).and_then(|m| self.read_known(vp, m, host));
        match value {
            Some(v) => Ok(Some(v)),
            None => {
                self.counters.unknown_msr(msr, false);
                Err(Event::GP0)
            }
        }
    }

    /// `None`: not available to this guest (or a per-VP register of a VP that does not
    /// exist), which the caller turns into #GP.
    fn read_known(&mut self, vp: u32, msr: Msr, host: &mut dyn Host) -> Option<u64> {
        Some(match msr {
            Msr::GuestOsId => self.guest_os_id,
            Msr::Hypercall => self.hypercall_msr,
            Msr::VpIndex => {
                self.vp(vp)?;
                u64::from(vp)
            }
            Msr::Reset => 0,
            Msr::TimeRefCount => self.clock.now(host),
            Msr::ReferenceTsc if self.clock.page_usable() => self.ref_tsc_msr,
            Msr::ReferenceTsc => return None,
            Msr::TscFrequency => self.frequencies()?.0,
            Msr::ApicFrequency => self.frequencies()?.1,
            Msr::VpAssist => self.vp(vp)?.vp_assist,
            Msr::Scontrol => self.vp(vp)?.synic.scontrol,
            Msr::Sversion => SYNIC_VERSION,
            Msr::Siefp => self.vp(vp)?.synic.siefp,
            Msr::Simp => self.vp(vp)?.synic.simp,
            Msr::Eom => {
                self.vp(vp)?;
                0
            }
            Msr::Sint(i) => *self.vp(vp)?.synic.sint.get(i)?,
            Msr::StimerConfig(i) => self.vp(vp)?.stimers.get(i)?.config,
            Msr::StimerCount(i) => self.vp(vp)?.stimers.get(i)?.count,
            Msr::CrashParam(i) => self.crash.read_param(i)?,
            Msr::CrashCtl => crash::NOTIFY,
        })
    }

    pub(crate) fn write_msr(
        &mut self,
        vp: u32,
        msr: u32,
        value: u64,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Result<bool, Event> {
        if !RANGE.contains(&msr) {
            return Ok(false);
        }
        let Some(m) = decode(msr) else {
            self.counters.unknown_msr(msr, true);
            return Err(Event::GP0);
        };
        match self.write_known(vp, m, value, mem, host) {
            Ok(()) => Ok(true),
            Err(Refused::Unavailable) => {
                self.counters.unknown_msr(msr, true);
                Err(Event::GP0)
            }
            Err(Refused::Fault) => Err(Event::GP0),
        }
    }

    fn write_known(
        &mut self,
        vp: u32,
        msr: Msr,
        value: u64,
        mem: &mut dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Result<(), Refused> {
        match msr {
            Msr::GuestOsId => {
                self.guest_os_id = value;
                if value == 0 {
                    self.hypercall_msr &= !hc::ENABLE;
                }
            }
            Msr::Hypercall => self.write_hypercall_msr(value, mem)?,
            Msr::Reset => {
                if value & 1 != 0 {
                    self.shutdown = Some(StopReason::Reset);
                }
            }
            Msr::ReferenceTsc if self.clock.page_usable() => {
                if value & ENABLE != 0 {
                    let seq = clock::next_sequence(self.tsc_sequence);
                    self.clock
                        .write_page(mem, value & GPFN_MASK, seq)
                        .map_err(|_| Refused::Fault)?;
                    self.tsc_sequence = seq;
                }
                self.ref_tsc_msr = value;
            }
            Msr::VpAssist => {
                self.vp(vp).ok_or(Refused::Unavailable)?;
                // The kernel writes its lazy-EOI word there (`Personality::eoi_assist`): an
                // enabled page must be RAM.
                if value & ENABLE != 0 {
                    check_page(mem, value & GPFN_MASK)?;
                }
                self.vp(vp).ok_or(Refused::Unavailable)?.vp_assist = value;
            }
            Msr::Scontrol => {
                self.vp(vp).ok_or(Refused::Unavailable)?.synic.scontrol = value;
                self.retry_messages(vp, mem, host);
            }
            Msr::Siefp => {
                let s = &mut self.vp(vp).ok_or(Refused::Unavailable)?.synic;
                Synic::write_page_msr(&mut s.siefp, value, mem).map_err(|_| Refused::Fault)?;
            }
            Msr::Simp => {
                let s = &mut self.vp(vp).ok_or(Refused::Unavailable)?.synic;
                Synic::write_page_msr(&mut s.simp, value, mem).map_err(|_| Refused::Fault)?;
                self.retry_messages(vp, mem, host);
            }
            Msr::Eom => {
                self.vp(vp).ok_or(Refused::Unavailable)?;
                self.retry_messages(vp, mem, host);
            }
            Msr::Sint(i) => {
                let s = &mut self.vp(vp).ok_or(Refused::Unavailable)?.synic;
                s.write_sint(i, value).map_err(|_| Refused::Fault)?;
            }
            Msr::StimerConfig(i) | Msr::StimerCount(i) => {
                let now = self.clock.now(host);
                let t = self
                    .vp(vp)
                    .ok_or(Refused::Unavailable)?
                    .stimers
                    .get_mut(i)
                    .ok_or(Refused::Unavailable)?;
                if matches!(msr, Msr::StimerConfig(_)) {
                    t.write_config(value, now).map_err(|()| Refused::Fault)?;
                } else {
                    t.write_count(value, now);
                }
                self.service_timers(vp, mem, host);
            }
            Msr::CrashParam(i) => {
                if !self.crash.write_param(i, value) {
                    return Err(Refused::Unavailable);
                }
            }
            Msr::CrashCtl => {
                if let Some(p) = self.crash.write_ctl(value) {
                    self.shutdown = Some(StopReason::Crash(p));
                }
            }
            Msr::VpIndex
            | Msr::TimeRefCount
            | Msr::TscFrequency
            | Msr::ApicFrequency
            | Msr::Sversion
            | Msr::ReferenceTsc => return Err(Refused::Unavailable),
        }
        Ok(())
    }

    /// Enabling needs a guest OS identity first (TLFS); such a write is kept with the enable
    /// bit clear, which is what the guest reads back. Once locked, the MSR is immutable.
    fn write_hypercall_msr(&mut self, value: u64, mem: &dyn GuestMemory) -> Result<(), Refused> {
        if self.hypercall_msr & hc::LOCKED != 0 {
            return Ok(());
        }
        let mut value = value;
        if self.guest_os_id == 0 {
            value &= !hc::ENABLE;
        }
        if value & hc::ENABLE != 0 {
            hypercall_page::write(mem, value & GPFN_MASK, self.insn).map_err(|_| Refused::Fault)?;
        }
        self.hypercall_msr = value;
        Ok(())
    }
}

/// Why a write was refused; both are #GP to the guest, only the first is counted as the
/// guest reaching for something not offered.
enum Refused {
    Unavailable,
    Fault,
}

fn check_page(mem: &dyn GuestMemory, gpa: u64) -> Result<(), Refused> {
    virt::check_range(mem.size(), gpa, synic::PAGE_SIZE as usize)
        .map(|_| ())
        .map_err(|_| Refused::Fault)
}

const _: () = assert!(SINT15 - SINT0 + 1 == SINT_COUNT as u32);
