//! Guest console lines on the hypervisor's COM1, prefixed with their VM's name and escaped, so
//! that a guest can neither pass for the hypervisor or another VM nor steer the terminal. Each
//! line also gets a stamp from the hypervisor's clock on the machine's log channel (defmt on
//! COM2): its VM, its number and the host time it was printed, which lets a harness time
//! what a guest prints without trusting the guest's clock or the load on the host.
//!
//! Lines finished during one exit are kept in an [`Outbox`] and printed once the lock that
//! produced them is released, so that one chatty guest cannot hold up the others' exits
//! behind the console.

use super::Machine;
use super::uart::{LINE_MAX, Line};
use core::fmt;
use core::sync::atomic::AtomicU32;

const KEEP: usize = 16;

/// Whose lines these are.
#[derive(Clone, Copy)]
pub struct Console<'a> {
    pub vm: &'a str,
    /// Lines of this VM printed so far.
    pub seq: &'a AtomicU32,
}

#[derive(Default)]
pub struct Outbox {
    lines: heapless::Vec<Line, KEEP>,
}

impl Outbox {
    pub const fn new() -> Self {
        Self {
            lines: heapless::Vec::new(),
        }
    }

    /// Keeps `line`; when the box is full the oldest lines are printed at once instead.
    pub fn keep(&mut self, m: &dyn Machine, c: Console<'_>, line: &[u8]) {
        let mut l = Line::new();
        let _ = l.extend_from_slice(&line[..line.len().min(LINE_MAX)]);
        if let Err(l) = self.lines.push(l) {
            self.print(m, c);
            let _ = self.lines.push(l);
        }
    }

    pub fn print(&mut self, m: &dyn Machine, c: Console<'_>) {
        for l in &self.lines {
            print_line(m, c, l);
        }
        self.lines.clear();
    }
}

pub fn print_line(m: &dyn Machine, c: Console<'_>, line: &[u8]) {
    m.guest_line(c.vm, c.seq, format_args!("{}", Escaped(line)));
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
