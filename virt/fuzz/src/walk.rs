//! The guest page walker (and the instruction fetch built on it) on page tables a script
//! writes: paging off, 32-bit, PAE, 4- and 5-level, with PSE, NX, SMEP and WP chosen by the
//! first byte, then table entries scribbled into a small RAM (frames mostly inside it, flags
//! mostly those of a table entry, sometimes anything, reserved bits included) between translations of chosen addresses. A panic, a page size
//! the architecture lacks, a translation that moves the offset inside its page, a virtual read
//! that succeeds where the translation of its first byte fails, or a fetch longer than an
//! instruction is a bug.

use virt::insn_len::{self, Insn, MAX_LEN};
use virt::mmio::{self, CodeSize};
use virt::walk::{self, Access, Mode};
use virt::{ControlRegs, GuestMemory, Segment, VecMemory, bits};

/// Small, so random frame numbers often land inside and sometimes do not.
const PAGES: u64 = 16;
const MAX_OPS: usize = 512;

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }

    /// Up to 8 bytes, little-endian; a short tail is zero-extended.
    fn u64(&mut self) -> Option<u64> {
        let n = self.0.len().min(8);
        if n == 0 {
            return None;
        }
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Some(u64::from_le_bytes(b))
    }

    /// A frame: mostly in RAM, sometimes just past it, now and then with bits above
    /// MAXPHYADDR (reserved in every paging mode that has them).
    fn frame(&mut self) -> Option<u64> {
        let b = self.u8()?;
        let frame = u64::from(b % (PAGES as u8 + 4)) << 12;
        Some(if b >= 0xf0 {
            frame | u64::from(self.u8()?) << 44
        } else {
            frame
        })
    }

    /// An address: raw, or built from small table indices so that it meets the entries the
    /// script wrote near the start of each table.
    fn address(&mut self) -> Option<u64> {
        let sel = self.u8()?;
        if sel & 1 == 0 {
            return self.u64();
        }
        let mut va = u64::from(self.u16()? & 0xfff);
        for level in 0..5u32 {
            va |= u64::from(self.u8()? % 4) << (12 + 9 * level);
        }
        // The fifth level's index only now and then (it makes the address non-canonical
        // with four levels), and the upper half sometimes.
        if sel & 2 == 0 {
            va &= (1 << 48) - 1;
        }
        if sel & 12 == 12 {
            va |= 0xffff_8000_0000_0000;
        }
        Some(va)
    }
}

fn control_regs(h: u8, cr3: u64) -> ControlRegs {
    let on = |bit: u8, v: u64| if h & (1 << bit) != 0 { v } else { 0 };
    // Bit 0 clear: paging on (most scripts should walk something).
    let pg = if h & 1 == 0 { bits::CR0_PG } else { 0 };
    ControlRegs {
        cr0: bits::CR0_PE | pg | on(1, bits::CR0_WP),
        cr2: 0,
        cr3,
        cr4: on(2, bits::CR4_PAE)
            | on(3, bits::CR4_LA57)
            | on(4, bits::CR4_PSE)
            | on(5, bits::CR4_SMEP),
        efer: on(6, bits::EFER_LME | bits::EFER_LMA) | on(7, bits::EFER_NXE),
    }
}

pub fn run(data: &[u8]) {
    let mut s = Script(data);
    let (Some(h), Some(cr3)) = (s.u8(), s.frame()) else {
        return;
    };
    let ctl = control_regs(h, cr3);
    let mem = VecMemory::new((PAGES * 4096) as usize);
    for _ in 0..MAX_OPS {
        let Some(op) = s.u8() else { break };
        match op % 8 {
            // An entry: in any page, mostly near the start of a table.
            0..=2 => {
                let (Some(page), Some(slot), Some(e)) = (s.u8(), s.u16(), entry(&mut s, op)) else {
                    break;
                };
                let slot = if op & 0x80 != 0 { slot % 512 } else { slot % 4 };
                let at = (u64::from(page) % PAGES) * 4096 + u64::from(slot) * 8;
                let _ = mem.write(at, &e.to_le_bytes());
            }
            // A whole table of one entry: any index meets it, so walks get deep.
            3 => {
                let (Some(page), Some(e)) = (s.u8(), entry(&mut s, op)) else {
                    break;
                };
                let table = [e.to_le_bytes(); 512];
                let _ = mem.write((u64::from(page) % PAGES) * 4096, table.as_flattened());
            }
            4 | 5 => {
                let (Some(va), Some(a)) = (s.address(), s.u8()) else {
                    break;
                };
                check_translation(&mem, &ctl, va, a);
            }
            _ => {
                let (Some(rip), Some(a)) = (s.address(), s.u8()) else {
                    break;
                };
                check_fetch(&mem, &ctl, rip, a);
            }
        }
    }
}

/// A table entry: mostly present, writable, user and not a large page; sometimes any flags,
/// reserved bits included.
fn entry(s: &mut Script<'_>, op: u8) -> Option<u64> {
    let (frame, flags) = (s.frame()?, s.u16()?);
    let nx = if op & 0x40 != 0 { 1 << 63 } else { 0 };
    let flags = if op & 0x20 != 0 {
        u64::from(flags & 0xfff)
    } else {
        u64::from(flags & 0xf78) | 0x7
    };
    Some(frame | flags | nx)
}

fn access(a: u8) -> Access {
    Access {
        write: a & 1 != 0,
        user: a & 2 != 0,
        exec: a & 4 != 0,
    }
}

fn check_translation(mem: &VecMemory, ctl: &ControlRegs, va: u64, a: u8) {
    let access = access(a);
    let t = walk::translate(mem, ctl, va, access);
    if let Ok(t) = t {
        let size = t.page_size;
        assert!(
            matches!(size, 0 | 0x1000 | 0x20_0000 | 0x40_0000 | 0x4000_0000),
            "page size {size:#x}"
        );
        if size == 0 {
            assert_eq!(walk::mode(ctl), Mode::Off);
        } else {
            assert_eq!(t.gpa & (size - 1), va & (size - 1), "offset moved");
        }
    }
    let mut buf = [0u8; 24];
    let n = usize::from(a >> 3) % (buf.len() + 1);
    if n > 0 && walk::read_virt(mem, ctl, va, access, &mut buf[..n]).is_ok() {
        assert!(t.is_ok(), "read {va:#x} where its translation failed");
    }
}

fn check_fetch(mem: &VecMemory, ctl: &ControlRegs, rip: u64, a: u8) {
    let cs = if a & 1 != 0 {
        Segment::new(8, 0, 0xffff_ffff, Segment::CODE64)
    } else {
        Segment::new(8, u64::from(a) << 12, 0xffff_ffff, Segment::CODE32)
    };
    let cpl = if a & 2 != 0 { 3 } else { 0 };
    let (bytes, n, long) = insn_len::fetch(mem, ctl, &cs, rip, cpl);
    assert!(n <= MAX_LEN, "fetched {n} bytes");
    let fetched = bytes.get(..n).unwrap_or(&[]);
    let mode = if long {
        CodeSize::Bits64
    } else {
        CodeSize::Bits32
    };
    if let Some(i) = mmio::decode(fetched, mode) {
        assert!(usize::from(i.len) <= n);
    }
    for insn in [Insn::Cpuid, Insn::Vmcall, Insn::Hlt] {
        if let Some(len) = insn_len::at_rip(mem, ctl, &cs, rip, cpl, insn) {
            assert!(len as usize <= n, "length {len} past the {n} bytes fetched");
        }
    }
}
