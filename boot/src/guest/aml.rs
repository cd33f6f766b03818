//! Just enough AML encoding for Janus's DSDT, into a fixed buffer.
//!
//! `acpi_tables` encodes the same objects but allocates for every node; the kernel's heap is
//! a small boot-time arena that VM creation does not draw on, and the DSDT is a few hundred
//! bytes of fixed shape. The tests check that this encoder's output equals `acpi_tables`' for
//! the same tree, byte for byte.

const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0A;
const WORD_PREFIX: u8 = 0x0B;
const DWORD_PREFIX: u8 = 0x0C;
const STRING_PREFIX: u8 = 0x0D;
const QWORD_PREFIX: u8 = 0x0E;
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5B;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';

const MAX_DEPTH: usize = 8;

/// An AML byte stream being built in place. Overflow is sticky and reported by [`Self::finish`].
pub(crate) struct AmlBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    open: [usize; MAX_DEPTH],
    depth: usize,
    overflow: bool,
}

/// A 4-character name segment, or a root-anchored one (`\_SB_`).
#[derive(Clone, Copy)]
pub(crate) struct Name {
    root: bool,
    seg: [u8; 4],
}

impl Name {
    pub(crate) const fn seg(seg: &[u8; 4]) -> Name {
        Name {
            root: false,
            seg: *seg,
        }
    }
    pub(crate) const fn root(seg: &[u8; 4]) -> Name {
        Name {
            root: true,
            seg: *seg,
        }
    }
}

impl<const N: usize> AmlBuf<N> {
    pub(crate) const fn new() -> Self {
        AmlBuf {
            buf: [0; N],
            len: 0,
            open: [0; MAX_DEPTH],
            depth: 0,
            overflow: false,
        }
    }

    /// The encoded bytes, or `None` if they did not fit in `N` (or a package was left open).
    pub(crate) fn finish(&self) -> Option<&[u8]> {
        (!self.overflow && self.depth == 0).then(|| &self.buf[..self.len])
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.overflow = true,
        }
    }

    fn byte(&mut self, b: u8) {
        self.bytes(&[b]);
    }

    fn name_string(&mut self, name: Name) {
        if name.root {
            self.byte(ROOT_CHAR);
        }
        self.bytes(&name.seg);
    }

    /// Starts a PkgLength-prefixed body; its length is inserted by [`Self::close`].
    fn open(&mut self) {
        match self.open.get_mut(self.depth) {
            Some(slot) => {
                *slot = self.len;
                self.depth += 1;
            }
            None => self.overflow = true,
        }
    }

    /// Inserts the PkgLength (which counts itself) in front of the body opened last, in its
    /// shortest encoding.
    fn close(&mut self) {
        if self.overflow || self.depth == 0 {
            self.overflow = true;
            return;
        }
        self.depth -= 1;
        let start = self.open[self.depth];
        let body = self.len - start;
        let (n, total) = match body {
            b if b + 1 < 1 << 6 => (1, b + 1),
            b if b + 2 < 1 << 12 => (2, b + 2),
            b if b + 3 < 1 << 20 => (3, b + 3),
            b if b + 4 < 1 << 28 => (4, b + 4),
            _ => {
                self.overflow = true;
                return;
            }
        };
        if self.len + n > N {
            self.overflow = true;
            return;
        }
        self.buf.copy_within(start..self.len, start + n);
        self.len += n;
        let enc = &mut self.buf[start..start + n];
        if n == 1 {
            enc[0] = total as u8;
        } else {
            enc[0] = (((n - 1) as u8) << 6) | (total & 0xF) as u8;
            for (i, b) in enc[1..].iter_mut().enumerate() {
                *b = (total >> (4 + 8 * i)) as u8;
            }
        }
    }

    /// `Scope (name) { body }`
    pub(crate) fn scope(&mut self, name: Name, body: impl FnOnce(&mut Self)) {
        self.byte(SCOPE_OP);
        self.open();
        self.name_string(name);
        body(self);
        self.close();
    }

    /// `Device (name) { body }`
    pub(crate) fn device(&mut self, name: Name, body: impl FnOnce(&mut Self)) {
        self.bytes(&[EXT_OP_PREFIX, DEVICE_OP]);
        self.open();
        self.name_string(name);
        body(self);
        self.close();
    }

    /// `Name (name, <value written by value>)`
    pub(crate) fn name(&mut self, name: Name, value: impl FnOnce(&mut Self)) {
        self.byte(NAME_OP);
        self.name_string(name);
        value(self);
    }

    /// An integer in its shortest encoding (ZeroOp/OneOp/Byte/Word/DWord/QWord).
    pub(crate) fn integer(&mut self, v: u64) {
        match v {
            0 => self.byte(ZERO_OP),
            1 => self.byte(ONE_OP),
            v if v <= u8::MAX.into() => self.bytes(&[BYTE_PREFIX, v as u8]),
            v if v <= u16::MAX.into() => {
                self.byte(WORD_PREFIX);
                self.bytes(&(v as u16).to_le_bytes());
            }
            v if v <= u32::MAX.into() => self.dword(v as u32),
            v => {
                self.byte(QWORD_PREFIX);
                self.bytes(&v.to_le_bytes());
            }
        }
    }

    /// A DWordConst whatever its value (EISA IDs are always encoded so).
    fn dword(&mut self, v: u32) {
        self.byte(DWORD_PREFIX);
        self.bytes(&v.to_le_bytes());
    }

    /// `EisaId ("UUUNNNN")`: three 5-bit letters and four hex digits, stored big-endian.
    /// Ids are compile-time constants of this crate, so a malformed one is a bug caught by
    /// the tests; it encodes as 0 rather than panicking.
    pub(crate) fn eisa_id(&mut self, id: &[u8; 7]) {
        self.dword(eisa_id(id).unwrap_or(0));
    }

    pub(crate) fn string(&mut self, s: &[u8]) {
        self.byte(STRING_PREFIX);
        self.bytes(s);
        self.byte(0);
    }

    /// `Package () { elements }` with `count` elements written by `elements`.
    pub(crate) fn package(&mut self, count: u8, elements: impl FnOnce(&mut Self)) {
        self.byte(PACKAGE_OP);
        self.open();
        self.byte(count);
        elements(self);
        self.close();
    }

    /// `ResourceTemplate () { descriptors }`: a buffer of resource descriptors closed by an
    /// end tag whose zero checksum means "not checked".
    pub(crate) fn resource_template(&mut self, descriptors: &[&[u8]]) {
        const END_TAG: [u8; 2] = [0x79, 0];
        let len = descriptors.iter().map(|d| d.len()).sum::<usize>() + END_TAG.len();
        self.byte(BUFFER_OP);
        self.open();
        self.integer(len as u64);
        for d in descriptors {
            self.bytes(d);
        }
        self.bytes(&END_TAG);
        self.close();
    }
}

