//! Guest console lines on the hypervisor's COM1, prefixed with their VM's name and escaped, so
//! that a guest can neither pass for the hypervisor or another VM nor steer the terminal. Each
//! line also gets a stamp from the hypervisor's clock on the machine's log channel (defmt on
//! COM2): its VM, its number and the host time the guest finished writing it, which lets a
//! harness time what a guest prints without trusting the guest's clock or the load on the host.
//!
//! The exit path never prints a guest's text: it appends the line to its VM's [`Backlog`]
//! (bounded, no allocation, one short lock) and goes back to the guest; another context
//! ([`drain`]: pCPU 0 between exits, for a bounded time each, and the VM's end) prints it. COM1
//! is one slow link for every VM (115200 baud is about 11 KB/s), so what a guest may append is
//! metered ([`Meter`]): past a burst a guest gets a steady share of it, and the rest, like
//! what finds its backlog full, is dropped, with a line saying how much.

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
        Some(self.notice(now_ns))
    }

    /// The count of dropped bytes to tell before a line printed at `now_ns`: 0 when there is
    /// none, or when the last notice is not yet a second old.
    fn notice(&mut self, now_ns: u64) -> u64 {
        let due = self
            .noticed_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= 1_000_000_000);
        if self.dropped > 0 && due {
            self.noticed_ns = Some(now_ns);
            return core::mem::take(&mut self.dropped);
        }
        0
    }

    /// Bytes dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Bytes of console a VM may have waiting for COM1: its burst, with the records' headers.
pub const BACKLOG_BYTES: usize = 20 * 1024;
/// A record's header: its kind, its text's length, and a word (the stamp, or a count).
const HEADER: usize = 10;
const LINE_END: u8 = 0;
const PIECE: u8 = 1;
const DROPPED: u8 = 2;

/// What a VM's console has waiting for COM1, oldest first.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// A line (`ends_line`) or the start of one let out unfinished, and the host time the
    /// exit path took it.
    Text {
        text: Line,
        ends_line: bool,
        at_ns: u64,
    },
    /// A notice: this many bytes were dropped before what follows.
    Dropped(u64),
}

/// Records packed into one ring of bytes, so a backlog of short lines holds as many as its
/// bytes allow (a ring of [`Line`]s would hold a tenth as many).
pub struct Backlog {
    bytes: heapless::Deque<u8, BACKLOG_BYTES>,
}

impl Default for Backlog {
    fn default() -> Self {
        Self::new()
    }
}

impl Backlog {
    pub const fn new() -> Self {
        Self {
            bytes: heapless::Deque::new(),
        }
    }

    fn room(&self) -> usize {
        BACKLOG_BYTES - self.bytes.len()
    }

    /// Appends a whole record or, without room for it, nothing.
    fn push(&mut self, kind: u8, word: u64, text: &[u8]) -> bool {
        let text = &text[..text.len().min(LINE_MAX)];
        if self.room() < HEADER + text.len() {
            return false;
        }
        let head = [kind, text.len() as u8];
        for &b in head.iter().chain(&word.to_le_bytes()).chain(text) {
            let _ = self.bytes.push_back(b);
        }
        true
    }

