//! The 16550 UART a VM sees at 0x3F8 (COM1). Output goes to the hypervisor's COM1 one line at
//! a time, prefixed with the VM's name (a line that stays unfinished, like a login prompt, is
//! let out once it has been quiet a while). Input is what the host's console sends this VM,
//! through a 16-byte receive FIFO with the data-ready bit and interrupt. The transmitter is
//! always empty, so guests polling LSR never wait.

pub const COM1_BASE: u16 = 0x3F8;
pub const PORTS: core::ops::RangeInclusive<u16> = COM1_BASE..=COM1_BASE + 7;
pub const LINE_MAX: usize = 160;

/// The 16550's receive FIFO depth.
pub const RX_FIFO: usize = 16;

const LSR_DR: u8 = 1 << 0;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
const IER_RDI: u8 = 1 << 0;
const IER_THRI: u8 = 1 << 1;
const IIR_NONE: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_FIFO: u8 = 0xC0;
const LCR_DLAB: u8 = 0x80;

pub struct Uart {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    dll: u8,
    dlm: u8,
    /// A THR-empty interrupt is owed (set by a write or by enabling it, cleared by IIR read).
    thri_owed: bool,
    rx: heapless::Deque<u8, RX_FIFO>,
    line: LineBuf,
}

/// Console output gathered into lines, so each line can carry its VM's name.
pub struct LineBuf {
    line: heapless::Vec<u8, LINE_MAX>,
    /// Nothing was added since the last [`LineBuf::flush_idle`] looked.
    quiet: bool,
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuf {
    pub const fn new() -> Self {
        Self {
            line: heapless::Vec::new(),
            quiet: false,
        }
    }

    pub fn push(&mut self, b: u8, line_out: &mut dyn FnMut(&[u8])) {
        self.quiet = false;
        match b {
            b'\r' => {}
            b'\n' => {
                line_out(&self.line);
                self.line.clear();
            }
            _ => {
                // An overlong line is printed in pieces rather than dropped.
                if self.line.is_full() {
                    self.flush(line_out);
                }
                let _ = self.line.push(b);
            }
        }
    }

    pub fn flush(&mut self, line_out: &mut dyn FnMut(&[u8])) {
        if !self.line.is_empty() {
            line_out(&self.line);
            self.line.clear();
        }
    }

    /// Called at a steady pace: an unfinished line that got nothing since the last call (a
    /// prompt waiting for input, the echo of what is typed) is handed to `piece_out`, and what
    /// follows continues it.
    pub fn flush_idle(&mut self, piece_out: &mut dyn FnMut(&[u8])) {
        if self.line.is_empty() {
            return;
        }
        if self.quiet {
            piece_out(&self.line);
            self.line.clear();
        }
        self.quiet = true;
    }
}

impl Default for Uart {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart {
    pub const fn new() -> Self {
        Self {
            ier: 0,
            lcr: 0x03,
            mcr: 0,
            scr: 0,
            fcr: 0,
            dll: 1,
            dlm: 0,
            thri_owed: false,
            rx: heapless::Deque::new(),
            line: LineBuf::new(),
        }
    }

    /// Bytes from the host's console: as many as the receive FIFO has room for are taken.
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        bytes
            .iter()
            .take_while(|&&b| self.rx.push_back(b).is_ok())
            .count()
    }

    /// A byte write to `COM1_BASE + offset`; a finished line is handed to `line_out`.
    pub fn write(&mut self, offset: u16, value: u8, line_out: &mut dyn FnMut(&[u8])) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll = value,
            0 => {
                self.thri_owed = true;
                self.push(value, line_out);
            }
            1 if dlab => self.dlm = value,
            1 => {
                if value & IER_THRI != 0 && self.ier & IER_THRI == 0 {
                    self.thri_owed = true;
                }
                self.ier = value & 0x0F;
            }
            2 => {
                // FCR bit 1 clears the receive FIFO.
                if value & 0x02 != 0 {
                    self.rx.clear();
                }
                self.fcr = value;
            }
            3 => self.lcr = value,
            4 => self.mcr = value & 0x1F,
            7 => self.scr = value,
            _ => {}
        }
    }

    /// The output not yet handed out as a line.
    pub fn line_buf(&mut self) -> &mut LineBuf {
        &mut self.line
    }

    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll,
            0 => self.rx.pop_front().unwrap_or(0),
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let fifo = if self.fcr & 1 != 0 { IIR_FIFO } else { 0 };
                // Received data outranks the transmitter; reading IIR clears only the latter.
                if self.rx_irq() {
                    IIR_RDI | fifo
                } else if self.thri_irq() {
                    self.thri_owed = false;
                    IIR_THRI | fifo
                } else {
                    IIR_NONE | fifo
                }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_THRE | LSR_TEMT | if self.rx.is_empty() { 0 } else { LSR_DR },
            // Loopback mode reflects MCR outputs; otherwise CTS/DSR/DCD are asserted.
            6 if self.mcr & 0x10 != 0 => (self.mcr & 0x0F) << 4,
            6 => 0xB0,
            7 => self.scr,
            _ => 0xFF,
        }
    }

    /// The UART's interrupt line: received data or the transmitter empty, as enabled.
    pub fn irq_pending(&self) -> bool {
        self.rx_irq() || self.thri_irq()
    }

    fn rx_irq(&self) -> bool {
        self.ier & IER_RDI != 0 && !self.rx.is_empty()
    }

    fn thri_irq(&self) -> bool {
        self.ier & IER_THRI != 0 && self.thri_owed
    }

    fn push(&mut self, b: u8, line_out: &mut dyn FnMut(&[u8])) {
        self.line.push(b, line_out);
    }
}

