//! Synthetic timers: four per VP, counting in reference-counter ticks.
//!
//! A timer is armed when it is enabled with a non-zero count. One-shot timers hold an
//! absolute expiry and disable themselves when they fire; periodic timers hold a period.
//! Direct mode injects `apic_vector` itself (Linux's clockevent, usable before SynIC is set
//! up); message mode posts `HVMSG_TIMER_EXPIRED` into the SINT's SIM slot and, if the slot is
//! busy, keeps the expiry pending until the guest's EOM frees it.

use crate::synic::FIRST_VALID_VECTOR;

pub const STIMER_COUNT: usize = 4;

/// `HVMSG_TIMER_EXPIRED`.
pub const MSG_TIMER_EXPIRED: u32 = 0x8000_0010;
/// `{u32 timer_index; u32 reserved; u64 expiration_time; u64 delivery_time}`.
pub const MSG_TIMER_PAYLOAD: usize = 24;

pub mod config {
    pub const ENABLE: u64 = 1 << 0;
    pub const PERIODIC: u64 = 1 << 1;
    pub const AUTO_ENABLE: u64 = 1 << 3;
    pub const VECTOR_SHIFT: u32 = 4;
    pub const VECTOR: u64 = 0xff << VECTOR_SHIFT;
    pub const DIRECT: u64 = 1 << 12;
    pub const SINTX_SHIFT: u32 = 16;
    pub const SINTX: u64 = 0xf << SINTX_SHIFT;
}

/// What an expiry asks the caller to deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fire {
    Vector(u8),
    /// Post a timer message to this SINT; the expiry time is in `Stimer::pending`.
    Message {
        sint: usize,
    },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stimer {
    pub config: u64,
    pub count: u64,
    /// Next expiry in reference ticks, when armed.
    pub deadline: Option<u64>,
    /// A message-mode expiry (its expiration time) not yet in the SIM slot.
    pub pending: Option<u64>,
}

impl Stimer {
    pub fn enabled(&self) -> bool {
        self.config & config::ENABLE != 0
    }

    fn direct(&self) -> bool {
        self.config & config::DIRECT != 0
    }

    pub fn vector(&self) -> u8 {
        ((self.config & config::VECTOR) >> config::VECTOR_SHIFT) as u8
    }

    pub fn sintx(&self) -> usize {
        ((self.config & config::SINTX) >> config::SINTX_SHIFT) as usize
    }

    /// CONFIG write. `Err(())` is a #GP: a direct-mode timer that is or may become enabled
    /// (auto-enable) naming an exception vector, which the guest could otherwise use to
    /// inject exceptions into itself.
    pub fn write_config(&mut self, value: u64, now: u64) -> Result<(), ()> {
        let direct = value & config::DIRECT != 0;
        let vector = (value & config::VECTOR) >> config::VECTOR_SHIFT;
        let may_run = value & (config::ENABLE | config::AUTO_ENABLE) != 0;
        if direct && may_run && vector < FIRST_VALID_VECTOR {
            return Err(());
        }
        let mut value = value;
        // SINT 0 cannot receive timer messages (TLFS): such a timer stays disabled.
        if !direct && (value & config::SINTX) == 0 {
            value &= !config::ENABLE;
        }
        self.config = value;
        self.rearm(now);
        Ok(())
    }

    /// COUNT write: 0 disables; with auto-enable a non-zero count enables.
    pub fn write_count(&mut self, value: u64, now: u64) {
        self.count = value;
        if value == 0 {
            self.config &= !config::ENABLE;
        } else if self.config & config::AUTO_ENABLE != 0
            && (self.direct() || self.config & config::SINTX != 0)
        {
            self.config |= config::ENABLE;
        }
        self.rearm(now);
    }

    fn rearm(&mut self, now: u64) {
        if !self.enabled() {
            self.pending = None;
        }
        self.deadline = if self.enabled() && self.count != 0 {
            Some(if self.config & config::PERIODIC != 0 {
                now.saturating_add(self.count)
            } else {
                self.count
            })
        } else {
            None
        };
    }

    /// Fires if due at `now`, advancing or disarming the timer. A periodic timer that fell
    /// more than a period behind fires once and restarts from `now`, lazy or not (the lazy
    /// bit only permits this): catching up with a burst
    /// of interrupts would only feed a guest that is already late.
    pub fn expire(&mut self, now: u64) -> Option<Fire> {
        let deadline = self.deadline?;
        if deadline > now {
            return None;
        }
        if self.config & config::PERIODIC != 0 {
            let next = deadline.saturating_add(self.count);
            self.deadline = Some(if next <= now {
                now.saturating_add(self.count)
            } else {
                next
            });
        } else {
            self.deadline = None;
            self.config &= !config::ENABLE;
        }
        if self.direct() {
            // `write_config` keeps exception vectors out; this only guards that promise.
            return (u64::from(self.vector()) >= FIRST_VALID_VECTOR)
                .then_some(Fire::Vector(self.vector()));
        }
        if self.pending.is_some() {
            // The previous expiry is still undelivered; one message stands for both.
            return None;
        }
        self.pending = Some(deadline);
        Some(Fire::Message { sint: self.sintx() })
    }
}
