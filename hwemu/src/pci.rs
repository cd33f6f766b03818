//! One PCI function as its driver sees it: a type-0 configuration header (identity, command,
//! BARs that size and move as firmware and the OS program them, the interrupt pin) and the
//! capabilities the devices here need — MSI-X with its table and pending bits, and MSI — plus
//! the decoding of the two configuration mechanisms (ports CF8/CFC and ECAM).
//!
//! The configuration space is computed from typed state on each read rather than kept as a
//! byte array, so that a guest write can only change the bits that are writable on hardware.

/// PCI configuration-space address of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// A configuration access: which function, and the byte offset in its space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigAccess {
    pub bdf: Bdf,
    pub offset: u16,
}

/// Mechanism #1: the address latched in port CF8 and the byte of CFC..CFF accessed. `None`
/// when the enable bit is clear (the access goes nowhere).
pub fn type1(address: u32, data_port_byte: u8) -> Option<ConfigAccess> {
    if address & (1 << 31) == 0 {
        return None;
    }
    Some(ConfigAccess {
        bdf: Bdf {
            bus: (address >> 16) as u8,
            device: ((address >> 11) & 0x1F) as u8,
            function: ((address >> 8) & 0x7) as u8,
        },
        offset: (address & 0xFC) as u16 + u16::from(data_port_byte & 3),
    })
}

/// PCI Express enhanced configuration (ECAM): 4 KiB per function from the window's base.
pub fn ecam(offset: u64) -> ConfigAccess {
    ConfigAccess {
        bdf: Bdf {
            bus: (offset >> 20) as u8,
            device: ((offset >> 15) & 0x1F) as u8,
            function: ((offset >> 12) & 0x7) as u8,
        },
        offset: (offset & 0xFFF) as u16,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory, non-prefetchable.
    Mem32,
    /// 64-bit memory, non-prefetchable; takes this BAR slot and the next.
    Mem64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarSpec {
    pub kind: BarKind,
    /// A power of two, at least 4 KiB (so that a BAR never shares a page with another).
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixSpec {
    /// Table entries (at most [`MAX_MSIX`]).
    pub vectors: u16,
    /// The BAR holding the table at offset 0 and the pending bits at [`MSIX_PBA_OFFSET`].
    pub bar: u8,
}

/// What a function is, fixed when the VM is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass, programming interface.
    pub class: [u8; 3],
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    pub bars: [Option<BarSpec>; 6],
    pub msix: Option<MsixSpec>,
    pub msi: bool,
    /// 1 = INTA#; 0 = no legacy interrupt.
    pub interrupt_pin: u8,
}

impl FunctionSpec {
    /// A host bridge: no BARs, no interrupts.
    pub const fn host_bridge(vendor: u16, device: u16) -> Self {
        FunctionSpec {
            vendor,
            device,
            class: [0x06, 0x00, 0x00],
            revision: 0,
            subsystem_vendor: vendor,
            subsystem: device,
            bars: [None; 6],
            msix: None,
            msi: false,
            interrupt_pin: 0,
        }
    }
}

pub const MAX_MSIX: usize = 32;
pub const MSIX_PBA_OFFSET: u64 = 0x800;
/// Bytes of the BAR that holds an MSI-X table and its pending bits.
pub const MSIX_BAR_SIZE: u64 = 0x1000;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const COMMAND_WRITABLE: u16 = COMMAND_IO
    | COMMAND_MEMORY
    | COMMAND_BUS_MASTER
    | (1 << 6) // parity error response
    | (1 << 8) // SERR#
    | COMMAND_INTX_DISABLE;
const STATUS_INTX: u16 = 1 << 3;
const STATUS_CAP_LIST: u16 = 1 << 4;

const CAP_MSIX: u8 = 0x11;
const CAP_MSI: u8 = 0x05;
const MSIX_CAP_AT: u16 = 0x40;
const MSI_CAP_AT: u16 = 0x50;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;
const MSI_ENABLE: u16 = 1;
/// 64-bit address capable; one message.
const MSI_64BIT: u16 = 1 << 7;
const MSIX_ENTRY_MASKED: u32 = 1;

/// An MSI or MSI-X message as the function writes it to the APIC's address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Message {
    pub address: u64,
    pub data: u32,
}

/// What an MSI message asks of the local APICs (Intel SDM "Message Signalled Interrupts").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiTarget {
    pub vector: u8,
    /// Destination APIC id (8 bits, or 32 with the extended bits the address can carry).
    pub dest: u32,
    pub logical: bool,
}

