//! The legacy i8254 programmable interval timer (ports 0x40-0x43) and the timer-related bits
//! of system control port B (0x61). Linux calibrates the TSC against channel 2 during boot and
//! polls these ports tens of thousands of times when they float, so the model has to count
//! the way the chip does: at 1,193,182 Hz, with the gate, latches and OUT pin it exposes.
//!
//! Nothing here ticks. Every access carries the time in PIT input-clock ticks and each
//! counter's contents and OUT level are derived from when it was last loaded, so the model
//! costs nothing between accesses and its state stays a few fixed-size fields per channel.
//!
//! Channels 0 and 1 count but their OUT pins are wired to nothing: the kernel raises no PIT
//! interrupt (guests get their ticks from the local APIC timer or the personality's ABI
//! timers), and there is no DRAM refresh to drive. Channel 2's gate is port 0x61 bit 0 and its
//! OUT reads back as bit 5; the speaker it would drive is silent.
//!
//! All six modes are modelled; BCD counting is too, with digits above 9 taken as their binary
//! nibble value modulo 10000 because the chip's behaviour there is unspecified.

/// The PIT's input clock, in Hz.
pub const TICK_HZ: u64 = 1_193_182;

const PORT_COUNTER0: u16 = 0x40;
const PORT_COUNTER2: u16 = 0x42;
const PORT_COMMAND: u16 = 0x43;
pub const PORT_B: u16 = 0x61;
/// The three counters and the mode register.
pub const PORTS_COUNTERS: core::ops::RangeInclusive<u16> = PORT_COUNTER0..=PORT_COMMAND;

/// Port B bits the guest owns: timer 2 gate, speaker data, parity and channel-check enables.
const PORT_B_WRITABLE: u8 = 0x0F;
const PORT_B_GATE2: u8 = 0x01;
const PORT_B_REFRESH: u8 = 0x10;
const PORT_B_OUT2: u8 = 0x20;
/// Chipsets flip the refresh bit every ~15 us (18 ticks); firmware delay loops count flips.
const REFRESH_HALF_PERIOD: u64 = 18;

/// How the counter's 16 bits move over the 8-bit data port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Low,
    High,
    /// Low byte then high byte, tracked by a flip-flop per direction.
    Word,
}

/// The counting element's run since its last load from the count register.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// The count register value loaded; 0 is the full range.
    reload: u16,
    /// Clocks counted before `since`: carries pauses (mode 0/4 gate low) and the half-cycle
    /// a mode-3 reload starts in.
    before: u64,
    since: u64,
    counting: bool,
}

impl Run {
    fn elapsed(&self, now: u64) -> u64 {
        let running = if self.counting {
            now.saturating_sub(self.since)
        } else {
            0
        };
        self.before.saturating_add(running)
    }
}

/// A transfer of the count register into the counting element on a coming clock edge.
#[derive(Clone, Copy, Debug)]
struct Load {
    at: u64,
    /// Mode 3 reloads at a half-cycle boundary; after the high half the new count starts low.
    low_half: bool,
}

#[derive(Clone, Copy, Debug)]
struct Channel {
    /// Bits 5-0 of the last mode control word, as the status byte reports them.
    control: u8,
    /// 0-5; control-word modes 6 and 7 are aliases of 2 and 3.
    mode: u8,
    access: Access,
    bcd: bool,
    gate: bool,
    count_register: u16,
    /// A count was written since the last control word; hardware-triggered modes need one.
    has_count: bool,
    null_count: bool,
    write_low: Option<u8>,
    read_high: bool,
    latched_count: Option<(u16, Access)>,
    latched_status: Option<u8>,
    /// What a read sees while the counting element is not running from a load: it keeps
    /// its bits across a control word and while a new mode-0 count is half written.
    held: u16,
    run: Option<Run>,
    load: Option<Load>,
}

impl Channel {
    const fn new(gate: bool) -> Self {
        Self {
            control: 0x30,
            mode: 0,
            access: Access::Word,
            bcd: false,
            gate,
            count_register: 0,
            has_count: false,
            null_count: true,
            write_low: None,
            read_high: false,
            latched_count: None,
            latched_status: None,
            held: 0,
            run: None,
            load: None,
        }
    }

    fn modulus(&self) -> u64 {
        if self.bcd { 10_000 } else { 0x1_0000 }
    }

    /// Clocks in one full count of `reload`; never 0, never above the modulus.
    fn period(&self, reload: u16) -> u64 {
        let n = if self.bcd {
            let d = |shift: u32| u64::from((reload >> shift) & 0xF);
            (d(12) * 1000 + d(8) * 100 + d(4) * 10 + d(0)) % 10_000
        } else {
            u64::from(reload)
        };
        if n == 0 { self.modulus() } else { n }
    }

