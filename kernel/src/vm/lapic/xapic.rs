//! xAPIC mode: the registers through the APIC's 4 KiB MMIO page (register N at offset N × 16,
//! 32 bits wide), IA32_APIC_BASE's mode switches (SDM Vol. 3 "x2APIC state transitions"), and
//! how an APIC in either mode matches a destination, published for senders on other pCPUs.

use super::*;

/// The address bits of IA32_APIC_BASE (the page base, below a 52-bit physical width).
const BASE_ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
/// Set once a vCPU has published its addressing (before that it is x2APIC, id = index).
const PUBLISHED: u64 = 1 << 63;

/// How one APIC recognises destinations, as senders on other pCPUs must see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    X2apic {
        id: u32,
    },
    /// xAPIC, flat logical model: a logical destination is a bit mask over 8 APICs.
    Flat {
        id: u8,
        ldr: u8,
    },
    /// xAPIC, cluster logical model: cluster in the high nibble, members in the low one.
    Cluster {
        id: u8,
        ldr: u8,
    },
    /// Globally disabled: it accepts nothing.
    Off,
}

impl Addressing {
    pub const fn pack(self) -> u64 {
        let (mode, id, ldr) = match self {
            Addressing::X2apic { id } => (0, id, 0),
            Addressing::Flat { id, ldr } => (1, id as u32, ldr),
            Addressing::Cluster { id, ldr } => (2, id as u32, ldr),
            Addressing::Off => (3, 0, 0),
        };
        PUBLISHED | (mode as u64) << 40 | (ldr as u64) << 32 | id as u64
    }

    /// `raw` as published by vCPU `index`; an APIC that never published is in x2APIC mode
    /// with its id at reset.
    pub fn unpack(raw: u64, index: u32) -> Self {
        if raw & PUBLISHED == 0 {
            return Addressing::X2apic { id: index };
        }
        let (id, ldr) = (raw as u32, (raw >> 32) as u8);
        match (raw >> 40) & 3 {
            0 => Addressing::X2apic { id },
            1 => Addressing::Flat { id: id as u8, ldr },
            2 => Addressing::Cluster { id: id as u8, ldr },
            _ => Addressing::Off,
        }
    }

    /// A physical destination: the APIC id, or the mode's broadcast.
    pub fn physical(self, dest: u32) -> bool {
        match self {
            Addressing::X2apic { id } => dest == id || dest == u32::MAX,
            Addressing::Flat { id, .. } | Addressing::Cluster { id, .. } => {
                dest == u32::from(id) || dest == 0xFF
            }
            Addressing::Off => false,
        }
    }

    /// A logical destination (xAPIC destinations are 8 bits).
    pub fn logical(self, dest: u32) -> bool {
        let d = dest as u8;
        match self {
            Addressing::X2apic { id } => logical_match(dest, id),
            Addressing::Flat { ldr, .. } => d & ldr != 0,
            Addressing::Cluster { ldr, .. } => d >> 4 == ldr >> 4 && d & ldr & 0xF != 0,
            Addressing::Off => false,
        }
    }
}

impl VLapic {
    /// An APIC as a PC's firmware leaves it: enabled, in xAPIC mode, at the default base.
    pub fn new_xapic(id: u32, bsp: bool, tsc_hz: u64, bus_hz: u64) -> Self {
        let mut a = Self::new(id, bsp, tsc_hz, bus_hz);
        a.base &= !APIC_BASE_EXTD;
        a.ldr = 0;
        a
    }

    pub fn x2apic_mode(&self) -> bool {
        self.base & (APIC_BASE_EN | APIC_BASE_EXTD) == APIC_BASE_EN | APIC_BASE_EXTD
    }

    fn xapic_mode(&self) -> bool {
        self.base & (APIC_BASE_EN | APIC_BASE_EXTD) == APIC_BASE_EN
    }

    /// The guest-physical page the registers decode at, while in xAPIC mode.
    pub fn mmio_page(&self) -> Option<u64> {
        self.xapic_mode().then_some(self.base & BASE_ADDRESS)
    }

