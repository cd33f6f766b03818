//! Grant tables, version 1 only, for in-hypervisor backends.
//!
//! The table lives in guest memory: `XENMEM_add_to_physmap(XENMAPSPACE_grant_table, idx,
//! gpfn)` adopts the guest's own page at `gpfn` as frame `idx`, so nothing is remapped and the
//! guest writes its entries straight into RAM that a backend then reads. A guest that picks a
//! GPFN outside its RAM (Linux's "unpopulated" scratch area) is answered `-ENOSYS` with the
//! GPFN as the logged detail: backing such a frame needs the kernel to alias a hypervisor page
//! into the nested page tables.
//!
//! Backends never map through hypercalls: they call [`Xen::grant_frame`] per access, which
//! checks the entry the way Xen's grant copy does (permit_access, the backend's domain,
//! read-only) and yields the guest frame. The in-use bits (`GTF_reading`/`GTF_writing`) are
//! not set: a backend here completes its access before it answers the request that carried the
//! grant, so the frontend never reclaims a grant that is still being read or written.

use crate::errno::Errno;
use crate::guest::u16_at;
use crate::hypercall::Cx;
use crate::{DOMID_SELF, Xen};
use virt::GuestMemory;

const PAGE: u64 = 0x1000;
/// Frames a guest may map: 8 × 512 = 4096 grant references.
pub const MAX_FRAMES: u32 = 8;
/// `grant_entry_v1` is 8 bytes.
const ENTRY: u64 = 8;
pub const ENTRIES_PER_FRAME: u32 = (PAGE / ENTRY) as u32;

const SETUP_TABLE: u64 = 2;
const QUERY_SIZE: u64 = 6;
const SET_VERSION: u64 = 8;
const GET_VERSION: u64 = 10;

pub const GTF_PERMIT_ACCESS: u16 = 1;
const GTF_TYPE_MASK: u16 = 3;
pub const GTF_READONLY: u16 = 1 << 2;
const GTF_SUB_PAGE: u16 = 1 << 8;

/// `GNTST_bad_domain` in query_size's status field.
const GNTST_BAD_DOMAIN: i16 = -2;

/// Why a backend may not touch a granted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GrantError {
    /// The reference lies beyond the frames the guest has mapped.
    BadRef,
    /// The entry does not grant access (free, transfer, transitive or sub-page).
    NotPermitted,
    /// Granted to a domain other than the backends' (domain 0).
    WrongDomain,
    /// A write through a read-only grant.
    ReadOnly,
    /// The entry or the frame it names is not in guest memory.
    BadFrame,
}

pub(crate) struct GrantTable {
    /// Where the guest placed each frame (GPA), by index.
    frames: [Option<u64>; MAX_FRAMES as usize],
}

impl GrantTable {
    pub const fn new() -> Self {
        GrantTable {
            frames: [None; MAX_FRAMES as usize],
        }
    }

    /// Frames in use: one past the highest index mapped.
    fn nr_frames(&self) -> u32 {
        self.frames
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i as u32 + 1)
    }

    /// Records frame `idx` at the guest page `gpa` (which the caller checked lies in RAM).
    pub fn map_frame(&mut self, idx: u64, gpa: u64) -> Result<(), Errno> {
        let slot = usize::try_from(idx)
            .ok()
            .and_then(|i| self.frames.get_mut(i))
            .ok_or(Errno::EINVAL)?;
        *slot = Some(gpa);
        Ok(())
    }

    /// The entry's guest-physical address.
    fn entry_gpa(&self, gref: u32) -> Option<u64> {
        let frame = self
            .frames
            .get((gref / ENTRIES_PER_FRAME) as usize)?
            .as_ref()?;
        Some(frame + u64::from(gref % ENTRIES_PER_FRAME) * ENTRY)
    }

    pub fn grant(&self, mem: &dyn GuestMemory, gref: u32, write: bool) -> Result<u64, GrantError> {
        let at = self.entry_gpa(gref).ok_or(GrantError::BadRef)?;
        // One 8-byte read, so flags, domid and frame come from the same moment.
        let e = mem.read_u64(at).map_err(|_| GrantError::BadFrame)?;
        let flags = e as u16;
        let domid = (e >> 16) as u16;
        let frame = e >> 32;
        if flags & (GTF_TYPE_MASK | GTF_SUB_PAGE) != GTF_PERMIT_ACCESS {
            return Err(GrantError::NotPermitted);
        }
        if domid != 0 {
            return Err(GrantError::WrongDomain);
        }
        if write && flags & GTF_READONLY != 0 {
            return Err(GrantError::ReadOnly);
        }
        let gpa = frame * PAGE;
        if gpa + PAGE > mem.size() {
            return Err(GrantError::BadFrame);
        }
        Ok(gpa)
    }
}

