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
mod tests {
    use super::*;

    const GATE_ON_SPEAKER_OFF: u8 = 0x01;

    fn word(pit: &mut Pit, port: u16, t: u64) -> u16 {
        let low = pit.read(port, t).unwrap();
        let high = pit.read(port, t).unwrap();
        u16::from_le_bytes([low, high])
    }

    /// Counter 0's (count, OUT) at t = 1..=last, latched together by read-back each time.
    fn counter0_samples(pit: &mut Pit, last: u64) -> Vec<(u16, bool)> {
        (1..=last)
            .map(|t| {
                pit.write(PORT_COMMAND, 0xE2, t);
                let out = pit.read(0x40, t).unwrap() & 0x80 != 0;
                (word(pit, 0x40, t), out)
            })
            .collect()
    }

    fn out2(pit: &mut Pit, t: u64) -> bool {
        pit.read(PORT_B, t).unwrap() & PORT_B_OUT2 != 0
    }

    fn program(pit: &mut Pit, command: u8, count: u16, t: u64) {
        let [low, high] = count.to_le_bytes();
        assert!(pit.write(PORT_COMMAND, command, t));
        assert!(pit.write(PORT_COUNTER0 + u16::from(command >> 6), low, t));
        assert!(pit.write(PORT_COUNTER0 + u16::from(command >> 6), high, t));
    }

    #[test]
    fn only_pit_ports_are_claimed() {
        let mut pit = Pit::new();
        for port in [0x3F, 0x44, 0x48, 0x60, 0x62, 0x80, 0x3F8] {
            assert_eq!(pit.read(port, 0), None);
            assert!(!pit.write(port, 0, 0));
        }
        for port in [0x40, 0x41, 0x42, 0x43, 0x61] {
            assert!(pit.read(port, 0).is_some());
        }
    }

