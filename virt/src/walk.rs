//! Guest page-table walker: linear → guest-physical, with the #PF error code on failure.
//!
//! Used for hypercall arguments that are guest-virtual and for fetching the instruction at RIP.
//! Covers paging off, 32-bit (with PSE 4 MiB pages), PAE, 4-level and 5-level (CR4.LA57).
//! It does not set accessed/dirty bits: callers only read through it, or write data the guest
//! asked for, so a missing A/D update is invisible to well-behaved guests.

use crate::bits::*;
use crate::{ControlRegs, GuestMemory, MemError};

/// Which kind of access is translated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// A CPL-3 access (U/S checks apply).
    pub user: bool,
    /// Instruction fetch (NX/SMEP checks apply).
    pub exec: bool,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub gpa: u64,
    /// Size of the page that maps it (4 KiB, 2 MiB, 4 MiB or 1 GiB), or 0 with paging off.
    pub page_size: u64,
    pub writable: bool,
    pub user: bool,
    pub executable: bool,
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// Inject #PF with this error code and CR2 = `address`.
    PageFault { error_code: u32, address: u64 },
    /// A paging structure lies outside guest RAM.
    Memory(MemError),
}

/// Paging mode from the control registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    Bits32,
    Pae,
    Level4,
    Level5,
}

pub fn mode(c: &ControlRegs) -> Mode {
    if c.cr0 & CR0_PG == 0 {
        Mode::Off
    } else if c.cr4 & CR4_PAE == 0 {
        Mode::Bits32
    } else if c.efer & EFER_LMA == 0 {
        Mode::Pae
    } else if c.cr4 & CR4_LA57 != 0 {
        Mode::Level5
    } else {
        Mode::Level4
    }
}

pub const PF_P: u32 = 1;
pub const PF_W: u32 = 1 << 1;
pub const PF_U: u32 = 1 << 2;
pub const PF_RSVD: u32 = 1 << 3;
pub const PF_I: u32 = 1 << 4;

