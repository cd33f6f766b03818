//! The IOAPIC the Hyper-V and hardware-emulation faces' ACPI tables describe (at 0xFEC00000,
//! GSIs 0-23): ISA devices' edge-triggered lines (COM1 on IRQ 4) and PCI devices' level-
//! triggered INTx lines, with the remote-IRR handshake (a level interrupt is not sent again
//! until the local APIC broadcasts its EOI, and is sent again then if the line is still high).
//! Pure register state; the exit loop feeds it MMIO accesses, line changes and EOIs and
//! delivers what it returns.

pub const BASE: u64 = 0xFEC0_0000;
pub const PINS: usize = 24;
const REG_SELECT: u64 = 0x00;
const REG_WINDOW: u64 = 0x10;
const REG_EOI: u64 = 0x40;
/// Version 0x11 with 24 redirection entries (max index 23 in bits 16-23).
const VERSION: u32 = 0x0017_0011;
const MASKED: u64 = 1 << 16;
const LEVEL: u64 = 1 << 15;
const REMOTE_IRR: u64 = 1 << 14;
const DELIVERY_STATUS: u64 = 1 << 12;
const RO_BITS: u64 = REMOTE_IRR | DELIVERY_STATUS;

/// An interrupt to hand to the local APIC(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub vector: u8,
    /// Physical destination APIC id, or a logical destination when `logical`.
    pub dest: u32,
    pub logical: bool,
    pub level: bool,
}

pub struct IoApic {
    id: u32,
    select: u32,
    redir: [u64; PINS],
    line: [bool; PINS],
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    pub const fn new() -> Self {
        Self {
            id: 0,
            select: 0,
            redir: [MASKED; PINS],
            line: [false; PINS],
        }
    }

