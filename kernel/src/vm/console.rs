//! Guest console lines on the hypervisor's COM1, prefixed with their VM's name. Lines finished
//! during one exit are kept in an [`Outbox`] and printed once the lock that produced them is
//! released, so that one chatty guest cannot hold up the others' exits behind the console.

use super::Machine;
use super::uart::{LINE_MAX, Line};

const KEEP: usize = 16;

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
    pub fn keep(&mut self, m: &dyn Machine, vm: &str, line: &[u8]) {
        let mut l = Line::new();
        let _ = l.extend_from_slice(&line[..line.len().min(LINE_MAX)]);
        if let Err(l) = self.lines.push(l) {
            self.print(m, vm);
            let _ = self.lines.push(l);
        }
    }

    pub fn print(&mut self, m: &dyn Machine, vm: &str) {
        for l in &self.lines {
            print_line(m, vm, l);
        }
        self.lines.clear();
    }
}

pub fn print_line(m: &dyn Machine, vm: &str, line: &[u8]) {
    m.print(format_args!(
        "[{}] {}",
        vm,
        core::str::from_utf8(line).unwrap_or("<binary>")
    ));
}