    pub fn pop(&mut self) -> Option<Record> {
        let kind = self.bytes.pop_front()?;
        let len = usize::from(self.bytes.pop_front()?);
        let mut word = [0u8; 8];
        for b in &mut word {
            *b = self.bytes.pop_front()?;
        }
        let word = u64::from_le_bytes(word);
        let mut text = Line::new();
        for _ in 0..len {
            let _ = text.push(self.bytes.pop_front()?);
        }
        Some(match kind {
            DROPPED => Record::Dropped(word),
            _ => Record::Text {
                text,
                ends_line: kind == LINE_END,
                at_ns: word,
            },
        })
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A VM's console output between its exits and COM1: the meter and the backlog, behind one lock
/// that the exit path holds only to append.
#[derive(Default)]
pub struct ConsoleOut {
    pub meter: Meter,
    pub backlog: Backlog,
}

impl ConsoleOut {
    pub const fn new() -> Self {
        Self {
            meter: Meter::new(),
            backlog: Backlog::new(),
        }
    }

    /// Takes `text` (a line, or with `!ends_line` the start of one) for printing, stamped
    /// `now_ns`; false when it was dropped: over the meter (`metered`), or no room left (the
    /// drain is behind). Either way the bytes are counted and told with a later line.
    pub fn append(&mut self, now_ns: u64, text: &[u8], ends_line: bool, metered: bool) -> bool {
        let text = &text[..text.len().min(LINE_MAX)];
        // Room for the line and a notice before it, checked before the meter charges it.
        if self.backlog.room() < 2 * HEADER + text.len() {
            self.meter.dropped += text.len() as u64;
            return false;
        }
        let notice = if metered {
            match self.meter.admit(now_ns, text.len()) {
                Some(n) => n,
                None => return false,
            }
        } else {
            self.meter.notice(now_ns)
        };
        if notice > 0 {
            self.backlog.push(DROPPED, notice, &[]);
        }
        let kind = if ends_line { LINE_END } else { PIECE };
        self.backlog.push(kind, now_ns, text)
    }
}

/// Whose lines these are.
#[derive(Clone, Copy)]
pub struct Console<'a> {
    pub vm: &'a str,
    /// Lines of this VM printed so far.
    pub seq: &'a AtomicU32,
    pub out: &'a Mutex<ConsoleOut>,
    /// Held by whoever prints the backlog, from taking a record until it is printed: the
    /// VM's lines come out in order, and all of them before its end is reported.
    pub drainer: &'a Mutex<()>,
}

/// The exit path's side: takes a finished line of the VM's console for printing later.
pub fn append(m: &dyn Machine, c: Console<'_>, line: &[u8]) {
    append_part(m, c, line, true);
}

/// Takes the start of a line that has gone quiet unfinished; what follows continues it.
pub fn append_piece(m: &dyn Machine, c: Console<'_>, piece: &[u8]) {
    append_part(m, c, piece, false);
}

fn append_part(m: &dyn Machine, c: Console<'_>, text: &[u8], ends_line: bool) {
    let metered = !UNMETERED.load(Ordering::Relaxed);
    c.out.lock().append(m.now_ns(), text, ends_line, metered);
}

/// Prints the VM's backlog, oldest first: until host time `until_ns`, and then only if no
/// one else is printing it (pCPU 0 between exits); or with `None` all of it, waiting for the
/// one who is (the VM's end). Whether the backlog is empty when it returns (someone else
/// printing it counts as not).
pub fn drain(m: &dyn Machine, c: Console<'_>, until_ns: Option<u64>) -> bool {
    let _turn = match until_ns {
        Some(_) => match c.drainer.try_lock() {
            Some(t) => t,
            None => return false,
        },
        None => c.drainer.lock(),
    };
    loop {
        if until_ns.is_some_and(|t| m.now_ns() >= t) {
            return false;
        }
        let Some(record) = c.out.lock().backlog.pop() else {
            return true;
        };
        match record {
            Record::Dropped(n) => tell_dropped(m, c, n),
            Record::Text {
                text,
                ends_line,
                at_ns,
            } => m.guest_line(
                c.vm,
                c.seq,
                format_args!("{}", Escaped(&text)),
                ends_line,
                at_ns,
            ),
        }
    }
}

/// Prints what a metered VM still owes the console: the count of bytes it had dropped. Call
/// it after draining the backlog.
pub fn report_dropped(m: &dyn Machine, c: Console<'_>) {
    let n = core::mem::take(&mut c.out.lock().meter.dropped);
    if n > 0 {
        tell_dropped(m, c, n);
    }
}

fn tell_dropped(m: &dyn Machine, c: Console<'_>, n: u64) {
    m.print(format_args!(
        "vm {}: {n} bytes of console output dropped (over {BURST} bytes, then {RATE} bytes/s)",
        c.vm
    ));
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

    fn text(r: Option<Record>) -> (String, bool, u64) {
        match r {
            Some(Record::Text {
                text,
                ends_line,
                at_ns,
            }) => (
                String::from_utf8_lossy(&text).into_owned(),
                ends_line,
                at_ns,
            ),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn the_backlog_keeps_lines_and_pieces_in_order_with_their_stamps() {
        let mut o = ConsoleOut::new();
        assert!(o.append(10, b"login: ", false, true));
        assert!(o.append(20, b"root", true, true));
        assert!(o.append(30, &[b'x'; LINE_MAX + 40], true, true));
        assert_eq!(text(o.backlog.pop()), ("login: ".into(), false, 10));
        assert_eq!(text(o.backlog.pop()), ("root".into(), true, 20));
        let (long, _, _) = text(o.backlog.pop());
        assert_eq!(long.len(), LINE_MAX, "a record holds at most a line");
        assert_eq!(o.backlog.pop(), None);
        assert!(o.backlog.is_empty());
        // An empty line is a record too.
        assert!(o.append(40, b"", true, false));
        assert_eq!(text(o.backlog.pop()), (String::new(), true, 40));
    }

    #[test]
    fn a_full_backlog_drops_and_counts_instead_of_waiting() {
        let mut o = ConsoleOut::new();
        let line = [b'y'; 100];
        // Unmetered, so only the backlog bounds it.
        let kept = (0..1000)
            .take_while(|_| o.append(1_000_000_000, &line, true, false))
            .count();
        assert_eq!(kept, (BACKLOG_BYTES - HEADER) / (HEADER + line.len()));
        assert_eq!(
            o.meter.dropped(),
            100,
            "the line that found no room: counted as dropped"
        );
        // Room again once the drain takes a record: the next line carries the count.
        assert!(o.backlog.pop().is_some());
        assert!(o.backlog.pop().is_some());
        assert!(o.append(2_000_000_000, b"after", true, false));
        let rest: Vec<_> = core::iter::from_fn(|| o.backlog.pop()).collect();
        let n = rest.len();
        assert_eq!(rest[n - 2], Record::Dropped(100));
        assert!(matches!(&rest[n - 1], Record::Text { text, .. } if text.as_slice() == b"after"));
        // Metered, a full backlog does not spend the meter's tokens.
        let mut o = ConsoleOut::new();
        while o.backlog.room() >= 2 * HEADER + line.len() {
            o.backlog.push(LINE_END, 0, &line);
        }
        let tokens = o.meter.tokens;
        assert!(!o.append(0, &line, true, true));
        assert_eq!(o.meter.tokens, tokens);
    }

    #[test]
    fn the_drain_prints_in_order_within_its_time_and_never_beside_another_drainer() {
        use crate::vm::testing::FakeMachine;
        let m = FakeMachine::new();
        let (seq, out, drainer) = (
            AtomicU32::new(0),
            Mutex::new(ConsoleOut::new()),
            Mutex::new(()),
        );
        let c = Console {
            vm: "v",
            seq: &seq,
            out: &out,
            drainer: &drainer,
        };
        let t0 = m.tsc.get();
        for line in [&b"one"[..], b"two\x1b", b"three"] {
            append(&m, c, line);
        }
        assert!(m.lines.borrow().is_empty(), "appending prints nothing");
        // Someone else is printing this backlog: a timed drain leaves it to them.
        {
            let _other = drainer.lock();
            drain(&m, c, Some(t0 + 1_000_000));
            assert!(m.lines.borrow().is_empty());
        }
        // Out of time: nothing printed.
        drain(&m, c, Some(t0));
        assert!(m.lines.borrow().is_empty());
        drain(&m, c, Some(t0 + 1_000_000));
        assert_eq!(*m.lines.borrow(), ["[v] one", "[v] two\\x1b", "[v] three"]);
        assert_eq!(*m.stamped_at.borrow(), [t0, t0, t0]);
        let numbers: Vec<u32> = m.stamps.borrow().iter().map(|s| s.1).collect();
        assert_eq!(numbers, [0, 1, 2]);
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
