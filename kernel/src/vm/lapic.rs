//! The virtual local APIC each vCPU sees. On the Xen and Hyper-V faces it starts in x2APIC mode
//! (MSRs 0x800–0x8FF), as firmware may hand it over: Linux prefers it in a VM and it needs no
//! MMIO decoding. On the hardware-emulation face it starts in xAPIC mode through its MMIO page,
//! as on a real board, and the guest may switch it with IA32_APIC_BASE (`xapic`). Pure state
//! over explicit time, so the timer modes are tested on the host.
//!
//! Interrupt requests can come from other pCPUs (IPIs, personalities), so they land in
//! [`Pending`], a lock-free bitmap; the owning vCPU folds them into IRR before entry.

pub const X2APIC_MSR_FIRST: u32 = 0x800;
pub const X2APIC_MSR_LAST: u32 = 0x8FF;
pub const APIC_BASE_MSR: u32 = 0x1B;
pub const TSC_DEADLINE_MSR: u32 = 0x6E0;
/// Hyper-V's synthetic APIC access MSRs (`HV_X64_MSR_EOI`, `_ICR`, `_TPR`).
pub const SYNTHETIC_EOI: u32 = 0x4000_0070;
pub const SYNTHETIC_ICR: u32 = 0x4000_0071;
pub const SYNTHETIC_TPR: u32 = 0x4000_0072;
pub const APIC_DEFAULT_BASE: u64 = 0xFEE0_0000;
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;
/// Version 0x14 with 7 LVT entries (max LVT index 6), as modern integrated APICs report.
const VERSION: u32 = 0x0006_0014;

// x2APIC register numbers (MSR - 0x800).
const REG_ID: u32 = 0x02;
const REG_VERSION: u32 = 0x03;
const REG_TPR: u32 = 0x08;
const REG_PPR: u32 = 0x0A;
const REG_EOI: u32 = 0x0B;
const REG_LDR: u32 = 0x0D;
/// xAPIC only: the destination format (flat or cluster logical addressing).
const REG_DFR: u32 = 0x0E;
const REG_SVR: u32 = 0x0F;
const REG_ISR0: u32 = 0x10;
const REG_TMR0: u32 = 0x18;
const REG_IRR0: u32 = 0x20;
const REG_ESR: u32 = 0x28;
const REG_LVT_CMCI: u32 = 0x2F;
const REG_ICR: u32 = 0x30;
const REG_LVT_TIMER: u32 = 0x32;
const REG_LVT_ERROR: u32 = 0x37;
const REG_TIMER_INIT: u32 = 0x38;
const REG_TIMER_CUR: u32 = 0x39;
const REG_TIMER_DIV: u32 = 0x3E;
const REG_SELF_IPI: u32 = 0x3F;

const LVT_MASKED: u32 = 1 << 16;
const SVR_ENABLED: u32 = 1 << 8;
const TIMER_MODE_MASK: u32 = 0b11 << 17;
const TIMER_PERIODIC: u32 = 1 << 17;
const TIMER_TSC_DEADLINE: u32 = 2 << 17;