    /// A 32-bit read at `offset` inside the IOAPIC page.
    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            REG_SELECT => self.select,
            REG_WINDOW => self.read_reg(self.select),
            _ => 0,
        }
    }

    /// A 32-bit write; a change of a pin's routing can deliver an interrupt already asserted.
    pub fn write(&mut self, offset: u64, value: u32) -> Option<Delivery> {
        match offset {
            REG_SELECT => self.select = value & 0xFF,
            REG_WINDOW => return self.write_reg(self.select, value),
            // Directed EOI (version 0x20 only): nothing level-triggered is modelled.
            REG_EOI => {}
            _ => {}
        }
        None
    }

    fn read_reg(&self, reg: u32) -> u32 {
        match reg {
            0 => self.id << 24,
            1 => VERSION,
            2 => self.id << 24,
            r @ 0x10..=0x3F => {
                let e = self.redir[((r - 0x10) / 2) as usize];
                if r % 2 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, reg: u32, value: u32) -> Option<Delivery> {
        match reg {
            0 => self.id = (value >> 24) & 0xF,
            r @ 0x10..=0x3F => {
                let pin = ((r - 0x10) / 2) as usize;
                let old = self.redir[pin];
                let new = if r % 2 == 0 {
                    (old & 0xFFFF_FFFF_0000_0000) | u64::from(value)
                } else {
                    (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
                };
                self.redir[pin] = (new & !RO_BITS) | (old & RO_BITS);
                // Unmasking a pin whose line is high delivers it, as on real parts.
                if old & MASKED != 0 && new & MASKED == 0 && self.line[pin] {
                    return self.route(pin);
                }
            }
            _ => {}
        }
        None
    }

    /// Sets the level of input `pin`: a rising edge on an unmasked edge pin is delivered; a
    /// high level pin is delivered unless its last delivery awaits an EOI.
    pub fn set_line(&mut self, pin: usize, high: bool) -> Option<Delivery> {
        let was = core::mem::replace(self.line.get_mut(pin)?, high);
        let level = self.redir[pin] & LEVEL != 0;
        if high && (!was || level) {
            self.route(pin)
        } else {
            None
        }
    }

    /// The local APIC's EOI broadcast for `vector`: level pins with that vector leave remote
    /// IRR, and those whose line is still high are delivered again.
    pub fn eoi(&mut self, vector: u8) -> heapless::Vec<Delivery, PINS> {
        let mut again = heapless::Vec::new();
        for pin in 0..PINS {
            let e = self.redir[pin];
            if e & (LEVEL | REMOTE_IRR) == LEVEL | REMOTE_IRR && e as u8 == vector {
                self.redir[pin] &= !REMOTE_IRR;
                if self.line[pin]
                    && let Some(d) = self.route(pin)
                {
                    let _ = again.push(d);
                }
            }
        }
        again
    }

    fn route(&mut self, pin: usize) -> Option<Delivery> {
        let e = *self.redir.get(pin)?;
        // Only fixed and lowest-priority delivery of vectors 16+ is modelled.
        let mode = (e >> 8) & 7;
        let vector = (e & 0xFF) as u8;
        if e & MASKED != 0 || mode > 1 || vector < 16 {
            return None;
        }
        let level = e & LEVEL != 0;
        if level {
            if e & REMOTE_IRR != 0 {
                return None;
            }
            self.redir[pin] |= REMOTE_IRR;
        }
        Some(Delivery {
            vector,
            dest: (e >> 56) as u32,
            logical: e & (1 << 11) != 0,
            level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(io: &mut IoApic, pin: u32, low: u32, high: u32) -> Option<Delivery> {
        io.write(REG_SELECT, 0x10 + 2 * pin);
        io.write(REG_WINDOW, low);
        io.write(REG_SELECT, 0x11 + 2 * pin);
        io.write(REG_WINDOW, high)
    }

    #[test]
    fn identifies_itself() {
        let mut io = IoApic::new();
        io.write(REG_SELECT, 1);
        assert_eq!(io.read(REG_WINDOW), VERSION);
        io.write(REG_SELECT, 0);
        io.write(REG_WINDOW, 3 << 24);
        assert_eq!(io.read(REG_WINDOW), 3 << 24);
        assert_eq!(io.read(REG_SELECT), 0);
    }

    #[test]
    fn edges_on_unmasked_pins_are_delivered() {
        let mut io = IoApic::new();
        assert_eq!(io.set_line(4, true), None, "masked at reset");
        assert_eq!(io.set_line(4, false), None);
        program(&mut io, 4, 0x24, 1 << 24);
        assert_eq!(
            io.set_line(4, true),
            Some(Delivery {
                vector: 0x24,
                dest: 1,
                logical: false,
                level: false
            })
        );
        assert_eq!(io.set_line(4, true), None, "no edge while it stays high");
        io.set_line(4, false);
        assert!(io.set_line(4, true).is_some());
        assert_eq!(io.set_line(99, true), None);
    }

    #[test]
    fn unmasking_a_raised_line_delivers_and_bad_entries_do_not() {
        let mut io = IoApic::new();
        io.set_line(4, true);
        assert_eq!(
            program(&mut io, 4, 0x30, 0),
            None,
            "low half written while masked... then high half"
        );
        let mut io = IoApic::new();
        io.write(REG_SELECT, 0x11 + 8);
        io.write(REG_WINDOW, 0);
        io.set_line(4, true);
        io.write(REG_SELECT, 0x10 + 8);
        assert!(
            io.write(REG_WINDOW, 0x31).is_some(),
            "unmask with the line high"
        );
        program(&mut io, 5, 0x05, 0);
        assert_eq!(
            io.set_line(5, true),
            None,
            "vectors below 16 are never delivered"
        );
        program(&mut io, 6, 0x40 | (4 << 8), 0);
        assert_eq!(io.set_line(6, true), None, "NMI delivery is not modelled");
    }

    #[test]
    fn level_pins_wait_for_the_eoi_and_fire_again_while_high() {
        let mut io = IoApic::new();
        program(&mut io, 17, 0x51 | (1 << 15), 0);
        let d = io.set_line(17, true).unwrap();
        assert!(d.level && d.vector == 0x51);
        io.write(REG_SELECT, 0x10 + 34);
        assert_ne!(io.read(REG_WINDOW) & (1 << 14), 0, "remote IRR set");
        // Still high, still in service: nothing more.
        assert_eq!(io.set_line(17, true), None);
        // An EOI of another vector changes nothing; its own re-delivers the high line.
        assert!(io.eoi(0x52).is_empty());
        assert_eq!(io.eoi(0x51).as_slice(), &[d]);
        // The device lowered the line: the next EOI ends it.
        io.set_line(17, false);
        assert!(io.eoi(0x51).is_empty());
        io.write(REG_SELECT, 0x10 + 34);
        assert_eq!(io.read(REG_WINDOW) & (1 << 14), 0);
        assert_eq!(io.set_line(17, true), Some(d));
        // Remote IRR cannot be written by the guest.
        program(&mut io, 17, 0x51 | (1 << 15), 0);
        io.write(REG_SELECT, 0x10 + 34);
        assert_ne!(io.read(REG_WINDOW) & (1 << 14), 0);
    }
}
