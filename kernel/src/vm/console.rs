//! Guest console lines on the hypervisor's COM1, prefixed with their VM's name and escaped, so
//! that a guest can neither pass for the hypervisor or another VM nor steer the terminal. Each
//! line also gets a stamp from the hypervisor's clock on the machine's log channel (defmt on
//! COM2): its VM, its number and the host time it was printed, which lets a harness time
//! what a guest prints without trusting the guest's clock or the load on the host.
//!
//! Lines finished during one exit are kept in an [`Outbox`] and printed once the lock that
//! produced them is released, so that one chatty guest cannot hold up the others' exits
//! behind the console. What a guest may print is metered ([`Meter`]): COM1 is one slow link
//! for every VM (115200 baud is about 11 KB/s), so past a burst a guest gets a steady share of
//! it and the rest is dropped, with a line saying how much.

use super::Machine;
use super::uart::{LINE_MAX, Line};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use spin::Mutex;

/// Console bytes a VM may print in one go, and per second after that.
pub const BURST: u64 = 16 * 1024;
pub const RATE: u64 = 4 * 1024;
/// What a line costs besides its text: the `[name] ` prefix and the line end, roughly.
const LINE_OVERHEAD: u64 = 16;

/// `janus.console=unmetered`: print everything (a developer reading a noisy guest).
pub static UNMETERED: AtomicBool = AtomicBool::new(false);

/// A token bucket over a VM's console bytes, in host time.
#[derive(Debug)]
pub struct Meter {
    tokens: u64,
    last_ns: u64,
    dropped: u64,
    /// When the last drop notice went out: at most one a second, or the notices would flood.
    noticed_ns: Option<u64>,
}

impl Default for Meter {
    fn default() -> Self {
        Self::new()
    }
}

impl Meter {
    pub const fn new() -> Self {
        Self {
            tokens: BURST,
            last_ns: 0,
            dropped: 0,
            noticed_ns: None,
        }
    }

    /// Whether a line of `len` bytes may be printed at `now_ns`; `Some(n)`: yes, after a notice
    /// that `n` bytes were dropped before it (when `n > 0`; notices come at most once a second,
    /// the count accumulating meanwhile).
    pub fn admit(&mut self, now_ns: u64, len: usize) -> Option<u64> {
        let earned =
            u128::from(now_ns.saturating_sub(self.last_ns)) * u128::from(RATE) / 1_000_000_000;
        if earned > 0 {
            self.tokens = (self.tokens as u128 + earned).min(u128::from(BURST)) as u64;
            self.last_ns = now_ns;
        }
        let cost = len as u64 + LINE_OVERHEAD;
        if self.tokens < cost {
            self.dropped += cost - LINE_OVERHEAD;
            return None;
        }
        self.tokens -= cost;
        let due = self
            .noticed_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= 1_000_000_000);
        if self.dropped > 0 && due {
            self.noticed_ns = Some(now_ns);
            return Some(core::mem::take(&mut self.dropped));
        }
        Some(0)
    }

    /// Bytes dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

const KEEP: usize = 16;

/// Whose lines these are.
#[derive(Clone, Copy)]
pub struct Console<'a> {
    pub vm: &'a str,
    /// Lines of this VM printed so far.
    pub seq: &'a AtomicU32,
    pub meter: &'a Mutex<Meter>,
}

/// Lines (and pieces of unfinished lines: `false`) kept for printing.
#[derive(Default)]
pub struct Outbox {
    lines: heapless::Vec<(Line, bool), KEEP>,
}

impl Outbox {
    pub const fn new() -> Self {
        Self {
            lines: heapless::Vec::new(),
        }
    }

    /// Keeps `line`; when the box is full the oldest lines are printed at once instead.
    pub fn keep(&mut self, m: &dyn Machine, c: Console<'_>, line: &[u8]) {
        self.keep_part(m, c, line, true);
    }

    /// Keeps the start of a line that has gone quiet unfinished; what follows continues it.
    pub fn keep_piece(&mut self, m: &dyn Machine, c: Console<'_>, piece: &[u8]) {
        self.keep_part(m, c, piece, false);
    }

    fn keep_part(&mut self, m: &dyn Machine, c: Console<'_>, text: &[u8], ends_line: bool) {
        let mut l = Line::new();
        let _ = l.extend_from_slice(&text[..text.len().min(LINE_MAX)]);
        if let Err(entry) = self.lines.push((l, ends_line)) {
            self.print(m, c);
            let _ = self.lines.push(entry);
        }
    }

    pub fn print(&mut self, m: &dyn Machine, c: Console<'_>) {
        for (l, ends_line) in &self.lines {
            print_part(m, c, l, *ends_line);
        }
        self.lines.clear();
    }
}