const P: u64 = 1;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Translates `la` for `access`.
pub fn translate(
    mem: &(impl GuestMemory + ?Sized),
    c: &ControlRegs,
    la: u64,
    access: Access,
) -> Result<Translation, WalkError> {
    let m = mode(c);
    if m == Mode::Off {
        let gpa = if c.efer & EFER_LMA != 0 {
            la
        } else {
            la & 0xffff_ffff
        };
        return Ok(Translation {
            gpa,
            page_size: 0,
            writable: true,
            user: true,
            executable: true,
        });
    }
    let nxe = c.efer & EFER_NXE != 0 && m != Mode::Bits32;
    let fault_code = |present: bool, rsvd: bool| {
        let mut e = 0;
        if present {
            e |= PF_P;
        }
        if access.write {
            e |= PF_W;
        }
        if access.user {
            e |= PF_U;
        }
        if rsvd {
            e |= PF_RSVD | PF_P;
        }
        if access.exec && (nxe || c.cr4 & CR4_SMEP != 0) {
            e |= PF_I;
        }
        WalkError::PageFault {
            error_code: e,
            address: la,
        }
    };

    // Canonical-address violations are #GP/#SS, not #PF; report them as a not-present fault
    // with RSVD clear so callers fail the access rather than walk a wrapped address.
    if matches!(m, Mode::Level4 | Mode::Level5) {
        let bits = if m == Mode::Level5 { 57 } else { 48 };
        let sext = ((la << (64 - bits)) as i64 >> (64 - bits)) as u64;
        if sext != la {
            return Err(fault_code(false, false));
        }
    }

    // (table address, index shift, levels) per mode; PAE's first step is the PDPTE register.
    let (mut table, levels): (u64, u32) = match m {
        Mode::Bits32 => (c.cr3 & 0xffff_f000, 2),
        Mode::Pae => (c.cr3 & 0xffff_ffe0, 3),
        Mode::Level4 => (c.cr3 & ADDR, 4),
        Mode::Level5 => (c.cr3 & ADDR, 5),
        Mode::Off => return Err(fault_code(false, false)),
    };
    let mut writable = true;
    let mut user = true;
    let mut executable = true;
    for level in (0..levels).rev() {
        let (entry, idx_shift) = if m == Mode::Bits32 {
            let shift = 12 + 10 * level;
            let idx = (la >> shift) & 0x3ff;
            let e = mem.read_u32(table + idx * 4).map_err(WalkError::Memory)?;
            (u64::from(e), shift)
        } else {
            let shift = 12 + 9 * level;
            let idx = if m == Mode::Pae && level == 2 {
                (la >> 30) & 3
            } else {
                (la >> shift) & 0x1ff
            };
            let e = mem.read_u64(table + idx * 8).map_err(WalkError::Memory)?;
            (e, shift)
        };
        if entry & P == 0 {
            return Err(fault_code(false, false));
        }
        if entry & NX != 0 && !nxe && m != Mode::Bits32 {
            return Err(fault_code(true, true));
        }
        let pae_pdpte = m == Mode::Pae && level == 2;
        if pae_pdpte {
            // PDPTEs carry no R/W, U/S or NX; their reserved bits fault on load.
            if entry & 0x1e6 != 0 {
                return Err(fault_code(true, true));
            }
        } else {
            writable &= entry & RW != 0;
            user &= entry & US != 0;
            if nxe {
                executable &= entry & NX == 0;
            }
        }
        let large_ok = match m {
            Mode::Bits32 => level == 1 && c.cr4 & CR4_PSE != 0,
            Mode::Pae => level == 1,
            _ => level == 1 || level == 2,
        };
        let leaf = level == 0 || (entry & PS != 0 && !pae_pdpte);
        if entry & PS != 0 && level > 0 && !large_ok && !pae_pdpte {
            if m == Mode::Bits32 {
                // Without CR4.PSE the PS bit of a PDE is ignored: it points at a page table.
            } else {
                return Err(fault_code(true, true));
            }
        }
        if leaf && (level == 0 || large_ok) {
            let page = 1u64 << idx_shift;
            let base = if m == Mode::Bits32 && level == 1 {
                // PSE-36: bits 20:13 of a 4 MiB PDE are physical-address bits 39:32.
                (entry & 0xffc0_0000) | (((entry >> 13) & 0xff) << 32)
            } else {
                entry & ADDR & !(page - 1)
            };
            let t = Translation {
                gpa: base | (la & (page - 1)),
                page_size: page,
                writable,
                user,
                executable,
            };
            check(c, access, &t).map_err(|_| fault_code(true, false))?;
            return Ok(t);
        }
        table = if m == Mode::Bits32 {
            entry & 0xffff_f000
        } else {
            entry & ADDR
        };
    }
    Err(fault_code(false, false))
}

fn check(c: &ControlRegs, a: Access, t: &Translation) -> Result<(), ()> {
    if a.user && !t.user {
        return Err(());
    }
    if a.write && !t.writable && (a.user || c.cr0 & CR0_WP != 0) {
        return Err(());
    }
    if a.exec && !t.executable {
        return Err(());
    }
    if a.exec && !a.user && t.user && c.cr4 & CR4_SMEP != 0 {
        return Err(());
    }
    Ok(())
}

