//! The 16550 UART a VM sees at 0x3F8 (COM1). Output goes to the hypervisor's COM1 one line at
//! a time, prefixed with the VM's name; input is never available. The transmitter is always
//! empty, so guests polling LSR never wait.

pub const COM1_BASE: u16 = 0x3F8;
pub const PORTS: core::ops::RangeInclusive<u16> = COM1_BASE..=COM1_BASE + 7;
pub const LINE_MAX: usize = 160;

const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
const IER_THRI: u8 = 1 << 1;
const IIR_NONE: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
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
    line: LineBuf,
}

/// Console output gathered into lines, so each line can carry its VM's name.
pub struct LineBuf {
    line: heapless::Vec<u8, LINE_MAX>,
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
        }
    }

    pub fn push(&mut self, b: u8, line_out: &mut dyn FnMut(&[u8])) {
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
            line: LineBuf::new(),
        }
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
            2 => self.fcr = value,
            3 => self.lcr = value,
            4 => self.mcr = value & 0x1F,
            7 => self.scr = value,
            _ => {}
        }
    }

    /// Hands out what is buffered (e.g. when the VM stops mid-line).
    pub fn flush(&mut self, line_out: &mut dyn FnMut(&[u8])) {
        self.line.flush(line_out);
    }

    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.dll,
            0 => 0,
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let fifo = if self.fcr & 1 != 0 { IIR_FIFO } else { 0 };
                if self.irq_pending() {
                    self.thri_owed = false;
                    IIR_THRI | fifo
                } else {
                    IIR_NONE | fifo
                }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_THRE | LSR_TEMT,
            // Loopback mode reflects MCR outputs; otherwise CTS/DSR/DCD are asserted.
            6 if self.mcr & 0x10 != 0 => (self.mcr & 0x0F) << 4,
            6 => 0xB0,
            7 => self.scr,
            _ => 0xFF,
        }
    }

    /// The UART's interrupt line (only the transmitter-empty source exists).
    pub fn irq_pending(&self) -> bool {
        self.ier & IER_THRI != 0 && self.thri_owed
    }

    fn push(&mut self, b: u8, line_out: &mut dyn FnMut(&[u8])) {
        self.line.push(b, line_out);
    }
}

/// One finished guest console line, carried out of the VM's lock before it is printed.
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
        u.flush(&mut |l| rest.push(l.len()));
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
        assert_eq!(u.read(0), 0, "no input ever arrives");
        assert_eq!(u.read(2) & 0x0F, IIR_NONE);
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
