//! The synthetic interrupt controller of one virtual processor: its control MSRs, the
//! message page (SIM) slots the hypervisor posts into, and SINT assertion.
//!
//! The guest empties a slot by clearing `message_type` and then writes EOM only if it sees
//! `msg_pending`. So the hypervisor sets `msg_pending` and reads the type in one atomic
//! operation on the slot's first qword (`Host::guest_fetch_or_u64`): either the slot was
//! already free (fill it now) or the guest is certain to see the flag and send EOM. The type
//! is published last, after payload and header.

use virt::personality::Host;
use virt::{Event, GuestMemory};

pub const SINT_COUNT: usize = 16;
pub const PAGE_SIZE: u64 = 4096;
/// Bytes per SIM slot and per SIEF block.
pub const SLOT_SIZE: u64 = 256;
pub const MESSAGE_PAYLOAD_MAX: usize = 240;

/// SINT register bits.
pub mod sint {
    pub const VECTOR: u64 = 0xff;
    pub const MASKED: u64 = 1 << 16;
    pub const AUTO_EOI: u64 = 1 << 17;
    pub const POLLING: u64 = 1 << 18;
    /// Architectural reset value: masked, vector 0.
    pub const RESET: u64 = MASKED;
}

/// Vectors below this are exceptions; a SINT may not name one while unmasked.
pub const FIRST_VALID_VECTOR: u64 = 0x10;

/// Bit 0 of SCONTROL, SIMP, SIEFP (and of most overlay-page MSRs).
pub const ENABLE: u64 = 1;
const GPFN_MASK: u64 = !0xfff;

/// Offsets in a message slot.
mod slot {
    pub const TYPE: u64 = 0;
    pub const PAYLOAD_SIZE: u64 = 4;
    pub const FLAGS: u64 = 5;
    pub const PAYLOAD: u64 = 16;
    /// `message_flags` bit: more messages are queued for this slot; the guest writes EOM.
    pub const FLAG_PENDING: u8 = 1;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Post {
    /// In the slot, SINT asserted.
    Delivered,
    /// The slot holds an unconsumed message; it is flagged pending and the guest will EOM.
    Busy,
    /// SynIC or the message page is disabled, or the page is not guest RAM.
    Unavailable,
}

#[derive(Clone, Copy, Debug)]
pub struct Synic {
    pub scontrol: u64,
    pub siefp: u64,
    pub simp: u64,
    pub sint: [u64; SINT_COUNT],
}

impl Default for Synic {
    fn default() -> Self {
        Synic {
            scontrol: 0,
            siefp: 0,
            simp: 0,
            sint: [sint::RESET; SINT_COUNT],
        }
    }
}

impl Synic {
    pub fn enabled(&self) -> bool {
        self.scontrol & ENABLE != 0
    }

    /// SIEFP/SIMP write. Enabling (or moving) a page clears it, because the guest treats a
    /// fresh page as "no messages, no flags" and stale bytes there would be read as such.
    pub fn write_page_msr(
        current: &mut u64,
        value: u64,
        mem: &dyn GuestMemory,
    ) -> Result<(), Event> {
        let moved = (value & GPFN_MASK) != (*current & GPFN_MASK) || *current & ENABLE == 0;
        if value & ENABLE != 0 && moved {
            clear_page(mem, value & GPFN_MASK).map_err(|_| Event::GP0)?;
        }
        *current = value;
        Ok(())
    }

    /// SINTx write; `index` is checked by the caller's decoding.
    pub fn write_sint(&mut self, index: usize, value: u64) -> Result<(), Event> {
        if value & sint::MASKED == 0 && value & sint::VECTOR < FIRST_VALID_VECTOR {
            return Err(Event::GP0);
        }
        let slot = self.sint.get_mut(index).ok_or(Event::GP0)?;
        *slot = value;
        Ok(())
    }

    /// Interrupts the VP for `sint` as its register says: nothing while SynIC is off, the
    /// SINT is masked (the message or flag stays for later) or in polling mode.
    pub fn assert_sint(&self, vp: u32, index: usize, host: &mut dyn Host) -> bool {
        let Some(&reg) = self.sint.get(index) else {
            return false;
        };
        if !self.enabled() || reg & (sint::MASKED | sint::POLLING) != 0 {
            return false;
        }
        let vector = (reg & sint::VECTOR) as u8;
        host.raise_vector(vp, vector, reg & sint::AUTO_EOI == 0);
        true
    }

    /// The GPA of SINT `index`'s event-flag block in the SIEF page, while SynIC and the page
    /// are enabled.
    pub fn event_flags(&self, index: usize) -> Option<u64> {
        if !self.enabled() || self.siefp & ENABLE == 0 || index >= SINT_COUNT {
            return None;
        }
        Some((self.siefp & GPFN_MASK) + index as u64 * SLOT_SIZE)
    }

    fn message_slot(&self, index: usize) -> Option<u64> {
        if !self.enabled() || self.simp & ENABLE == 0 || index >= SINT_COUNT {
            return None;
        }
        Some((self.simp & GPFN_MASK) + index as u64 * SLOT_SIZE)
    }

    /// Posts a message into slot `index` of this VP's SIM page and asserts the SINT.
    pub fn post(
        &self,
        vp: u32,
        index: usize,
        message_type: u32,
        payload: &[u8],
        mem: &dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Post {
        let Some(base) = self.message_slot(index) else {
            return Post::Unavailable;
        };
        if payload.len() > MESSAGE_PAYLOAD_MAX {
            return Post::Unavailable;
        }
        let pending = u64::from(slot::FLAG_PENDING) << (8 * slot::FLAGS);
        match host.guest_fetch_or_u64(mem, base + slot::TYPE, pending) {
            Ok(old) if old & 0xffff_ffff != 0 => return Post::Busy,
            Ok(_) => {}
            Err(_) => return Post::Unavailable,
        }
        // payload_size, flags (clearing the pending bit set above), reserved, then the 8-byte
        // sender port (none: the hypervisor).
        let mut header = [0u8; 12];
        header[0] = payload.len() as u8;
        let written = mem
            .write(base + slot::PAYLOAD, payload)
            .and_then(|()| mem.write(base + slot::PAYLOAD_SIZE, &header))
            .and_then(|()| mem.write_u32(base + slot::TYPE, message_type));
        if written.is_err() {
            return Post::Unavailable;
        }
        self.assert_sint(vp, index, host);
        Post::Delivered
    }
}

fn clear_page(mem: &dyn GuestMemory, gpa: u64) -> Result<(), virt::MemError> {
    let zeros = [0u8; 512];
    let mut off = 0;
    while off < PAGE_SIZE {
        mem.write(gpa + off, &zeros)?;
        off += zeros.len() as u64;
    }
    Ok(())
}