pub(crate) const fn eisa_id(id: &[u8; 7]) -> Option<u32> {
    let mut v: u32 = 0;
    let mut i = 0;
    while i < 3 {
        if !id[i].is_ascii_uppercase() {
            return None;
        }
        v = (v << 5) | (id[i] - b'@') as u32;
        i += 1;
    }
    while i < 7 {
        let d = match id[i] {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u32;
        i += 1;
    }
    Some(v.swap_bytes())
}

/// Small resource descriptor: 16-bit decoded I/O range.
pub(crate) const fn io_port(min: u16, max: u16, align: u8, len: u8) -> [u8; 8] {
    let [min_lo, min_hi] = min.to_le_bytes();
    let [max_lo, max_hi] = max.to_le_bytes();
    [0x47, 0x01, min_lo, min_hi, max_lo, max_hi, align, len]
}

/// Large resource descriptor: one extended interrupt, consumer, exclusive.
pub(crate) const fn interrupt(edge: bool, active_low: bool, gsi: u32) -> [u8; 9] {
    let flags = 1 | ((edge as u8) << 1) | ((active_low as u8) << 2);
    let [a, b, c, d] = gsi.to_le_bytes();
    [0x89, 6, 0, flags, 1, a, b, c, d]
}

/// Large resource descriptor: a fixed bus-number range the device produces (WordBusNumber).
pub(crate) const fn word_bus_number(min: u16, max: u16) -> [u8; 16] {
    let [min_lo, min_hi] = min.to_le_bytes();
    let [max_lo, max_hi] = max.to_le_bytes();
    let [len_lo, len_hi] = (max - min + 1).to_le_bytes();
    // Type 2 (bus numbers); producer, positive decode, min and max fixed.
    [
        0x88, 13, 0, 2, 0x0C, 0, 0, 0, min_lo, min_hi, max_lo, max_hi, 0, 0, len_lo, len_hi,
    ]
}

/// Large resource descriptor: a fixed 32-bit memory window the device produces (DWordMemory),
/// read-write, non-cacheable.
pub(crate) const fn dword_memory(min: u32, max: u32) -> [u8; 26] {
    let mut d = [0u8; 26];
    d[0] = 0x87;
    d[1] = 23;
    // Type 0 (memory); producer, positive decode, min and max fixed; read-write.
    d[3] = 0;
    d[4] = 0x0C;
    d[5] = 1;
    let fields = [0, min, max, 0, max - min + 1];
    let mut i = 0;
    while i < fields.len() {
        let b = fields[i].to_le_bytes();
        d[6 + 4 * i] = b[0];
        d[7 + 4 * i] = b[1];
        d[8 + 4 * i] = b[2];
        d[9 + 4 * i] = b[3];
        i += 1;
    }
    d
}

/// Large resource descriptor: a fixed 32-bit memory range the device consumes, read-write.
pub(crate) const fn memory32_fixed(base: u32, len: u32) -> [u8; 12] {
    let b = base.to_le_bytes();
    let l = len.to_le_bytes();
    [
        0x86, 9, 0, 1, b[0], b[1], b[2], b[3], l[0], l[1], l[2], l[3],
    ]
}