    #[test]
    fn mode0_counts_down_and_out_rises_at_terminal_count() {
        let mut pit = Pit::new();
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 0);
        program(&mut pit, 0xB0, 16, 100);
        assert!(!out2(&mut pit, 100));
        // Loaded on the clock after the write, then one decrement per clock.
        assert_eq!(word(&mut pit, 0x42, 101), 16);
        assert_eq!(word(&mut pit, 0x42, 110), 7);
        assert!(!out2(&mut pit, 116));
        assert_eq!(word(&mut pit, 0x42, 117), 0);
        assert!(out2(&mut pit, 117));
        // Past terminal count the counter wraps and keeps going; OUT stays high.
        assert_eq!(word(&mut pit, 0x42, 118), 0xFFFF);
        assert!(out2(&mut pit, 5000));
        // A new count drops OUT again.
        program(&mut pit, 0xB0, 3, 6000);
        assert!(!out2(&mut pit, 6000));
        assert!(out2(&mut pit, 6004));
    }

    #[test]
    fn zero_count_is_the_full_range() {
        let mut pit = Pit::new();
        program(&mut pit, 0x30, 0, 0);
        assert_eq!(word(&mut pit, 0x40, 1), 0);
        assert_eq!(word(&mut pit, 0x40, 2), 0xFFFF);
        pit.write(PORT_COMMAND, 0xE2, 65_536);
        assert_eq!(pit.read(0x40, 65_536).unwrap() & 0x80, 0);
        pit.write(PORT_COMMAND, 0xE2, 65_537);
        assert_ne!(pit.read(0x40, 65_537).unwrap() & 0x80, 0);
    }

    #[test]
    fn byte_access_modes_and_flip_flops() {
        let mut pit = Pit::new();
        // Low byte only: the high byte of the count is zero and reads return the low byte.
        pit.write(PORT_COMMAND, 0x10, 0);
        pit.write(0x40, 0x34, 0);
        assert_eq!(pit.read(0x40, 1), Some(0x34));
        assert_eq!(pit.read(0x40, 2), Some(0x33));
        // High byte only: the low byte of the count is zero.
        pit.write(PORT_COMMAND, 0x20, 10);
        pit.write(0x40, 0x12, 10);
        assert_eq!(pit.read(0x40, 11), Some(0x12));
        assert_eq!(pit.read(0x40, 11 + 0x100), Some(0x11));
        // Word: low then high, alternating.
        program(&mut pit, 0x30, 0xABCD, 1000);
        assert_eq!(pit.read(0x40, 1001), Some(0xCD));
        assert_eq!(pit.read(0x40, 1001), Some(0xAB));
        assert_eq!(pit.read(0x40, 1001), Some(0xCD));
        assert_eq!(pit.read(0x40, 1001), Some(0xAB));
        // The first byte of a new mode-0 count halts the counter where it stands.
        pit.write(0x40, 0x00, 1100);
        assert_eq!(word(&mut pit, 0x40, 1500), 0xABCD - 99);
        pit.write(0x40, 0x10, 1500);
        assert_eq!(word(&mut pit, 0x40, 1501), 0x1000);
        // A control word resets both flip-flops: a half-read word and a half-written count.
        assert_eq!(pit.read(0x40, 1502), Some(0xFF));
        pit.write(0x40, 0x99, 1502);
        pit.write(PORT_COMMAND, 0x30, 1502);
        pit.write(0x40, 0x20, 1502);
        pit.write(0x40, 0x00, 1502);
        assert_eq!(word(&mut pit, 0x40, 1503), 0x0020);
    }

    #[test]
    fn latch_holds_while_time_advances() {
        let mut pit = Pit::new();
        program(&mut pit, 0x34, 1000, 0);
        pit.write(PORT_COMMAND, 0x00, 101); // count 900
        // A second latch before the read is ignored.
        pit.write(PORT_COMMAND, 0x00, 300);
        assert_eq!(pit.read(0x40, 400), Some(0x84));
        assert_eq!(pit.read(0x40, 700), Some(0x03));
        // Read out, the counter is live again.
        assert_eq!(word(&mut pit, 0x40, 801), 200);
        // Leaves the live flip-flop mid-word; the latched word below has its own sequence.
        assert_eq!(pit.read(0x40, 802), Some(199));
        pit.write(PORT_COMMAND, 0x00, 851);
        assert_eq!(word(&mut pit, 0x40, 900), 150);
        assert_eq!(pit.read(0x40, 903), Some(0));
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let mut pit = Pit::new();
        pit.write(PORT_COMMAND, 0x34, 0);
        pit.write(0x40, 0x10, 0);
        pit.write(0x40, 0x00, 0);
        // Before the load clock the count is not yet in the counter: null count.
        pit.write(PORT_COMMAND, 0xE2, 0);
        assert_eq!(pit.read(0x40, 0), Some(0x80 | 0x40 | 0x34));
        // Count and status of channels 0 and 2; status comes first regardless of order.
        program(&mut pit, 0xB6, 100, 0);
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 0);
        pit.write(PORT_COMMAND, 0b1100_1010, 5);
        pit.write(PORT_COMMAND, 0b1101_0010, 9); // count already latched: ignored
        assert_eq!(pit.read(0x40, 50), Some(0x80 | 0x34));
        assert_eq!(word(&mut pit, 0x40, 50), 12);
        assert_eq!(pit.read(0x42, 50), Some(0x80 | 0x36));
        assert_eq!(word(&mut pit, 0x42, 50), 92);
        // Status only, channel 1 untouched since reset: mode 0, OUT low, null count.
        pit.write(PORT_COMMAND, 0b1110_0100, 60);
        assert_eq!(pit.read(0x41, 60), Some(0x40 | 0x30));
        assert_eq!(word(&mut pit, 0x40, 60), 5);
    }

    #[test]
    fn gate_low_pauses_mode0() {
        let mut pit = Pit::new();
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 0);
        program(&mut pit, 0xB0, 1000, 0);
        pit.write(PORT_B, 0, 101);
        assert_eq!(word(&mut pit, 0x42, 101), 900);
        assert_eq!(word(&mut pit, 0x42, 5000), 900);
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 5000);
        assert_eq!(word(&mut pit, 0x42, 5100), 800);
        assert!(!out2(&mut pit, 5899));
        assert!(out2(&mut pit, 5900));
        // Written while the gate is low, a count loads but holds.
        pit.write(PORT_B, 0, 6000);
        program(&mut pit, 0xB0, 50, 6000);
        assert_eq!(word(&mut pit, 0x42, 7000), 50);
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 7000);
        assert_eq!(word(&mut pit, 0x42, 7010), 40);
    }

    #[test]
    fn mode2_rate_generator() {
        let mut pit = Pit::new();
        program(&mut pit, 0x34, 4, 0);
        let samples = counter0_samples(&mut pit, 9);
        assert_eq!(
            samples,
            [
                (4, true),
                (3, true),
                (2, true),
                (1, false),
                (4, true),
                (3, true),
                (2, true),
                (1, false),
                (4, true)
            ]
        );
        // A new count takes over at the end of the current cycle, not before.
        pit.write(0x40, 10, 10);
        pit.write(0x40, 0, 10);
        assert_eq!(word(&mut pit, 0x40, 12), 1);
        assert_eq!(word(&mut pit, 0x40, 13), 10);
        assert_eq!(word(&mut pit, 0x40, 22), 1);
        assert_eq!(word(&mut pit, 0x40, 23), 10);
    }

    #[test]
    fn mode2_gate_forces_out_high_and_rising_edge_reloads() {
        let mut pit = Pit::new();
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 0);
        program(&mut pit, 0xB4, 100, 0);
        assert!(!out2(&mut pit, 100));
        pit.write(PORT_B, 0, 100);
        assert!(out2(&mut pit, 100));
        assert_eq!(word(&mut pit, 0x42, 500), 1);
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 500);
        assert_eq!(word(&mut pit, 0x42, 501), 100);
        assert_eq!(word(&mut pit, 0x42, 531), 70);
    }

    #[test]
    fn mode3_square_wave() {
        let mut pit = Pit::new();
        // Even count: three clocks high, three low, decrementing by two.
        program(&mut pit, 0x36, 6, 0);
        let samples = counter0_samples(&mut pit, 7);
        assert_eq!(
            samples,
            [
                (6, true),
                (4, true),
                (2, true),
                (6, false),
                (4, false),
                (2, false),
                (6, true)
            ]
        );
        // Odd count: the high half is the longer one.
        program(&mut pit, 0x36, 5, 100);
        let outs: Vec<bool> = (101..=111)
            .map(|t| {
                pit.write(PORT_COMMAND, 0xE2, t);
                pit.read(0x40, t).unwrap() & 0x80 != 0
            })
            .collect();
        assert_eq!(
            outs,
            [
                true, true, true, false, false, true, true, true, false, false, true
            ]
        );
        // A new count mid high half takes over at the half-cycle: low with the new count.
        program(&mut pit, 0x36, 10, 200);
        pit.write(0x40, 20, 202);
        pit.write(0x40, 0, 202);
        assert_eq!(word(&mut pit, 0x40, 205), 2);
        pit.write(PORT_COMMAND, 0xE2, 206);
        assert_eq!(pit.read(0x40, 206).unwrap() & 0x80, 0);
        assert_eq!(word(&mut pit, 0x40, 206), 20);
        pit.write(PORT_COMMAND, 0xE2, 216);
        assert_ne!(pit.read(0x40, 216).unwrap() & 0x80, 0);
    }

    #[test]
    fn mode3_gate_on_channel2() {
        let mut pit = Pit::new();
        pit.write(PORT_B, 0x03, 0);
        program(&mut pit, 0xB6, 1000, 0);
        assert!(out2(&mut pit, 1));
        assert!(!out2(&mut pit, 501));
        pit.write(PORT_B, 0x02, 600);
        assert!(out2(&mut pit, 600));
        pit.write(PORT_B, 0x03, 10_000);
        assert!(out2(&mut pit, 10_001));
        assert!(out2(&mut pit, 10_500));
        assert!(!out2(&mut pit, 10_501));
    }

    #[test]
    fn one_shot_and_strobe_modes() {
        let mut pit = Pit::new();
        // Mode 1 waits for the gate's rising edge, then OUT is low for the count.
        program(&mut pit, 0xB2, 10, 0);
        assert!(out2(&mut pit, 50));
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 100);
        assert!(!out2(&mut pit, 101));
        assert!(!out2(&mut pit, 110));
        assert!(out2(&mut pit, 111));
        // Retriggered, it starts over.
        pit.write(PORT_B, 0, 120);
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 120);
        assert!(!out2(&mut pit, 125));
        assert_eq!(word(&mut pit, 0x42, 125), 6);
        // Mode 4 strobes OUT low for the single clock at terminal count.
        program(&mut pit, 0xB8, 5, 200);
        assert!(out2(&mut pit, 205));
        assert!(!out2(&mut pit, 206));
        assert!(out2(&mut pit, 207));
        // Mode 5 is the gate-triggered strobe.
        program(&mut pit, 0xBA, 5, 300);
        pit.write(PORT_B, 0, 300);
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 310);
        assert!(out2(&mut pit, 315));
        assert!(!out2(&mut pit, 316));
        assert!(out2(&mut pit, 317));
    }

    #[test]
    fn bcd_counts_in_decimal() {
        let mut pit = Pit::new();
        program(&mut pit, 0x31, 0x0010, 0);
        assert_eq!(word(&mut pit, 0x40, 1), 0x0010);
        assert_eq!(word(&mut pit, 0x40, 3), 0x0008);
        assert_eq!(word(&mut pit, 0x40, 11), 0x0000);
        assert_eq!(word(&mut pit, 0x40, 12), 0x9999);
        program(&mut pit, 0x35, 0, 100);
        assert_eq!(word(&mut pit, 0x40, 102), 0x9999);
        assert_eq!(word(&mut pit, 0x40, 10_101), 0x0000);
        assert_eq!(word(&mut pit, 0x40, 10_102), 0x9999);
    }

    #[test]
    fn port_b_reports_gate_speaker_refresh_and_out() {
        let mut pit = Pit::new();
        assert_eq!(pit.read(PORT_B, 0), Some(0));
        pit.write(PORT_B, 0xFF, 0);
        assert_eq!(pit.read(PORT_B, 0).unwrap() & 0xCF, 0x0F);
        let flips = (0..1800)
            .map(|t| pit.read(PORT_B, t).unwrap() & PORT_B_REFRESH)
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count();
        assert_eq!(flips, 99);
    }

    #[test]
    fn time_going_backwards_does_not_rewind() {
        let mut pit = Pit::new();
        program(&mut pit, 0x30, 1000, 0);
        assert_eq!(word(&mut pit, 0x40, 501), 500);
        assert_eq!(word(&mut pit, 0x40, 10), 500);
    }

    /// A guest whose port accesses each cost a fixed number of TSC cycles, with the PIT fed
    /// the TSC converted to PIT clocks as the exit handler does.
    struct Guest {
        pit: Pit,
        tsc: u64,
    }

    const TSC_PER_TICK: u64 = 2_514; // a ~3 GHz TSC
    /// ~0.66 us per exit: quick calibration gives up if two polls take more than about 1/8
    /// of a PIT clock per MSB step it waits, so a slow exit path cannot pass it anyway.
    const TSC_PER_PORT_ACCESS: u64 = 2_000;

    impl Guest {
        fn inb(&mut self, port: u16) -> u8 {
            self.tsc += TSC_PER_PORT_ACCESS;
            self.pit.read(port, self.tsc / TSC_PER_TICK).unwrap()
        }

        fn outb(&mut self, port: u16, value: u8) {
            self.tsc += TSC_PER_PORT_ACCESS;
            assert!(self.pit.write(port, value, self.tsc / TSC_PER_TICK));
        }

        fn msb(&mut self) -> u8 {
            self.inb(PORT_COUNTER2);
            self.inb(PORT_COUNTER2)
        }

        /// Polls while the MSB reads `want`: (TSC at the last match, its uncertainty, polls).
        fn expect_msb(&mut self, want: u8) -> (u64, u64, u32) {
            let (mut tsc, mut prev, mut polls) = (0, 0, 0);
            while polls < 50_000 && self.msb() == want {
                prev = tsc;
                tsc = self.tsc;
                polls += 1;
            }
            (tsc, self.tsc - prev, polls)
        }
    }

    /// The fast calibration Linux runs at boot: channel 2 in mode 0 from 0xFFFF, polled with
    /// a throwaway LSB read before each MSB, expecting the MSB to step down by one every 256
    /// clocks and to stay on each value for several polls.
    #[test]
    fn linux_quick_pit_calibrate_converges() {
        const MAX_ITERATIONS: u64 = TICK_HZ / 50 / 256;
        let mut g = Guest {
            pit: Pit::new(),
            tsc: 7_777_777_777,
        };
        let b = g.inb(PORT_B);
        g.outb(PORT_B, (b & !0x02) | 0x01);
        g.outb(PORT_COMMAND, 0xB0);
        g.outb(PORT_COUNTER2, 0xFF);
        g.outb(PORT_COUNTER2, 0xFF);
        g.msb();
        let (tsc0, d1, polls) = g.expect_msb(0xFF);
        assert!(polls > 5);
        let mut khz = None;
        for i in 1..=MAX_ITERATIONS {
            let (tsc, d2, polls) = g.expect_msb(0xFF - i as u8);
            // 256 clocks of 2514 cycles over polls of 4000 cycles.
            assert!((159..=162).contains(&polls), "MSB step {i}: {polls} polls");
            let delta = tsc - tsc0;
            if i == 1 {
                assert!(d1 + d2 < (delta * MAX_ITERATIONS) >> 11);
            }
            if d1 + d2 >= delta >> 11 {
                continue;
            }
            assert_eq!(g.msb(), 0xFE - i as u8);
            khz = Some(delta * TICK_HZ / (i * 256 * 1000));
            break;
        }
        let khz = khz.expect("calibration converged");
        let truth = TSC_PER_TICK * TICK_HZ / 1000;
        assert!(
            khz.abs_diff(truth) * 2000 < truth,
            "{khz} kHz vs {truth} kHz"
        );
    }

    #[test]
    fn msb_steps_every_256_clocks_at_tick_rate() {
        let mut pit = Pit::new();
        pit.write(PORT_B, GATE_ON_SPEAKER_OFF, 0);
        program(&mut pit, 0xB0, 0xFFFF, 0);
        for t in 1..=0x1_0000u64 {
            assert_eq!(word(&mut pit, 0x42, t), (0x1_0000 - t) as u16);
        }
        // One second of input clock is 1,193,182 decrements (mod 2^16).
        program(&mut pit, 0xB0, 0xFFFF, 0x2_0000);
        let second = 0x2_0001 + TICK_HZ;
        let expect = (0xFFFF - TICK_HZ % 0x1_0000) as u16;
        assert_eq!(word(&mut pit, 0x42, second), expect);
    }

    /// Linux's slower calibration loop polls port 0x61 bit 5 for the end of a mode-0 count.
    #[test]
    fn linux_pit_calibrate_tsc_sees_out_after_latch_plus_one() {
        let latch = (TICK_HZ / 100) as u16;
        let mut pit = Pit::new();
        let t0 = 42;
        let b = pit.read(PORT_B, t0).unwrap();
        pit.write(PORT_B, (b & !0x02) | 0x01, t0);
        program(&mut pit, 0xB0, latch, t0);
        let mut t = t0;
        while pit.read(PORT_B, t).unwrap() & PORT_B_OUT2 == 0 {
            t += 1;
        }
        assert_eq!(t - t0, u64::from(latch) + 1);
    }

    #[test]
    fn random_port_sequences_do_not_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const PORTS: [u16; 7] = [0x40, 0x41, 0x42, 0x43, 0x61, 0x44, 0x60];
        for _ in 0..2_000 {
            let mut pit = Pit::new();
            let mut t: u64 = match next() % 4 {
                0 => 0,
                1 => u64::MAX - next() % 1000,
                _ => next() >> (next() % 64),
            };
            for _ in 0..300 {
                t = match next() % 16 {
                    0 => t.wrapping_add(next()),
                    1 => t.wrapping_sub(next() % 1000),
                    2 => u64::MAX,
                    _ => t.saturating_add(next() % 300),
                };
                let r = next();
                let port = if r % 8 == 7 {
                    (r >> 8) as u16
                } else {
                    PORTS[(r % 7) as usize]
                };
                let value = (r >> 24) as u8;
                let ours = matches!(port, 0x40..=0x43 | 0x61);
                if r & (1 << 40) == 0 {
                    assert_eq!(pit.write(port, value, t), ours);
                } else {
                    assert_eq!(pit.read(port, t).is_some(), ours);
                }
            }
            // Whatever the history, a fresh mode-0 count still counts down from its load.
            if pit.now < u64::MAX - 100 {
                let t = pit.now;
                program(&mut pit, 0x30, 50, t);
                assert_eq!(word(&mut pit, 0x40, t + 11), 40);
            }
        }
    }
}