/// Reads guest-virtual memory, page by page. Stops with the first failing page.
pub fn read_virt(
    mem: &(impl GuestMemory + ?Sized),
    c: &ControlRegs,
    la: u64,
    access: Access,
    buf: &mut [u8],
) -> Result<(), WalkError> {
    let mut done = 0usize;
    while done < buf.len() {
        let addr = la.wrapping_add(done as u64);
        let t = translate(mem, c, addr, access)?;
        let in_page = (0x1000 - (addr & 0xfff)) as usize;
        let n = in_page.min(buf.len() - done);
        mem.read(t.gpa, &mut buf[done..done + n])
            .map_err(WalkError::Memory)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VecMemory;

    const R: Access = Access {
        write: false,
        user: false,
        exec: false,
    };
    const W: Access = Access {
        write: true,
        user: false,
        exec: false,
    };
    const UR: Access = Access {
        write: false,
        user: true,
        exec: false,
    };
    const X: Access = Access {
        write: false,
        user: false,
        exec: true,
    };

    fn ctl(cr0: u64, cr3: u64, cr4: u64, efer: u64) -> ControlRegs {
        ControlRegs {
            cr0,
            cr2: 0,
            cr3,
            cr4,
            efer,
        }
    }

    #[test]
    fn paging_off_is_identity_and_truncates_outside_long_mode() {
        let m = VecMemory::new(0x1000);
        let c = ctl(CR0_PE, 0, 0, 0);
        assert_eq!(
            translate(&m, &c, 0x1_2345_6789, R).unwrap().gpa,
            0x2345_6789
        );
    }

    fn long4() -> (VecMemory, ControlRegs) {
        // PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
        let m = VecMemory::new(0x40_0000);
        m.write_u64(0x1000, 0x2000 | 7).unwrap();
        m.write_u64(0x2000, 0x3000 | 7).unwrap();
        m.write_u64(0x3000, 0x4000 | 3).unwrap(); // supervisor-only below
        m.write_u64(0x3008, 0x20_0000 | 0x83 | NX).unwrap(); // 2 MiB page, RW, NX
        m.write_u64(0x4000 + 5 * 8, 0x9000 | 1).unwrap(); // read-only
        m.write_u64(0x4000 + 6 * 8, 0xa000 | 3).unwrap();
        let c = ctl(
            CR0_PE | CR0_PG | CR0_WP,
            0x1000,
            CR4_PAE,
            EFER_LME | EFER_LMA | EFER_NXE,
        );
        (m, c)
    }

    #[test]
    fn four_level_walk_and_permissions() {
        let (m, c) = long4();
        assert_eq!(translate(&m, &c, 0x5123, R).unwrap().gpa, 0x9123);
        assert_eq!(
            translate(&m, &c, 0x5123, W),
            Err(WalkError::PageFault {
                error_code: PF_P | PF_W,
                address: 0x5123
            })
        );
        // CR0.WP clear: supervisor writes ignore R/W.
        let mut c2 = c;
        c2.cr0 &= !CR0_WP;
        assert!(translate(&m, &c2, 0x5123, W).is_ok());
        assert_eq!(
            translate(&m, &c, 0x6000, UR),
            Err(WalkError::PageFault {
                error_code: PF_P | PF_U,
                address: 0x6000
            })
        );
        assert_eq!(
            translate(&m, &c, 0x7000, R),
            Err(WalkError::PageFault {
                error_code: 0,
                address: 0x7000
            })
        );
        let t = translate(&m, &c, 0x21_2345, W).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x21_2345, 0x20_0000));
        assert_eq!(
            translate(&m, &c, 0x21_2345, X),
            Err(WalkError::PageFault {
                error_code: PF_P | PF_I,
                address: 0x21_2345
            })
        );
    }

    #[test]
    fn nx_without_efer_nxe_is_a_reserved_bit_fault() {
        let (m, mut c) = long4();
        c.efer &= !EFER_NXE;
        assert_eq!(
            translate(&m, &c, 0x20_0000, R),
            Err(WalkError::PageFault {
                error_code: PF_P | PF_RSVD,
                address: 0x20_0000
            })
        );
    }

    #[test]
    fn non_canonical_and_tables_outside_ram() {
        let (m, mut c) = long4();
        assert!(matches!(
            translate(&m, &c, 0x0000_8000_0000_0000, R),
            Err(WalkError::PageFault { .. })
        ));
        c.cr3 = 0x1000_0000;
        assert!(matches!(
            translate(&m, &c, 0x1000, R),
            Err(WalkError::Memory(_))
        ));
    }

    #[test]
    fn five_level_walk() {
        let m = VecMemory::new(0x10_0000);
        // PML5 0x1000 -> PML4 0x2000 -> PDPT 0x3000 (1 GiB page at index 1).
        let la: u64 = (1 << 48) | (1 << 39) | (1 << 30) | 0x1234;
        m.write_u64(0x1000 + 8, 0x2000 | 7).unwrap();
        m.write_u64(0x2000 + 8, 0x3000 | 7).unwrap();
        m.write_u64(0x3000 + 8, 0x4000_0000 | 0x87).unwrap();
        let c = ctl(
            CR0_PE | CR0_PG,
            0x1000,
            CR4_PAE | CR4_LA57,
            EFER_LME | EFER_LMA,
        );
        let t = translate(&m, &c, la, UR).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x4000_1234, 1 << 30));
        // Without LA57 the same address is not canonical for 4 levels.
        let c4 = ctl(CR0_PE | CR0_PG, 0x1000, CR4_PAE, EFER_LME | EFER_LMA);
        assert!(translate(&m, &c4, la, R).is_err());
    }

    #[test]
    fn pae_walk() {
        let m = VecMemory::new(0x10_0000);
        // CR3 0x1020 (32-byte aligned PDPT), PDPTE[1] -> PD 0x2000; PDE[0] 2 MiB; PDE[1] -> PT 0x3000.
        m.write_u64(0x1028, 0x2000 | 1).unwrap();
        m.write_u64(0x2000, 0x60_0000 | 0x83).unwrap();
        m.write_u64(0x2008, 0x3000 | 7).unwrap();
        m.write_u64(0x3000 + 2 * 8, 0x7000 | 5).unwrap();
        let c = ctl(CR0_PE | CR0_PG, 0x1020, CR4_PAE, 0);
        assert_eq!(translate(&m, &c, 0x4001_2345, R).unwrap().gpa, 0x61_2345);
        assert_eq!(translate(&m, &c, 0x4020_2abc, UR).unwrap().gpa, 0x7abc);
        assert!(
            translate(&m, &c, 0x4000_0000, UR).is_err(),
            "the 2 MiB page is supervisor"
        );
        // Reserved bit (RW) in a PDPTE.
        m.write_u64(0x1028, 0x2000 | 3).unwrap();
        assert_eq!(
            translate(&m, &c, 0x4000_0000, R),
            Err(WalkError::PageFault {
                error_code: PF_P | PF_RSVD,
                address: 0x4000_0000
            })
        );
    }

    #[test]
    fn legacy_32bit_walk_with_pse() {
        let m = VecMemory::new(0x10_0000);
        // PD 0x1000: PDE[0] -> PT 0x2000, PDE[1] 4 MiB page at 0x1_0040_0000 (PSE-36 bit).
        m.write_u32(0x1000, 0x2000 | 7).unwrap();
        m.write_u32(0x1004, 0x0040_0000 | (1 << 13) | 0x83).unwrap();
        m.write_u32(0x2000 + 3 * 4, 0x5000 | 7).unwrap();
        let c = ctl(CR0_PE | CR0_PG, 0x1000, CR4_PSE, 0);
        assert_eq!(translate(&m, &c, 0x3abc, UR).unwrap().gpa, 0x5abc);
        let t = translate(&m, &c, 0x0041_2345, R).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x1_0041_2345, 0x40_0000));
        // Without CR4.PSE the same PDE points at a page table (at 0x400000, outside RAM).
        let c2 = ctl(CR0_PE | CR0_PG, 0x1000, 0, 0);
        assert!(matches!(
            translate(&m, &c2, 0x0041_2345, R),
            Err(WalkError::Memory(_))
        ));
    }

    #[test]
    fn read_virt_crosses_pages() {
        let (m, c) = long4();
        m.write(0x9ffe, &[1, 2]).unwrap();
        m.write(0xa000, &[3, 4]).unwrap();
        let mut b = [0u8; 4];
        read_virt(&m, &c, 0x5ffe, R, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(read_virt(&m, &c, 0x6ffe, R, &mut b).is_err());
    }
}