impl Xen {
    /// Backend access to grant `gref` of this domain: the guest-physical address of the granted
    /// frame, if the entry grants domain 0 access of this kind now. Call it for every access
    /// (the guest may revoke a grant once the request that carried it is answered).
    pub fn grant_frame(
        &self,
        mem: &dyn GuestMemory,
        gref: u32,
        write: bool,
    ) -> Result<u64, GrantError> {
        self.gnttab.grant(mem, gref, write)
    }
}

/// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`.
pub(crate) fn add_to_physmap(x: &mut Xen, cx: &Cx<'_>, idx: u64, gpfn: u64) -> Result<u64, Errno> {
    // Bit 31 of idx asks for a v2 status frame.
    if idx >= u64::from(MAX_FRAMES) {
        return Err(Errno::EINVAL);
    }
    let in_ram = gpfn
        .checked_mul(PAGE)
        .filter(|g| g.checked_add(PAGE).is_some_and(|end| end <= cx.mem.size()));
    let Some(gpa) = in_ram else {
        x.stats.detail = Some(gpfn);
        return Err(Errno::ENOSYS);
    };
    x.gnttab.map_frame(idx, gpa)?;
    Ok(0)
}

/// `grant_table_op(cmd, uop, count)`.
pub(crate) fn op(
    x: &mut Xen,
    cx: &mut Cx<'_>,
    cmd: u64,
    uop: u64,
    count: u64,
) -> Result<u64, Errno> {
    match cmd {
        QUERY_SIZE | SET_VERSION | GET_VERSION if count != 1 => Err(Errno::EINVAL),
        QUERY_SIZE => query_size(x, cx, uop),
        SET_VERSION => set_version(cx, uop),
        GET_VERSION => get_version(x, cx, uop),
        // Only for guests without auto-translated physmap; a PVH guest maps frames itself.
        SETUP_TABLE => Err(Errno::ENOSYS),
        // map/unmap/copy/transfer: backends live in the hypervisor, so no domain maps another's
        // grants.
        _ => Err(Errno::ENOSYS),
    }
}

fn is_self(x: &Xen, dom: u16) -> bool {
    dom == DOMID_SELF || dom == x.cfg.domid
}

fn query_size(x: &mut Xen, cx: &mut Cx<'_>, uop: u64) -> Result<u64, Errno> {
    // {u16 dom; u32 nr_frames @4; u32 max_nr_frames @8; i16 status @12}
    let mut a: [u8; 16] = cx.va.read_struct(uop)?;
    if is_self(x, u16_at(&a, 0)) {
        a[4..8].copy_from_slice(&x.gnttab.nr_frames().max(1).to_le_bytes());
        a[8..12].copy_from_slice(&MAX_FRAMES.to_le_bytes());
        a[12..14].copy_from_slice(&0i16.to_le_bytes());
    } else {
        a[12..14].copy_from_slice(&GNTST_BAD_DOMAIN.to_le_bytes());
    }
    cx.va.write(uop, &a)?;
    Ok(0)
}

fn set_version(cx: &mut Cx<'_>, uop: u64) -> Result<u64, Errno> {
    let v = cx.va.read_u32(uop)?;
    // The current version is written back either way, as Xen does; v2 is refused so Linux
    // stays on v1.
    cx.va.write(uop, &1u32.to_le_bytes())?;
    if v == 1 { Ok(0) } else { Err(Errno::EINVAL) }
}

fn get_version(x: &mut Xen, cx: &mut Cx<'_>, uop: u64) -> Result<u64, Errno> {
    // {u16 dom; u16 pad; u32 version}
    let a: [u8; 8] = cx.va.read_struct(uop)?;
    if !is_self(x, u16_at(&a, 0)) {
        return Err(Errno::ESRCH);
    }
    cx.va.write(uop.wrapping_add(4), &1u32.to_le_bytes())?;
    Ok(0)
}
