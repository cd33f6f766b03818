//! The `shared_info` page and `vcpu_info` layout (64-bit guest view) and the writes the
//! hypervisor makes into them. The page is adopted in place at the guest frame Linux names in
//! `XENMEM_add_to_physmap`: no nested-paging change, and the guest's RAM page simply becomes
//! the shared page.

use crate::pvclock::TimeBase;
use virt::{GuestMemory, MemError};

pub const PAGE_SIZE: u64 = 0x1000;
/// `XEN_LEGACY_MAX_VCPUS`: vcpu_info slots inside shared_info.
pub const LEGACY_VCPUS: u32 = 32;
pub const VCPU_INFO_SIZE: u64 = 64;
pub const EVTCHN_PENDING: u64 = 2048;
pub const EVTCHN_MASK: u64 = 2560;
const WC_VERSION: u64 = 3072;
const WC_SEC: u64 = 3076;
const WC_NSEC: u64 = 3080;
const WC_SEC_HI: u64 = 3084;

/// vcpu_info fields.
pub const VI_UPCALL_PENDING: u64 = 0;
pub const VI_PENDING_SEL: u64 = 8;
pub const VI_TIME: u64 = 32;

static ZERO: [u8; 512] = [0; 512];

pub fn zero_page(mem: &dyn GuestMemory, gpa: u64) -> Result<(), MemError> {
    let mut off = 0;
    while off < PAGE_SIZE {
        mem.write(gpa.wrapping_add(off), &ZERO)?;
        off += ZERO.len() as u64;
    }
    Ok(())
}

/// Copies a page-internal block, e.g. shared_info when the guest moves it or a vcpu_info when
/// it is re-registered, so pending bits and masks survive.
pub fn copy(mem: &dyn GuestMemory, from: u64, to: u64, len: u64) -> Result<(), MemError> {
    let mut buf = [0u8; 256];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        mem.read(from.wrapping_add(off), chunk)?;
        mem.write(to.wrapping_add(off), chunk)?;
        off += n as u64;
    }
    Ok(())
}

/// Wall-clock time at Xen system time 0, under its own odd/even version like the pvclock.
pub fn write_wallclock(mem: &dyn GuestMemory, si: u64, boot_utc_ns: u64) -> Result<(), MemError> {
    let secs = boot_utc_ns / 1_000_000_000;
    let nsec = (boot_utc_ns % 1_000_000_000) as u32;
    let v = mem.read_u32(si + WC_VERSION)?.wrapping_add(1) | 1;
    mem.write_u32(si + WC_VERSION, v)?;
    mem.write_u32(si + WC_SEC, secs as u32)?;
    mem.write_u32(si + WC_NSEC, nsec)?;
    mem.write_u32(si + WC_SEC_HI, (secs >> 32) as u32)?;
    mem.write_u32(si + WC_VERSION, v.wrapping_add(1))
}

pub fn write_time(mem: &dyn GuestMemory, vcpu_info: u64, tb: &TimeBase) -> Result<(), MemError> {
    tb.publish(mem, vcpu_info.wrapping_add(VI_TIME))
}

/// Word address and bit of `port` in one of the shared bitmaps.
pub fn port_word(si: u64, bitmap: u64, port: u32) -> (u64, u64) {
    (si + bitmap + u64::from(port / 64) * 8, 1u64 << (port % 64))
}