impl Message {
    /// `None` for a message that is not an interrupt a guest could mean: outside the APIC's
    /// 0xFEExxxxx window, or a delivery mode other than fixed / lowest priority.
    pub fn target(&self) -> Option<MsiTarget> {
        if self.address >> 20 != 0xFEE {
            return None;
        }
        let mode = (self.data >> 8) & 0x7;
        if mode > 1 {
            return None;
        }
        Some(MsiTarget {
            vector: self.data as u8,
            dest: ((self.address >> 12) & 0xFF) as u32,
            logical: self.address & (1 << 2) != 0,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MsixEntry {
    message: Message,
    control: u32,
}

/// How the function's interrupt for one vector goes out, after [`Function::signal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Send this message now.
    Message(Message),
    /// The vector is masked: its pending bit is set and it is sent at unmask.
    Held,
    /// Neither MSI nor MSI-X is on: the device's INTx line carries it (level, from the
    /// device's own state), unless the command register disables INTx.
    Intx,
    /// INTx is disabled too: nothing is sent (the driver polls, or is broken).
    Nothing,
}

/// One function's configuration state.
#[derive(Clone, Debug)]
pub struct Function {
    spec: FunctionSpec,
    command: u16,
    /// Programmed BAR values (the address bits only); the upper half of a 64-bit BAR is in
    /// the next slot.
    bars: [u32; 6],
    interrupt_line: u8,
    msix_control: u16,
    msix: heapless::Vec<MsixEntry, MAX_MSIX>,
    msix_pending: u32,
    msi_control: u16,
    msi: Message,
    /// The device's INTx line, for the status bit.
    intx: bool,
}

impl Function {
    /// The function at reset; `bar_addresses` are where firmware placed the BARs (0 = leave
    /// unassigned for the OS).
    pub fn new(spec: FunctionSpec, bar_addresses: [u64; 6]) -> Self {
        let mut msix = heapless::Vec::new();
        let n = spec
            .msix
            .map_or(0, |m| usize::from(m.vectors).min(MAX_MSIX));
        for _ in 0..n {
            let _ = msix.push(MsixEntry {
                message: Message::default(),
                control: MSIX_ENTRY_MASKED,
            });
        }
        let mut f = Function {
            spec,
            command: 0,
            bars: [0; 6],
            interrupt_line: 0xFF,
            msix_control: 0,
            msix,
            msix_pending: 0,
            msi_control: 0,
            msi: Message::default(),
            intx: false,
        };
        for (i, &addr) in bar_addresses.iter().enumerate() {
            if let Some(bar) = spec.bars.get(i).copied().flatten() {
                f.bars[i] = addr as u32 & !(bar.size.min(1 << 31) as u32 - 1);
                if bar.kind == BarKind::Mem64 && i + 1 < 6 {
                    f.bars[i + 1] = (addr >> 32) as u32;
                }
            }
        }
        f
    }

    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    pub fn command(&self) -> u16 {
        self.command
    }

    /// Where BAR `index` decodes now, if memory decoding is on and the BAR is placed.
    pub fn bar_range(&self, index: usize) -> Option<core::ops::Range<u64>> {
        let bar = self.spec.bars.get(index).copied().flatten()?;
        if self.command & COMMAND_MEMORY == 0 {
            return None;
        }
        let low = u64::from(self.bars[index] & !0xF);
        let base = match bar.kind {
            BarKind::Mem32 => low,
            BarKind::Mem64 => low | u64::from(*self.bars.get(index + 1)?) << 32,
        };
        let base = base & !(bar.size - 1);
        // An unplaced BAR, or one the OS is sizing (all ones), decodes nothing.
        if base == 0 || base.checked_add(bar.size).is_none() || base >= 1 << 52 {
            return None;
        }
        Some(base..base + bar.size)
    }

    /// Which BAR (if any) decodes `gpa`, and the offset in it.
    pub fn bar_at(&self, gpa: u64) -> Option<(usize, u64)> {
        (0..6).find_map(|i| {
            let r = self.bar_range(i)?;
            r.contains(&gpa).then(|| (i, gpa - r.start))
        })
    }

    fn bar_flags(kind: BarKind) -> u32 {
        match kind {
            BarKind::Mem32 => 0,
            BarKind::Mem64 => 0b100,
        }
    }

    /// The BAR register at `index` as read: address bits and type bits, or the high half of
    /// a 64-bit BAR.
    fn bar_register(&self, index: usize) -> u32 {
        match self.spec.bars[index] {
            Some(b) => {
                let mask = !((b.size.min(1 << 31) as u32) - 1);
                (self.bars[index] & mask) | Self::bar_flags(b.kind)
            }
            None if index > 0
                && self.spec.bars[index - 1].map(|b| b.kind) == Some(BarKind::Mem64) =>
            {
                let size = self.spec.bars[index - 1].map_or(0, |b| b.size);
                let mask = !((size >> 32).max(1) as u32 - 1);
                self.bars[index] & mask
            }
            None => 0,
        }
    }

    fn caps(&self) -> (Option<u16>, Option<u16>) {
        let msix = self.spec.msix.map(|_| MSIX_CAP_AT);
        let msi = self.spec.msi.then_some(MSI_CAP_AT);
        (msix, msi)
    }

    fn first_cap(&self) -> u8 {
        match self.caps() {
            (Some(a), _) | (None, Some(a)) => a as u8,
            (None, None) => 0,
        }
    }

    fn dword(&self, at: u16) -> u32 {
        let s = &self.spec;
        let (msix_at, msi_at) = self.caps();
        let status = if self.first_cap() != 0 {
            STATUS_CAP_LIST
        } else {
            0
        } | if self.intx { STATUS_INTX } else { 0 };
        match at {
            0x00 => u32::from(s.vendor) | u32::from(s.device) << 16,
            0x04 => u32::from(self.command) | u32::from(status) << 16,
            0x08 => {
                u32::from(s.revision)
                    | u32::from(s.class[2]) << 8
                    | u32::from(s.class[1]) << 16
                    | u32::from(s.class[0]) << 24
            }
            // Cache line size, latency timer: zero; header type 0, single function.
            0x0C => 0,
            0x10..=0x24 => self.bar_register(usize::from((at - 0x10) / 4)),
            0x2C => u32::from(s.subsystem_vendor) | u32::from(s.subsystem) << 16,
            0x34 => u32::from(self.first_cap()),
            0x3C => u32::from(self.interrupt_line) | u32::from(s.interrupt_pin) << 8,
            a if Some(a) == msix_at => {
                let next = msi_at.unwrap_or(0) as u32;
                let size = u32::from(self.msix.len().saturating_sub(1) as u16);
                u32::from(CAP_MSIX) | next << 8 | (u32::from(self.msix_control) | size) << 16
            }
            a if msix_at.is_some_and(|m| a == m + 4) => {
                u32::from(self.spec.msix.map_or(0, |m| m.bar))
            }
            a if msix_at.is_some_and(|m| a == m + 8) => {
                MSIX_PBA_OFFSET as u32 | u32::from(self.spec.msix.map_or(0, |m| m.bar))
            }
            a if Some(a) == msi_at => {
                u32::from(CAP_MSI) | u32::from(MSI_64BIT | self.msi_control) << 16
            }
            a if msi_at.is_some_and(|m| a == m + 4) => self.msi.address as u32,
            a if msi_at.is_some_and(|m| a == m + 8) => (self.msi.address >> 32) as u32,
            a if msi_at.is_some_and(|m| a == m + 12) => self.msi.data & 0xFFFF,
            // Everything else, the extended space included, reads as zero: no further
            // capabilities.
            _ => 0,
        }
    }

    /// A configuration read of `size` bytes (1, 2 or 4) at `offset`; accesses that cross a
    /// dword read the bytes of the first one only, as most host bridges split nothing.
    pub fn config_read(&self, offset: u16, size: u8) -> u32 {
        let dword = self.dword(offset & !3);
        let shift = 8 * u32::from(offset & 3);
        let value = dword >> shift;
        match size {
            1 => value & 0xFF,
            2 => value & 0xFFFF,
            _ => value,
        }
    }

    /// A configuration write of `size` bytes at `offset`. Returns the messages that became
    /// due because the write unmasked MSI-X vectors with their pending bit set.
    pub fn config_write(&mut self, offset: u16, size: u8, value: u32) -> PendingMessages {
        let at = offset & !3;
        let shift = 8 * u32::from(offset & 3);
        let byte_mask: u32 = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => u32::MAX,
        } << shift;
        let old = self.dword(at);
        let new = (old & !byte_mask) | ((value << shift) & byte_mask);
        let (msix_at, msi_at) = self.caps();
        match at {
            0x04 if byte_mask & 0xFFFF != 0 => self.command = new as u16 & COMMAND_WRITABLE,
            0x10..=0x24 => {
                self.bars[usize::from((at - 0x10) / 4)] = new;
            }
            0x3C => self.interrupt_line = new as u8,
            a if Some(a) == msix_at && byte_mask & 0xFFFF_0000 != 0 => {
                self.msix_control = (new >> 16) as u16 & (MSIX_ENABLE | MSIX_FUNCTION_MASK);
                return self.release_pending();
            }
            a if Some(a) == msi_at && byte_mask & 0xFFFF_0000 != 0 => {
                self.msi_control = (new >> 16) as u16 & MSI_ENABLE;
            }
            a if msi_at.is_some_and(|m| a == m + 4) => {
                self.msi.address = (self.msi.address & !0xFFFF_FFFF) | u64::from(new & !3);
            }
            a if msi_at.is_some_and(|m| a == m + 8) => {
                self.msi.address = (self.msi.address & 0xFFFF_FFFF) | u64::from(new) << 32;
            }
            a if msi_at.is_some_and(|m| a == m + 12) => self.msi.data = new & 0xFFFF,
            _ => {}
        }
        PendingMessages::default()
    }

    fn msix_enabled(&self) -> bool {
        self.msix_control & MSIX_ENABLE != 0
    }

    fn msix_masked(&self, vector: usize) -> bool {
        self.msix_control & MSIX_FUNCTION_MASK != 0
            || self
                .msix
                .get(vector)
                .is_none_or(|e| e.control & MSIX_ENTRY_MASKED != 0)
    }

    /// The device raises its interrupt `vector` (an MSI-X table index; MSI and INTx have one).
    pub fn signal(&mut self, vector: u16) -> Signal {
        let v = usize::from(vector);
        if self.msix_enabled() {
            if v >= self.msix.len() {
                return Signal::Nothing;
            }
            if self.msix_masked(v) {
                self.msix_pending |= 1 << v;
                return Signal::Held;
            }
            return Signal::Message(self.msix[v].message);
        }
        if self.msi_control & MSI_ENABLE != 0 {
            return Signal::Message(self.msi);
        }
        if self.command & COMMAND_INTX_DISABLE != 0 || self.spec.interrupt_pin == 0 {
            return Signal::Nothing;
        }
        Signal::Intx
    }

    /// Records the device's INTx line (for the status register) and says whether the pin is
    /// asserted on the bus (not disabled by the command register, not superseded by MSI).
    pub fn set_intx(&mut self, level: bool) -> bool {
        self.intx = level;
        level
            && self.spec.interrupt_pin != 0
            && self.command & COMMAND_INTX_DISABLE == 0
            && !self.msix_enabled()
            && self.msi_control & MSI_ENABLE == 0
    }

    /// A read of the MSI-X BAR (table, then pending bits); dword or qword.
    pub fn msix_read(&self, offset: u64, size: u8) -> u64 {
        if offset >= MSIX_PBA_OFFSET {
            let v = if offset & !7 == MSIX_PBA_OFFSET {
                u64::from(self.msix_pending)
            } else {
                0
            };
            return narrow(v >> (8 * (offset & 7)), size);
        }
        let Some(e) = self.msix.get((offset / 16) as usize) else {
            return 0;
        };
        let words = [
            e.message.address as u32,
            (e.message.address >> 32) as u32,
            e.message.data,
            e.control,
        ];
        let w = ((offset % 16) / 4) as usize;
        let lo = u64::from(words[w]);
        let v = if size == 8 && w.is_multiple_of(2) {
            lo | u64::from(words[w + 1]) << 32
        } else {
            lo
        };
        narrow(v, size)
    }

    /// A write of the MSI-X table (the pending bits are read-only); an unmask sends what was
    /// held.
    pub fn msix_write(&mut self, offset: u64, size: u8, value: u64) -> PendingMessages {
        if offset >= MSIX_PBA_OFFSET || !(size == 4 || size == 8) || !offset.is_multiple_of(4) {
            return PendingMessages::default();
        }
        let v = (offset / 16) as usize;
        let Some(e) = self.msix.get_mut(v) else {
            return PendingMessages::default();
        };
        let mut put = |w: u64, value: u32| match w {
            0 => e.message.address = (e.message.address & !0xFFFF_FFFF) | u64::from(value & !3),
            1 => e.message.address = (e.message.address & 0xFFFF_FFFF) | u64::from(value) << 32,
            2 => e.message.data = value,
            _ => e.control = value & MSIX_ENTRY_MASKED,
        };
        let w = (offset % 16) / 4;
        put(w, value as u32);
        if size == 8 && w.is_multiple_of(2) {
            put(w + 1, (value >> 32) as u32);
        }
        self.release_pending()
    }

    /// Pending vectors that are no longer masked: their bits clear, their messages go out.
    fn release_pending(&mut self) -> PendingMessages {
        let mut out = PendingMessages::default();
        if !self.msix_enabled() {
            return out;
        }
        for v in 0..self.msix.len() {
            if self.msix_pending & (1 << v) != 0 && !self.msix_masked(v) {
                self.msix_pending &= !(1 << v);
                let _ = out.0.push(self.msix[v].message);
            }
        }
        out
    }

    /// Back to the state at power-on, BARs where firmware put them.
    pub fn reset(&mut self, bar_addresses: [u64; 6]) {
        *self = Function::new(self.spec, bar_addresses);
    }
}

/// Messages released by one access (at most one per MSI-X vector).
#[derive(Clone, Debug, Default)]
pub struct PendingMessages(pub heapless::Vec<Message, MAX_MSIX>);

fn narrow(v: u64, size: u8) -> u64 {
    match size {
        1 => v & 0xFF,
        2 => v & 0xFFFF,
        4 => v & 0xFFFF_FFFF,
        _ => v,
    }
}

#[cfg(test)]
mod tests;
