//! Decoding the few instructions guests use to touch device memory (MOV loads and stores,
//! MOVZX), so the kernel can emulate an access the nested tables refused: read the device or
//! the all-ones of an empty bus, write the device or drop the write, then skip the instruction.
//! Anything else is refused; the kernel then faults the guest instead of guessing.

/// What the decoded instruction does with memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Memory -> GPR `reg`; `size` bytes are read. `dest_size` is the register width written
    /// (MOVZX widens; a 4-byte write zero-extends to 64 bits as every 32-bit write does).
    Load {
        reg: u8,
        high_byte: bool,
        dest_size: u8,
    },
    /// GPR `reg` (or its high byte: AH/CH/DH/BH) -> memory.
    StoreReg { reg: u8, high_byte: bool },
    /// Immediate -> memory.
    StoreImm(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInsn {
    pub len: u8,
    /// Bytes of memory accessed: 1, 2, 4 or 8.
    pub size: u8,
    pub access: Access,
}

/// The CPU mode the bytes were fetched in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSize {
    Bits16,
    Bits32,
    Bits64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        (self.at + n <= self.bytes.len()).then(|| self.at += n)
    }

    fn imm(&mut self, n: usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.byte()?) << (8 * i);
        }
        Some(v)
    }
}

/// Decodes the instruction at the start of `bytes`.
pub fn decode(bytes: &[u8], mode: CodeSize) -> Option<MmioInsn> {
    let bytes = &bytes[..bytes.len().min(crate::insn_len::MAX_LEN)];
    let mut c = Cursor { bytes, at: 0 };
    let mut opsize_prefix = false;
    let mut addrsize_prefix = false;
    let mut b = c.byte()?;
    loop {
        match b {
            0x66 => opsize_prefix = true,
            0x67 => addrsize_prefix = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break,
        }
        b = c.byte()?;
    }
    let mut rex = 0u8;
    if mode == CodeSize::Bits64 && (0x40..=0x4f).contains(&b) {
        rex = b;
        b = c.byte()?;
    }
    let rex_w = rex & 8 != 0;
    let op_size: u8 = match (mode, rex_w, opsize_prefix) {
        (_, true, _) => 8,
        (CodeSize::Bits16, _, false) | (CodeSize::Bits32 | CodeSize::Bits64, _, true) => 2,
        _ => 4,
    };
    let addr16 = matches!(
        (mode, addrsize_prefix),
        (CodeSize::Bits16, false) | (CodeSize::Bits32, true)
    );

    let two_byte = b == 0x0f;
    let opcode = if two_byte { c.byte()? } else { b };
    let modrm = c.byte()?;
    let md = modrm >> 6;
    let reg_field = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
    let rm = modrm & 7;
    if md == 3 {
        return None; // a register operand: no memory access to emulate
    }
    if addr16 {
        match (md, rm) {
            (0, 6) => c.skip(2)?,
            (1, _) => c.skip(1)?,
            (2, _) => c.skip(2)?,
            _ => {}
        }
    } else {
        let mut base = rm;
        if rm == 4 {
            base = c.byte()? & 7;
        }
        match md {
            0 if rm == 5 || (rm == 4 && base == 5) => c.skip(4)?,
            1 => c.skip(1)?,
            2 => c.skip(4)?,
            _ => {}
        }
    }
    // Without REX, byte registers 4-7 are AH, CH, DH, BH.
    let byte_reg = |r: u8| {
        if rex == 0 && (4..8).contains(&r) {
            (r - 4, true)
        } else {
            (r, false)
        }
    };

    let (size, access) = match (two_byte, opcode) {
        (false, 0x88) => {
            let (reg, high_byte) = byte_reg(reg_field);
            (1, Access::StoreReg { reg, high_byte })
        }
        (false, 0x89) => (
            op_size,
            Access::StoreReg {
                reg: reg_field,
                high_byte: false,
            },
        ),
        (false, 0x8a) => {
            let (reg, high_byte) = byte_reg(reg_field);
            (
                1,
                Access::Load {
                    reg,
                    high_byte,
                    dest_size: 1,
                },
            )
        }
        (false, 0x8b) => (
            op_size,
            Access::Load {
                reg: reg_field,
                high_byte: false,
                dest_size: op_size,
            },
        ),
        (false, 0xc6) if reg_field & 7 == 0 => (1, Access::StoreImm(c.imm(1)?)),
        (false, 0xc7) if reg_field & 7 == 0 => {
            let n = if op_size == 2 { 2 } else { 4 };
            let raw = c.imm(n)?;
            // imm32 is sign-extended to 64 bits under REX.W.
            let v = if op_size == 8 {
                raw as u32 as i32 as i64 as u64
            } else {
                raw
            };
            (op_size, Access::StoreImm(v))
        }
        (true, 0xb6) => (
            1,
            Access::Load {
                reg: reg_field,
                high_byte: false,
                dest_size: op_size,
            },
        ),
        (true, 0xb7) => (
            2,
            Access::Load {
                reg: reg_field,
                high_byte: false,
                dest_size: op_size,
            },
        ),
        _ => return None,
    };
    Some(MmioInsn {
        len: c.at as u8,
        size,
        access,
    })
}

/// The new value of a 64-bit GPR after a load of `data` into it.
pub fn merge_load(old: u64, data: u64, dest_size: u8, high_byte: bool) -> u64 {
    match (dest_size, high_byte) {
        (1, true) => (old & !0xff00) | ((data & 0xff) << 8),
        (1, false) => (old & !0xff) | (data & 0xff),
        (2, _) => (old & !0xffff) | (data & 0xffff),
        (4, _) => data & 0xffff_ffff,
        _ => data,
    }
}