/// One guest console line (or the start of one), as it waits in its VM's backlog.
pub type Line = heapless::Vec<u8, LINE_MAX>;

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(u: &mut Uart, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            u.write(0, b, &mut |l| {
                out.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        out
    }

    #[test]
    fn output_comes_out_in_lines() {
        let mut u = Uart::new();
        assert_eq!(lines(&mut u, b"hello\r\nwor"), ["hello"]);
        assert_eq!(lines(&mut u, b"ld\n"), ["world"]);
        let long = vec![b'x'; LINE_MAX + 5];
        let out = lines(&mut u, &long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), LINE_MAX);
        let mut rest = Vec::new();
        u.line_buf().flush(&mut |l| rest.push(l.len()));
        assert_eq!(rest, [5]);
    }

    #[test]
    fn registers_behave_like_a_16550() {
        let mut u = Uart::new();
        assert_eq!(u.read(5) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
        u.write(3, 0x83, &mut |_| {});
        u.write(0, 0x0C, &mut |_| {});
        u.write(1, 0x00, &mut |_| {});
        assert_eq!(
            (u.read(0), u.read(1)),
            (0x0C, 0x00),
            "divisor latch while DLAB is set"
        );
        u.write(3, 0x03, &mut |_| {});
        u.write(7, 0x5A, &mut |_| {});
        assert_eq!(u.read(7), 0x5A);
        assert_eq!(u.read(0), 0, "nothing received yet");
        assert_eq!(u.read(5) & LSR_DR, 0);
        assert_eq!(u.read(2) & 0x0F, IIR_NONE);
    }

    #[test]
    fn received_bytes_come_through_the_fifo_with_their_interrupt() {
        let mut u = Uart::new();
        assert_eq!(u.receive(b"ls\r"), 3);
        assert!(!u.irq_pending(), "not enabled yet");
        u.write(1, IER_RDI | IER_THRI, &mut |_| {});
        assert!(u.irq_pending());
        assert_eq!(u.read(2) & 0x0F, IIR_RDI, "data outranks THR empty");
        assert_eq!(u.read(5) & LSR_DR, LSR_DR);
        assert_eq!([u.read(0), u.read(0), u.read(0)], *b"ls\r");
        assert_eq!(u.read(5) & LSR_DR, 0);
        assert_eq!(u.read(2) & 0x0F, IIR_THRI, "then the transmitter");
        assert!(!u.irq_pending());
        // Sixteen bytes fit; the rest waits on the host's side.
        assert_eq!(u.receive(&[b'x'; 40]), RX_FIFO);
        assert_eq!(u.receive(b"y"), 0);
        u.write(2, 0x03, &mut |_| {});
        assert_eq!(u.read(5) & LSR_DR, 0, "FCR cleared the FIFO");
        // With the divisor latch open, offset 0 is the latch, not the FIFO.
        u.receive(b"z");
        u.write(3, 0x83, &mut |_| {});
        assert_eq!(u.read(0), 1);
        u.write(3, 0x03, &mut |_| {});
        assert_eq!(u.read(0), b'z');
    }

    #[test]
    fn a_quiet_unfinished_line_is_let_out_and_continued() {
        let mut u = Uart::new();
        let mut pieces = Vec::new();
        assert!(lines(&mut u, b"debian login: ").is_empty());
        u.line_buf().flush_idle(&mut |p| pieces.push(p.to_vec()));
        assert!(pieces.is_empty(), "the first look only arms");
        u.line_buf().flush_idle(&mut |p| pieces.push(p.to_vec()));
        assert_eq!(pieces, [b"debian login: ".to_vec()]);
        assert!(lines(&mut u, b"ro").is_empty());
        u.line_buf().flush_idle(&mut |p| pieces.push(p.to_vec()));
        assert_eq!(
            lines(&mut u, b"ot\r\n"),
            ["root"],
            "still busy: not let out"
        );
        u.line_buf().flush_idle(&mut |p| pieces.push(p.to_vec()));
        u.line_buf().flush_idle(&mut |p| pieces.push(p.to_vec()));
        assert_eq!(pieces.len(), 1, "nothing left to let out");
    }

    #[test]
    fn thr_empty_interrupt_is_raised_and_cleared_by_iir() {
        let mut u = Uart::new();
        u.write(1, IER_THRI, &mut |_| {});
        assert!(u.irq_pending());
        assert_eq!(u.read(2) & 0x0F, IIR_THRI);
        assert!(!u.irq_pending());
        u.write(0, b'a', &mut |_| {});
        assert!(u.irq_pending());
    }
}