    /// Brings a due load into the counting element; every access calls this first so a
    /// counter is never evaluated past a load it has not taken.
    fn advance(&mut self, now: u64) {
        if let Some(load) = self.load
            && now >= load.at
        {
            let reload = self.count_register;
            let before = if load.low_half {
                high_half(self.period(reload))
            } else {
                0
            };
            self.run = Some(Run {
                reload,
                before,
                since: load.at,
                // The hardware-triggered one-shots ignore the gate level once triggered.
                counting: self.gate || matches!(self.mode, 1 | 5),
            });
            self.load = None;
            self.null_count = false;
        }
    }

    /// The counting element as a read presents it (BCD digits in BCD mode).
    fn count(&self, now: u64) -> u16 {
        let Some(run) = self.run else {
            return self.held;
        };
        let e = run.elapsed(now);
        let m = self.modulus();
        let p = self.period(run.reload);
        let value = match self.mode {
            2 => p - e % p,
            3 => {
                // Decrements by two from the even part of the count, reloading each half.
                let h = high_half(p);
                let phase = e % p;
                let into = if phase < h { phase } else { phase - h };
                (p & !1) - 2 * into
            }
            // One-shot modes keep decrementing through zero, wrapping at the modulus.
            _ => (p + m - e % m) % m,
        } % m;
        if self.bcd {
            to_bcd(value)
        } else {
            value as u16
        }
    }

    fn out(&self, now: u64) -> bool {
        let Some(run) = self.run else {
            // Mode 0 drives OUT low from the control word until terminal count; every other
            // mode idles high.
            return self.mode != 0;
        };
        let e = run.elapsed(now);
        let p = self.period(run.reload);
        match self.mode {
            0 | 1 => e >= p,
            2 => !run.counting || e % p != p - 1,
            3 => !run.counting || e % p < high_half(p),
            _ => e != p,
        }
    }

    fn status(&self, now: u64) -> u8 {
        u8::from(self.out(now)) << 7 | u8::from(self.null_count) << 6 | self.control
    }

    /// Freezes the counting element where it stands, as a mode-0 count write does.
    fn stop(&mut self, now: u64) {
        self.held = self.count(now);
        self.run = None;
        self.load = None;
    }

    fn program(&mut self, command: u8, now: u64) {
        self.stop(now);
        self.control = command & 0x3F;
        self.access = match (command >> 4) & 3 {
            1 => Access::Low,
            2 => Access::High,
            _ => Access::Word,
        };
        let mode = (command >> 1) & 7;
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.bcd = command & 1 != 0;
        self.has_count = false;
        self.null_count = true;
        self.write_low = None;
        self.read_high = false;
        // Reprogramming discards whatever was latched and not yet read.
        self.latched_count = None;
        self.latched_status = None;
    }

    fn latch_count(&mut self, now: u64) {
        // A second latch before the first is read is ignored, so the first value survives.
        if self.latched_count.is_none() {
            self.latched_count = Some((self.count(now), self.access));
        }
    }

    fn latch_status(&mut self, now: u64) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status(now));
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        if let Some((value, access)) = self.latched_count {
            let [low, high] = value.to_le_bytes();
            return match access {
                Access::Low => {
                    self.latched_count = None;
                    low
                }
                Access::High => {
                    self.latched_count = None;
                    high
                }
                Access::Word => {
                    self.latched_count = Some((value, Access::High));
                    low
                }
            };
        }
        // Live reads sample the counter per byte, so a word read can tear across a borrow;
        // Linux's calibration expects exactly that and tolerates it.
        let [low, high] = self.count(now).to_le_bytes();
        match self.access {
            Access::Low => low,
            Access::High => high,
            Access::Word => {
                self.read_high = !self.read_high;
                if self.read_high { low } else { high }
            }
        }
    }

    fn write(&mut self, value: u8, now: u64) {
        let count = match self.access {
            Access::Low => u16::from(value),
            Access::High => u16::from(value) << 8,
            Access::Word => match self.write_low.take() {
                Some(low) => u16::from_le_bytes([low, value]),
                None => {
                    self.write_low = Some(value);
                    if self.mode == 0 {
                        // The first byte of a new mode-0 count already halts counting.
                        self.stop(now);
                    }
                    return;
                }
            },
        };
        self.count_register = count;
        self.has_count = true;
        self.null_count = true;
        let next = now.saturating_add(1);
        match self.mode {
            0 => {
                self.stop(now);
                self.load = Some(Load {
                    at: next,
                    low_half: false,
                });
            }
            4 => {
                self.load = Some(Load {
                    at: next,
                    low_half: false,
                });
            }
            // The one-shots take a new count only on the next gate trigger.
            1 | 5 => {}
            _ => {
                if self.load.is_some() {
                    // A scheduled load reads the count register when it happens.
                    return;
                }
                match self.run {
                    None => {
                        self.load = Some(Load {
                            at: next,
                            low_half: false,
                        });
                    }
                    // The current cycle finishes with the old count.
                    Some(run) if run.counting => {
                        let e = run.elapsed(now);
                        let p = self.period(run.reload);
                        let phase = e % p;
                        let h = high_half(p);
                        self.load = Some(if self.mode == 3 && phase < h {
                            Load {
                                at: now.saturating_add(h - phase),
                                low_half: true,
                            }
                        } else {
                            Load {
                                at: now.saturating_add(p - phase),
                                low_half: false,
                            }
                        });
                    }
                    // Gate low: the rising edge will load the new count.
                    Some(_) => {}
                }
            }
        }
    }

    fn set_gate(&mut self, level: bool, now: u64) {
        let rising = level && !self.gate;
        let falling = !level && self.gate;
        self.gate = level;
        let trigger = Load {
            at: now.saturating_add(1),
            low_half: false,
        };
        match self.mode {
            0 | 4 => {
                if let Some(run) = &mut self.run {
                    if falling && run.counting {
                        run.before = run.elapsed(now);
                        run.counting = false;
                    }
                    if rising && !run.counting {
                        run.since = now;
                        run.counting = true;
                    }
                }
            }
            1 | 5 => {
                if rising && self.has_count {
                    self.load = Some(trigger);
                }
            }
            _ => {
                if falling && let Some(run) = &mut self.run {
                    run.before = run.elapsed(now);
                    run.counting = false;
                    // A half-cycle reload never comes while stopped; the rising edge
                    // reloads from the count register instead.
                    self.load = None;
                }
                if rising && self.has_count {
                    self.load = Some(trigger);
                }
            }
        }
    }
}

