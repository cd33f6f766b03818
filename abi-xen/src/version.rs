//! `xen_version`: the version and the strings `/sys/hypervisor` shows, and the feature bitmap
//! that decides how Linux treats this hypervisor.

use crate::Xen;
use crate::errno::Errno;
use crate::guest::u32_at;
use crate::hypercall::Cx;

const VERSION: u64 = 0;
const EXTRAVERSION: u64 = 1;
const COMPILE_INFO: u64 = 2;
const CAPABILITIES: u64 = 3;
const CHANGESET: u64 = 4;
const GET_FEATURES: u64 = 6;
const PAGESIZE: u64 = 7;
const GUEST_HANDLE: u64 = 8;
const COMMANDLINE: u64 = 9;

/// `XENFEAT_*` bits of submap 0.
pub const FEAT_WRITABLE_PAGE_TABLES: u32 = 1 << 0;
/// Guest frames are guest-physical: without it Linux runs grant references and ring frames
/// through the PV p2m and gets them all wrong.
pub const FEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 1 << 2;
pub const FEAT_HVM_CALLBACK_VECTOR: u32 = 1 << 8;
/// Without it Linux disables the PV clock and timer on HVM/PVH, leaving a PVH guest with no
/// timer at all.
pub const FEAT_HVM_SAFE_PVCLOCK: u32 = 1 << 9;
/// What Xen offers an HVM/PVH domU minus `hvm_pirqs` (which would route interrupts through
/// PHYSDEVOP, not implemented) and the bits for interfaces not implemented here.
pub const FEATURES: u32 = FEAT_WRITABLE_PAGE_TABLES
    | FEAT_AUTO_TRANSLATED_PHYSMAP
    | FEAT_HVM_CALLBACK_VECTOR
    | FEAT_HVM_SAFE_PVCLOCK;

const EXTRAVERSION_STR: &[u8] = b"-janus";
const CAPABILITIES_STR: &[u8] = b"hvm-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p";

pub(crate) fn xen_version(x: &mut Xen, cx: &mut Cx<'_>, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match cmd {
        VERSION => Ok((u64::from(x.cfg.version.0) << 16) | u64::from(x.cfg.version.1)),
        EXTRAVERSION => write_str(cx, arg, EXTRAVERSION_STR, 16),
        COMPILE_INFO => {
            // compiler[64], compile_by[16], compile_domain[32], compile_date[32]
            let mut b = [0u8; 144];
            b[..5].copy_from_slice(b"rustc");
            b[64..69].copy_from_slice(b"janus");
            cx.va.write(arg, &b).map(|()| 0)
        }
        CAPABILITIES => write_str(cx, arg, CAPABILITIES_STR, 1024),
        CHANGESET => write_str(cx, arg, b"janus", 64),
        GET_FEATURES => {
            let a: [u8; 8] = cx.va.read_struct(arg)?;
            if u32_at(&a, 0) != 0 {
                return Err(Errno::EINVAL);
            }
            cx.va.write(arg.wrapping_add(4), &FEATURES.to_le_bytes())?;
            Ok(0)
        }
        PAGESIZE => Ok(4096),
        GUEST_HANDLE => cx.va.write(arg, &x.cfg.handle).map(|()| 0),
        // Xen shows the command line to privileged domains only.
        COMMANDLINE => Err(Errno::EPERM),
        // platform_parameters, build_id and anything newer.
        _ => Err(Errno::ENOSYS),
    }
}

/// Writes `s` NUL-padded into a fixed `len`-byte guest buffer.
fn write_str(cx: &mut Cx<'_>, arg: u64, s: &[u8], len: u64) -> Result<u64, Errno> {
    let mut block = [0u8; 64];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(block.len() as u64) as usize;
        block.fill(0);
        for (i, b) in block.iter_mut().enumerate().take(n) {
            if let Some(&c) = s.get(off as usize + i) {
                *b = c;
            }
        }
        cx.va.write(arg.wrapping_add(off), &block[..n])?;
        off += n as u64;
    }
    Ok(0)
}