/// Where an interprocessor interrupt must go, decoded from an ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    Fixed { dest: Dest, vector: u8 },
    Nmi { dest: Dest },
    Init { dest: Dest },
    Sipi { dest: Dest, vector: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Physical x2APIC id (our vCPU index).
    Physical(u32),
    /// Logical cluster mode: cluster (bits 31:16) and member mask (bits 15:0).
    Logical(u32),
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// What an MSR access to the APIC asks of the kernel beyond the register state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    SendIpi(Ipi),
    /// The EOI of a level-triggered vector: broadcast to the IOAPIC.
    Eoi(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpFault;

pub struct VLapic {
    id: u32,
    base: u64,
    tpr: u32,
    svr: u32,
    /// The logical id: derived from the id in x2APIC mode, the guest's in xAPIC mode.
    ldr: u32,
    dfr: u32,
    esr: u32,
    /// In xAPIC mode the high half is the ICR_HI register.
    icr: u64,
    lvt: [u32; 7],
    isr: [u64; 4],
    irr: [u64; 4],
    tmr: [u64; 4],
    no_eoi: [u64; 4],
    timer_div_reg: u32,
    timer_init: u32,
    /// Host TSC when the current count was loaded.
    timer_start: u64,
    /// Host TSC of the next expiry (count-based modes and TSC-deadline alike), 0 = none.
    deadline: u64,
    tsc_deadline: u64,
    /// Host TSC ticks per APIC bus tick before division: the guest sees a 1 GHz bus clock
    /// scaled to the host TSC (set by the kernel from its calibration).
    tsc_per_bus_tick_num: u64,
    tsc_per_bus_tick_den: u64,
    /// EOIs written with nothing in service. A correct guest never does that; a count here
    /// means it took an interrupt twice or one it was never given.
    pub unmatched_eois: u32,
    /// A level-triggered vector just EOId, for the write's [`Effect`].
    eoi_broadcast: Option<u8>,
}

/// Index into `lvt` for LVT registers 0x32–0x37 (timer, thermal, perf, LINT0, LINT1, error).
fn lvt_index(reg: u32) -> Option<usize> {
    match reg {
        REG_LVT_TIMER..=REG_LVT_ERROR => Some((reg - REG_LVT_TIMER) as usize),
        _ => None,
    }
}

fn set_bit(set: &mut [u64; 4], v: u8, on: bool) {
    let w = &mut set[usize::from(v / 64)];
    if on {
        *w |= 1 << (v % 64);
    } else {
        *w &= !(1 << (v % 64));
    }
}

fn highest(set: &[u64; 4]) -> Option<u8> {
    (0..4).rev().find_map(|i| {
        let w = set[i];
        (w != 0).then(|| (i as u32 * 64 + 63 - w.leading_zeros()) as u8)
    })
}

impl VLapic {
    /// `bus_hz` is the APIC timer's input clock the guest is told about (CPUID 0x15 or
    /// the Hyper-V APIC frequency MSR); `tsc_hz` is the host TSC rate.
    pub fn new(id: u32, bsp: bool, tsc_hz: u64, bus_hz: u64) -> Self {
        let mut base = APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD;
        if bsp {
            base |= APIC_BASE_BSP;
        }
        Self {
            id,
            base,
            tpr: 0,
            svr: 0xFF,
            ldr: logical_id(id),
            dfr: u32::MAX,
            esr: 0,
            icr: 0,
            lvt: [LVT_MASKED; 7],
            isr: [0; 4],
            irr: [0; 4],
            tmr: [0; 4],
            no_eoi: [0; 4],
            timer_div_reg: 0,
            timer_init: 0,
            timer_start: 0,
            deadline: 0,
            tsc_deadline: 0,
            tsc_per_bus_tick_num: tsc_hz.max(1),
            tsc_per_bus_tick_den: bus_hz.max(1),
            unmatched_eois: 0,
            eoi_broadcast: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn apic_base(&self) -> u64 {
        self.base
    }

    pub fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLED != 0 && self.base & APIC_BASE_EN != 0
    }

    fn divider(&self) -> u64 {
        let d = self.timer_div_reg;
        let code = (d & 0b11) | ((d >> 1) & 0b100);
        if code == 0b111 { 1 } else { 2 << code }
    }

    fn bus_ticks_to_tsc(&self, ticks: u64) -> u64 {
        let t =
            u128::from(ticks) * u128::from(self.divider()) * u128::from(self.tsc_per_bus_tick_num)
                / u128::from(self.tsc_per_bus_tick_den);
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    fn timer_mode(&self) -> u32 {
        self.lvt[0] & TIMER_MODE_MASK
    }

    /// The host TSC at which the timer next fires, if armed.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.deadline != 0).then_some(self.deadline)
    }

    /// Advances the timer to host TSC `now`; raises its vector if it fired.
    pub fn tick(&mut self, now: u64) {
        if self.deadline == 0 || now < self.deadline {
            return;
        }
        let fired_at = self.deadline;
        match self.timer_mode() {
            TIMER_PERIODIC if self.timer_init != 0 => {
                let period = self.bus_ticks_to_tsc(u64::from(self.timer_init)).max(1);
                // Skip whole periods missed while the vCPU was not running.
                let missed = (now - fired_at) / period;
                self.timer_start = fired_at + missed * period;
                self.deadline = self.timer_start + period;
            }
            _ => {
                self.deadline = 0;
                self.tsc_deadline = 0;
            }
        }
        let lvt = self.lvt[0];
        if lvt & LVT_MASKED == 0 {
            self.accept((lvt & 0xFF) as u8);
        }
    }

    fn timer_current(&self, now: u64) -> u32 {
        if self.deadline == 0 || self.timer_mode() == TIMER_TSC_DEADLINE || now >= self.deadline {
            return 0;
        }
        let left_tsc = self.deadline - now;
        let per_tick = u128::from(self.divider()) * u128::from(self.tsc_per_bus_tick_num);
        let ticks = u128::from(left_tsc) * u128::from(self.tsc_per_bus_tick_den) / per_tick.max(1);
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    pub(crate) fn accept(&mut self, vector: u8) {
        if vector < 16 {
            // Vectors 0–15 are illegal for fixed delivery: "received illegal vector".
            self.esr |= 1 << 6;
            return;
        }
        set_bit(&mut self.irr, vector, true);
    }

    /// Folds interrupts posted from elsewhere into IRR.
    pub fn sync(&mut self, pending: &Pending) {
        let (mut posted, mut level) = ([0u64; 4], [0u64; 4]);
        pending.drain_into(&mut posted, &mut self.no_eoi, &mut level);
        for i in 0..4 {
            self.tmr[i] = (self.tmr[i] & !posted[i]) | (level[i] & posted[i]);
        }
        for (i, w) in posted.iter().enumerate() {
            let mut w = *w;
            while w != 0 {
                let b = w.trailing_zeros();
                w &= w - 1;
                self.accept((i as u32 * 64 + b) as u8);
            }
        }
    }

    fn ppr(&self) -> u32 {
        let isrv = highest(&self.isr).map_or(0, u32::from);
        if (self.tpr & 0xF0) >= (isrv & 0xF0) {
            self.tpr & 0xFF
        } else {
            isrv & 0xF0
        }
    }

    /// The vector to deliver now, if one outranks the processor priority.
    pub fn deliverable(&self) -> Option<u8> {
        if !self.software_enabled() {
            return None;
        }
        let v = highest(&self.irr)?;
        (u32::from(v) & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    pub fn has_irr(&self) -> bool {
        highest(&self.irr).is_some()
    }

    /// The vector was injected: IRR -> ISR, unless its ABI delivers it without an EOI.
    pub fn delivered(&mut self, vector: u8) {
        set_bit(&mut self.irr, vector, false);
        // The no-EOI property belongs to the vector, not to one posting: a per-posting flag
        // races with a second posting from another pCPU and strands the vector in ISR.
        if self.no_eoi[usize::from(vector / 64)] & (1 << (vector % 64)) == 0 {
            set_bit(&mut self.isr, vector, true);
        }
    }

    /// Whether `vector`, just delivered, may be EOId by the hypervisor for the guest (Hyper-V's
    /// lazy EOI): it is edge-triggered and the only vector in service, and nothing waits in
    /// IRR, so the guest's EOI would have no effect but to clear it.
    pub fn sole_edge_in_service(&self, vector: u8) -> bool {
        let mut only = [0u64; 4];
        only[usize::from(vector / 64)] = 1 << (vector % 64);
        self.isr == only && self.irr == [0; 4] && self.tmr == [0; 4]
    }

    /// An EOI written for the guest (see [`Self::sole_edge_in_service`]).
    pub fn eoi_for_guest(&mut self) -> Effect {
        self.write_common(REG_EOI, 0, 0);
        self.written()
    }

    /// Hyper-V's synthetic APIC MSRs, the same registers in either APIC mode: EOI, ICR in the
    /// xAPIC layout (destination in bits 56-63), TPR. EOI is write-only.
    pub fn synthetic_wrmsr(&mut self, msr: u32, value: u64, now: u64) -> Result<Effect, GpFault> {
        match msr {
            SYNTHETIC_EOI => Ok(self.eoi_for_guest()),
            SYNTHETIC_TPR if value >> 8 == 0 => {
                self.tpr = value as u32;
                Ok(Effect::None)
            }
            SYNTHETIC_ICR if self.x2apic_mode() => {
                let ipi = self.write_icr(((value >> 56) << 32) | (value & 0xFFFF_FFFF))?;
                Ok(ipi.map_or(Effect::None, Effect::SendIpi))
            }
            SYNTHETIC_ICR => {
                self.mmio_write(0x310, 4, value >> 32, now);
                Ok(self.mmio_write(0x300, 4, value & 0xFFFF_FFFF, now))
            }
            _ => Err(GpFault),
        }
    }

    pub fn synthetic_rdmsr(&self, msr: u32) -> Result<u64, GpFault> {
        match msr {
            SYNTHETIC_TPR => Ok(u64::from(self.tpr)),
            SYNTHETIC_ICR if self.x2apic_mode() => {
                Ok(((self.icr >> 32) << 56) | (self.icr & 0xFFFF_FFFF))
            }
            SYNTHETIC_ICR => Ok(self.icr),
            _ => Err(GpFault),
        }
    }

    pub fn rdmsr(&self, msr: u32, now: u64) -> Result<u64, GpFault> {
        if msr == APIC_BASE_MSR {
            return Ok(self.base);
        }
        if msr == TSC_DEADLINE_MSR {
            return Ok(if self.timer_mode() == TIMER_TSC_DEADLINE {
                self.tsc_deadline
            } else {
                0
            });
        }
        let reg = msr
            .checked_sub(X2APIC_MSR_FIRST)
            .filter(|_| msr <= X2APIC_MSR_LAST && self.x2apic_mode())
            .ok_or(GpFault)?;
        let v = match reg {
            REG_ID => self.id,
            REG_LDR => self.ldr,
            REG_ICR => return Ok(self.icr),
            // EOI and SELF_IPI are write-only; everything else is reserved: #GP as hardware.
            r => self.read_common(r, now).ok_or(GpFault)?,
        };
        Ok(u64::from(v))
    }

    /// The registers both modes share, by x2APIC register number.
    fn read_common(&self, reg: u32, now: u64) -> Option<u32> {
        Some(match reg {
            REG_VERSION => VERSION,
            REG_TPR => self.tpr,
            REG_PPR => self.ppr(),
            REG_SVR => self.svr,
            r @ REG_ISR0..=0x17 => word(&self.isr, r - REG_ISR0),
            r @ REG_TMR0..=0x1F => word(&self.tmr, r - REG_TMR0),
            r @ REG_IRR0..=0x27 => word(&self.irr, r - REG_IRR0),
            REG_ESR => self.esr,
            REG_LVT_CMCI => LVT_MASKED,
            r if lvt_index(r).is_some() => self.lvt[lvt_index(r).unwrap_or(0)],
            REG_TIMER_INIT => self.timer_init,
            REG_TIMER_CUR => self.timer_current(now),
            REG_TIMER_DIV => self.timer_div_reg,
            _ => return None,
        })
    }

    pub fn wrmsr(&mut self, msr: u32, value: u64, now: u64) -> Result<Effect, GpFault> {
        if msr == APIC_BASE_MSR {
            self.set_base(value)?;
            return Ok(Effect::None);
        }
        if msr == TSC_DEADLINE_MSR {
            if self.timer_mode() == TIMER_TSC_DEADLINE {
                self.tsc_deadline = value;
                self.deadline = value;
                if value != 0 && value <= now {
                    self.tick(now);
                }
            }
            return Ok(Effect::None);
        }
        let reg = msr
            .checked_sub(X2APIC_MSR_FIRST)
            .filter(|_| msr <= X2APIC_MSR_LAST && self.x2apic_mode())
            .ok_or(GpFault)?;
        let low = value as u32;
        // Only ICR takes 64 bits; the upper half of every other register is reserved.
        if reg != REG_ICR && value >> 32 != 0 {
            return Err(GpFault);
        }
        match reg {
            REG_EOI if low != 0 => Err(GpFault),
            REG_ICR => Ok(self.write_icr(value)?.map_or(Effect::None, Effect::SendIpi)),
            REG_SELF_IPI => {
                self.accept((low & 0xFF) as u8);
                Ok(Effect::None)
            }
            r => match self.write_common(r, low, now) {
                true => Ok(self.written()),
                false => Err(GpFault),
            },
        }
    }

    /// What a register write asks of the kernel besides its state (an EOI to broadcast).
    fn written(&mut self) -> Effect {
        self.eoi_broadcast.take().map_or(Effect::None, Effect::Eoi)
    }

    /// A write to a register both modes share; `false` for any other register.
    fn write_common(&mut self, reg: u32, low: u32, now: u64) -> bool {
        match reg {
            REG_TPR => self.tpr = low & 0xFF,
            REG_EOI => match highest(&self.isr) {
                Some(v) => {
                    set_bit(&mut self.isr, v, false);
                    if self.tmr[usize::from(v / 64)] & (1 << (v % 64)) != 0 {
                        set_bit(&mut self.tmr, v, false);
                        self.eoi_broadcast = Some(v);
                    }
                }
                None => self.unmatched_eois = self.unmatched_eois.saturating_add(1),
            },
            REG_SVR => self.svr = low & 0x11FF,
            REG_ESR => self.esr = 0,
            REG_LVT_CMCI => {}
            r if lvt_index(r).is_some() => {
                let i = lvt_index(r).unwrap_or(0);
                let mask = if i == 0 { 0x7_10FF } else { 0x1_17FF };
                let old_mode = self.timer_mode();
                self.lvt[i] = low & mask;
                if i == 0 && self.timer_mode() != old_mode {
                    self.deadline = 0;
                    self.tsc_deadline = 0;
                    self.timer_init = 0;
                }
            }
            REG_TIMER_INIT => {
                if self.timer_mode() == TIMER_TSC_DEADLINE {
                    return true;
                }
                self.timer_init = low;
                self.timer_start = now;
                self.deadline = if low == 0 {
                    0
                } else {
                    now.saturating_add(self.bus_ticks_to_tsc(u64::from(low)))
                        .max(1)
                };
            }
            REG_TIMER_DIV => self.timer_div_reg = low & 0b1011,
            _ => return false,
        }
        true
    }

    fn write_icr(&mut self, value: u64) -> Result<Option<Ipi>, GpFault> {
        let vector = (value & 0xFF) as u8;
        let mode = (value >> 8) & 0b111;
        let logical = value & (1 << 11) != 0;
        let dest_field = if self.x2apic_mode() {
            (value >> 32) as u32
        } else {
            (value >> 56) as u32
        };
        let dest = match (value >> 18) & 0b11 {
            0 if logical => Dest::Logical(dest_field),
            0 => Dest::Physical(dest_field),
            1 => Dest::SelfOnly,
            2 => Dest::AllIncludingSelf,
            _ => Dest::AllExcludingSelf,
        };
        let ipi = match mode {
            0 | 1 => Some(Ipi::Fixed { dest, vector }),
            4 => Some(Ipi::Nmi { dest }),
            // INIT level de-assert (level bit clear, trigger level) does nothing on x2APICs.
            5 if value & (1 << 14) == 0 && value & (1 << 15) != 0 => None,
            5 => Some(Ipi::Init { dest }),
            6 => Some(Ipi::Sipi { dest, vector }),
            _ => return Err(GpFault),
        };
        // Delivery is immediate, so the status bit (12) never reads busy.
        self.icr = value & !(1 << 12);
        if !self.x2apic_mode() {
            // Only what xAPIC's ICR holds: the destination byte of the high half.
            self.icr &= 0xFF00_0000_000C_CFFF;
        }
        Ok(ipi)
    }
}

/// The x2APIC logical id the hardware derives from an APIC id: cluster (id / 16) in the high
/// half, one bit (id % 16) in the low.
pub const fn logical_id(apic_id: u32) -> u32 {
    ((apic_id >> 4) << 16) | (1 << (apic_id & 0xF))
}

/// Whether an x2APIC logical destination (an ICR's, or an IOAPIC entry's) names the APIC with
/// this id.
pub fn logical_match(dest: u32, apic_id: u32) -> bool {
    let ldr = logical_id(apic_id);
    (dest >> 16) == (ldr >> 16) && (dest & ldr & 0xFFFF) != 0
}

fn word(set: &[u64; 4], idx: u32) -> u32 {
    let i = idx as usize;
    let w = set[(i / 2).min(3)];
    if i.is_multiple_of(2) {
        w as u32
    } else {
        (w >> 32) as u32
    }
}

mod pending;
#[cfg(test)]
mod tests;
mod xapic;
pub use pending::Pending;
pub use xapic::Addressing;