/// Clocks OUT stays high in one mode-3 cycle: the larger half for odd counts.
fn high_half(period: u64) -> u64 {
    period.div_ceil(2)
}

fn to_bcd(value: u64) -> u16 {
    let digit = |div: u64, shift: u32| (((value / div) % 10) as u16) << shift;
    digit(1000, 12) | digit(100, 8) | digit(10, 4) | digit(1, 0)
}

/// The three counters and port B, as one guest sees them.
#[derive(Clone, Debug)]
pub struct Pit {
    channels: [Channel; 3],
    /// Guest-written bits 0-3 of port 0x61.
    port_b: u8,
    /// Latest time seen: a caller's clock stepping back must not run counters backwards.
    now: u64,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// Channels 0 and 1 have their gates tied high as on a PC; channel 2's gate starts low,
    /// as port 0x61 does.
    pub const fn new() -> Self {
        Self {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port_b: 0,
            now: 0,
        }
    }

    fn sync(&mut self, now_ticks: u64) -> u64 {
        self.now = self.now.max(now_ticks);
        for channel in &mut self.channels {
            channel.advance(self.now);
        }
        self.now
    }

    /// An 8-bit IN from `port` at `now_ticks` (PIT clocks); `None` when the port is not ours.
    pub fn read(&mut self, port: u16, now_ticks: u64) -> Option<u8> {
        match port {
            PORT_COUNTER0..=PORT_COUNTER2 => {
                let now = self.sync(now_ticks);
                Some(self.channels[usize::from(port - PORT_COUNTER0)].read(now))
            }
            // The mode register is write-only; the bus floats.
            PORT_COMMAND => Some(0xFF),
            PORT_B => {
                let now = self.sync(now_ticks);
                let refresh = if (now / REFRESH_HALF_PERIOD) % 2 == 1 {
                    PORT_B_REFRESH
                } else {
                    0
                };
                let out2 = if self.channels[2].out(now) {
                    PORT_B_OUT2
                } else {
                    0
                };
                Some(self.port_b | refresh | out2)
            }
            _ => None,
        }
    }

    /// An 8-bit OUT to `port` at `now_ticks` (PIT clocks); `false` when the port is not ours.
    pub fn write(&mut self, port: u16, value: u8, now_ticks: u64) -> bool {
        match port {
            PORT_COUNTER0..=PORT_COUNTER2 => {
                let now = self.sync(now_ticks);
                self.channels[usize::from(port - PORT_COUNTER0)].write(value, now);
            }
            PORT_COMMAND => {
                let now = self.sync(now_ticks);
                self.command(value, now);
            }
            PORT_B => {
                let now = self.sync(now_ticks);
                self.port_b = value & PORT_B_WRITABLE;
                self.channels[2].set_gate(value & PORT_B_GATE2 != 0, now);
            }
            _ => return false,
        }
        true
    }

    fn command(&mut self, value: u8, now: u64) {
        let select = usize::from(value >> 6);
        if select == 3 {
            // Read-back: active-low COUNT and STATUS bits, then a mask of channels in bits 1-3.
            for (i, channel) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 {
                    channel.latch_count(now);
                }
                if value & 0x10 == 0 {
                    channel.latch_status(now);
                }
            }
        } else if value & 0x30 == 0 {
            self.channels[select].latch_count(now);
        } else {
            self.channels[select].program(value, now);
        }
    }
}

#[cfg(test)]
mod tests;
