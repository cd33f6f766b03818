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