/// The bytes a store writes, from the source register's value.
pub fn store_value(reg_value: u64, size: u8, high_byte: bool) -> u64 {
    let v = if high_byte { reg_value >> 8 } else { reg_value };
    match size {
        1 => v & 0xff,
        2 => v & 0xffff,
        4 => v & 0xffff_ffff,
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CodeSize::*;

    fn d(bytes: &[u8], mode: CodeSize) -> Option<MmioInsn> {
        decode(bytes, mode)
    }

    #[test]
    fn loads() {
        // mov eax, [rdi]
        assert_eq!(
            d(&[0x8b, 0x07], Bits64),
            Some(MmioInsn {
                len: 2,
                size: 4,
                access: Access::Load {
                    reg: 0,
                    high_byte: false,
                    dest_size: 4
                }
            })
        );
        // mov r9, [rax+0x10]
        assert_eq!(
            d(&[0x4c, 0x8b, 0x48, 0x10], Bits64),
            Some(MmioInsn {
                len: 4,
                size: 8,
                access: Access::Load {
                    reg: 9,
                    high_byte: false,
                    dest_size: 8
                }
            })
        );
        // mov ax, [rip+disp32]
        assert_eq!(
            d(&[0x66, 0x8b, 0x05, 1, 2, 3, 4], Bits64).map(|i| (i.len, i.size)),
            Some((7, 2))
        );
        // mov ah, [rbx]
        assert_eq!(
            d(&[0x8a, 0x23], Bits64).map(|i| i.access),
            Some(Access::Load {
                reg: 0,
                high_byte: true,
                dest_size: 1
            })
        );
        // movzx ecx, word [rsp+8] (SIB + disp8)
        assert_eq!(
            d(&[0x0f, 0xb7, 0x4c, 0x24, 0x08], Bits64),
            Some(MmioInsn {
                len: 5,
                size: 2,
                access: Access::Load {
                    reg: 1,
                    high_byte: false,
                    dest_size: 4
                }
            })
        );
        // mov eax, [disp32] via SIB with no base
        assert_eq!(
            d(&[0x8b, 0x04, 0x25, 0, 0, 0xc0, 0xfe], Bits64).map(|i| i.len),
            Some(7)
        );
    }

    #[test]
    fn stores() {
        // mov [rdx], esi
        assert_eq!(
            d(&[0x89, 0x32], Bits64).map(|i| i.access),
            Some(Access::StoreReg {
                reg: 6,
                high_byte: false
            })
        );
        // mov dword [rax+0x300], 0x12345678
        assert_eq!(
            d(&[0xc7, 0x80, 0, 3, 0, 0, 0x78, 0x56, 0x34, 0x12], Bits64),
            Some(MmioInsn {
                len: 10,
                size: 4,
                access: Access::StoreImm(0x1234_5678)
            })
        );
        // mov qword [rax], -1 (sign-extended)
        assert_eq!(
            d(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], Bits64).map(|i| i.access),
            Some(Access::StoreImm(u64::MAX))
        );
        // mov byte [ebx], 7 in 32-bit code; mov [bx+si], al in 16-bit code
        assert_eq!(
            d(&[0xc6, 0x03, 0x07], Bits32),
            Some(MmioInsn {
                len: 3,
                size: 1,
                access: Access::StoreImm(7)
            })
        );
        assert_eq!(d(&[0x88, 0x00], Bits16).map(|i| i.len), Some(2));
        // 16-bit direct address: mov [0x1234], ax
        assert_eq!(
            d(&[0x89, 0x06, 0x34, 0x12], Bits16).map(|i| (i.len, i.size)),
            Some((4, 2))
        );
        // REX makes SIL, not DH
        assert_eq!(
            d(&[0x40, 0x88, 0x37], Bits64).map(|i| i.access),
            Some(Access::StoreReg {
                reg: 6,
                high_byte: false
            })
        );
    }

    #[test]
    fn refuses_what_it_cannot_emulate() {
        assert_eq!(d(&[0x89, 0xc0], Bits64), None, "register to register");
        assert_eq!(d(&[0x01, 0x07], Bits64), None, "add");
        assert_eq!(
            d(&[0xc7, 0x08, 1, 2, 3, 4], Bits64),
            None,
            "C7 /1 is not MOV"
        );
        assert_eq!(d(&[0x8b], Bits64), None, "truncated");
        assert_eq!(d(&[0xc7, 0x00, 1, 2], Bits64), None, "truncated immediate");
        assert_eq!(d(&[0x66; 20], Bits64), None);
        assert_eq!(d(&[], Bits64), None);
    }

    #[test]
    fn merging_follows_register_write_rules() {
        assert_eq!(
            merge_load(0xffff_ffff_ffff_ffff, 0x12, 1, false),
            0xffff_ffff_ffff_ff12
        );
        assert_eq!(
            merge_load(0xffff_ffff_ffff_ffff, 0x12, 1, true),
            0xffff_ffff_ffff_12ff
        );
        assert_eq!(
            merge_load(0xffff_ffff_ffff_ffff, 0x1234, 2, false),
            0xffff_ffff_ffff_1234
        );
        assert_eq!(
            merge_load(0xffff_ffff_ffff_ffff, 0x1234_5678, 4, false),
            0x1234_5678
        );
        assert_eq!(store_value(0xaabb, 1, true), 0xaa);
        assert_eq!(store_value(0x1_2345_6789, 4, false), 0x2345_6789);
    }
}