    pub fn addressing(&self) -> Addressing {
        if self.x2apic_mode() {
            Addressing::X2apic { id: self.id }
        } else if !self.xapic_mode() {
            Addressing::Off
        } else if self.dfr >> 28 == 0 {
            Addressing::Cluster {
                id: self.id as u8,
                ldr: (self.ldr >> 24) as u8,
            }
        } else {
            Addressing::Flat {
                id: self.id as u8,
                ldr: (self.ldr >> 24) as u8,
            }
        }
    }

    /// A write of IA32_APIC_BASE. Allowed: xAPIC → x2APIC, either → disabled, disabled →
    /// xAPIC, and moving the base; x2APIC → xAPIC, disabled → x2APIC, EXTD without EN and
    /// reserved bits fault as on hardware. The BSP flag is the platform's.
    pub(super) fn set_base(&mut self, value: u64) -> Result<(), GpFault> {
        let writable = APIC_BASE_EN | APIC_BASE_EXTD | BASE_ADDRESS;
        if value & !(writable | APIC_BASE_BSP) != 0 {
            return Err(GpFault);
        }
        let (en, extd) = (value & APIC_BASE_EN != 0, value & APIC_BASE_EXTD != 0);
        let (was_en, was_extd) = (
            self.base & APIC_BASE_EN != 0,
            self.base & APIC_BASE_EXTD != 0,
        );
        match (was_en, was_extd, en, extd) {
            (_, _, false, true) => return Err(GpFault),
            (true, true, true, false) | (false, _, true, true) => return Err(GpFault),
            (true, false, true, true) => self.ldr = logical_id(self.id),
            (true, _, false, false) => {
                // Disabling resets the APIC; only its id, clock and counters survive.
                let bsp = self.base & APIC_BASE_BSP != 0;
                let mut fresh = Self::new_xapic(self.id, bsp, 1, 1);
                fresh.tsc_per_bus_tick_num = self.tsc_per_bus_tick_num;
                fresh.tsc_per_bus_tick_den = self.tsc_per_bus_tick_den;
                fresh.unmatched_eois = self.unmatched_eois;
                *self = fresh;
            }
            _ => {}
        }
        self.base = (self.base & APIC_BASE_BSP) | (value & writable);
        Ok(())
    }

    /// A read of the MMIO page at `offset`; reserved registers and the unused bytes between
    /// registers read zero.
    pub fn mmio_read(&self, offset: u64, size: u8, now: u64) -> u64 {
        let reg = (offset >> 4) as u32 & 0xFF;
        if offset & 0xF >= 4 {
            return 0;
        }
        let v = match reg {
            REG_ID => self.id << 24,
            REG_LDR => self.ldr,
            REG_DFR => self.dfr,
            REG_ICR => self.icr as u32,
            0x31 => (self.icr >> 32) as u32,
            r => self.read_common(r, now).unwrap_or(0),
        };
        let v = u64::from(v >> (8 * (offset & 3)));
        match size {
            1 => v & 0xFF,
            2 => v & 0xFFFF,
            _ => v,
        }
    }

    /// A write of the MMIO page. Only aligned 32-bit stores reach a register (the SDM leaves
    /// the others undefined; they are dropped). A reserved register sets the ESR's "illegal
    /// register address" bit, as hardware does.
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64, now: u64) -> Effect {
        if offset & 0xF != 0 || size < 4 {
            return Effect::None;
        }
        let low = value as u32;
        match (offset >> 4) as u32 & 0xFF {
            REG_LDR => self.ldr = low & 0xFF00_0000,
            REG_DFR => self.dfr = low | 0x0FFF_FFFF,
            // The id is fixed by the platform: the MADT, CPUID and routing all use it.
            REG_ID => {}
            0x31 => self.icr = (self.icr & 0xFFFF_FFFF) | u64::from(low & 0xFF00_0000) << 32,
            REG_ICR => {
                let full = (self.icr & !0xFFFF_FFFF) | u64::from(low);
                return match self.write_icr(full) {
                    Ok(Some(ipi)) => Effect::SendIpi(ipi),
                    Ok(None) => Effect::None,
                    Err(_) => {
                        // A reserved delivery mode: "send illegal vector" in the ESR.
                        self.esr |= 1 << 5;
                        Effect::None
                    }
                };
            }
            r => {
                if !self.write_common(r, low, now) {
                    self.esr |= 1 << 7;
                }
            }
        }
        self.written()
    }
}