/// Prints what a metered VM still owes the console: the count of bytes it had dropped.
pub fn report_dropped(m: &dyn Machine, c: Console<'_>) {
    let n = core::mem::take(&mut c.meter.lock().dropped);
    if n > 0 {
        m.print(format_args!(
            "vm {}: {n} bytes of console output dropped (over {BURST} bytes, then {RATE} bytes/s)",
            c.vm
        ));
    }
}

pub fn print_line(m: &dyn Machine, c: Console<'_>, line: &[u8]) {
    print_part(m, c, line, true);
}

fn print_part(m: &dyn Machine, c: Console<'_>, line: &[u8], ends_line: bool) {
    if !UNMETERED.load(Ordering::Relaxed) {
        let admitted = c.meter.lock().admit(m.now_ns(), line.len());
        match admitted {
            None => return,
            Some(0) => {}
            Some(n) => m.print(format_args!(
                "vm {}: {n} bytes of console output dropped (over {BURST} bytes, then {RATE} bytes/s)",
                c.vm
            )),
        }
    }
    m.guest_line(c.vm, c.seq, format_args!("{}", Escaped(line)), ends_line);
}

/// Guest bytes as text: UTF-8 as it is, except that control characters (C0, DEL, C1) and bytes
/// that are not UTF-8 are shown as `\xNN` (`\u{NN}` for C1) and a backslash as `\\`.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for ch in chunk.valid().chars() {
                match ch {
                    '\\' => f.write_str("\\\\")?,
                    '\u{0}'..='\u{1f}' | '\u{7f}' => write!(f, "\\x{:02x}", ch as u32)?,
                    '\u{80}'..='\u{9f}' => write!(f, "\\u{{{:x}}}", ch as u32)?,
                    _ => write!(f, "{ch}")?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_its_burst_then_its_rate_and_a_count_of_the_rest() {
        let mut m = Meter::new();
        let line = 64;
        let per_line = line as u64 + LINE_OVERHEAD;
        let burst_lines = BURST / per_line;
        let t0 = 1_000_000_000;
        let admitted = (0..10_000).filter(|_| m.admit(t0, line).is_some()).count() as u64;
        assert_eq!(admitted, burst_lines);
        assert_eq!(m.dropped(), (10_000 - burst_lines) * line as u64);
        // One second later: a second's worth, the first line carrying the count.
        let first = m.admit(t0 + 1_000_000_000, line);
        assert_eq!(first, Some((10_000 - burst_lines) * line as u64));
        // The next drops are told at most once a second.
        // (300-byte lines: a tenth of a second earns 409 bytes, one line's worth.)
        let mut n = Meter::new();
        n.tokens = 0;
        n.last_ns = t0;
        assert_eq!(n.admit(t0, 300), None);
        let told = n.admit(t0 + 100_000_000, 300);
        assert_eq!(told, Some(300));
        assert_eq!(n.admit(t0 + 100_000_000, 300), None);
        let quiet = n.admit(t0 + 200_000_000, 300);
        assert_eq!(quiet, Some(0), "not a second since the last notice");
        assert_eq!(n.dropped(), 300);
        let more = (1..10_000)
            .filter(|_| m.admit(t0 + 1_000_000_000, line).is_some())
            .count() as u64;
        assert_eq!(
            1 + more,
            (BURST % per_line + RATE) / per_line,
            "the burst's remainder carries over"
        );
        // A quiet guest refills to the burst, never beyond.
        let mut q = Meter::new();
        assert_eq!(q.admit(t0 * 1000, 10), Some(0));
        assert!(q.tokens <= BURST);
    }

    fn esc(b: &[u8]) -> String {
        Escaped(b).to_string()
    }

    #[test]
    fn text_passes_and_controls_are_shown_not_interpreted() {
        assert_eq!(esc(b"hello, world"), "hello, world");
        assert_eq!(esc("grüße ✓".as_bytes()), "grüße ✓");
        // A colour escape, a carriage return that would overwrite the prefix, a bell.
        assert_eq!(
            esc(b"\x1b[31mred\rvm x: stopped\x07"),
            "\\x1b[31mred\\x0dvm x: stopped\\x07"
        );
        assert_eq!(
            esc(b"a\\x1b"),
            "a\\\\x1b",
            "a literal backslash cannot fake an escape"
        );
        assert_eq!(esc(b"\xff\xfeok\x7f"), "\\xff\\xfeok\\x7f");
        assert_eq!(esc("\u{9b}2J".as_bytes()), "\\u{9b}2J", "C1 CSI");
    }
}
