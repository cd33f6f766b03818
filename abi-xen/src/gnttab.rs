//! Grant tables, version 1 only, for in-hypervisor backends.
//!
//! The table lives in guest memory. `XENMEM_add_to_physmap(XENMAPSPACE_grant_table, idx,
//! gpfn)` with `gpfn` in RAM adopts the guest's own page as frame `idx`: nothing is remapped
//! and the guest writes its entries straight into RAM that a backend then reads. A `gpfn`
//! outside RAM (where Linux puts them: its "unpopulated" area above memory) becomes, through
//! [`Host::alias_page`], a second name for frame `idx`'s page among the reserved ones
//! ([`crate::Config::grant_frames_pfn`]), which is where the backend reads it. As on Xen, a
//! frame placed again moves: its old place is unbacked.
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
use virt::personality::{AliasError, Host};

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

#[derive(Clone, Copy)]
struct Frame {
    /// Where the entries are read: the guest's own page, or the reserved page behind an alias.
    table: u64,
    /// Where the guest placed the frame, if it still is there.
    placed: Option<u64>,
    /// `placed` is an alias the kernel made (to be removed when the frame moves).
    aliased: bool,
}

pub(crate) struct GrantTable {
    frames: [Option<Frame>; MAX_FRAMES as usize],
}

impl GrantTable {
    pub const fn new() -> Self {
        GrantTable {
            frames: [None; MAX_FRAMES as usize],
        }
    }

    /// Places frame `idx` at `gpa`, its entries read at `table`. Whatever was placed at `gpa`
    /// before is displaced, and the frame's old alias, if any, removed.
    fn place(&mut self, host: &mut dyn Host, idx: usize, gpa: u64, table: u64, aliased: bool) {
        for (i, f) in self.frames.iter_mut().enumerate() {
            let Some(f) = f else { continue };
            if i == idx {
                if f.aliased
                    && let Some(old) = f.placed.filter(|&p| p != gpa)
                {
                    host.unalias_page(old);
                }
            } else if f.placed == Some(gpa) {
                f.placed = None;
            }
        }
        self.frames[idx] = Some(Frame {
            table,
            placed: Some(gpa),
            aliased,
        });
    }

    /// Frames in use: one past the highest index mapped.
    fn nr_frames(&self) -> u32 {
        self.frames
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i as u32 + 1)
    }

    /// The entry's guest-physical address.
    fn entry_gpa(&self, gref: u32) -> Option<u64> {
        let frame = self
            .frames
            .get((gref / ENTRIES_PER_FRAME) as usize)?
            .as_ref()?;
        Some(frame.table + u64::from(gref % ENTRIES_PER_FRAME) * ENTRY)
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
pub(crate) fn add_to_physmap(
    x: &mut Xen,
    cx: &mut Cx<'_>,
    idx: u64,
    gpfn: u64,
) -> Result<u64, Errno> {
    // Bit 31 of idx asks for a v2 status frame.
    let idx = usize::try_from(idx)
        .ok()
        .filter(|&i| i < MAX_FRAMES as usize)
        .ok_or(Errno::EINVAL)?;
    let gpa = gpfn
        .checked_mul(PAGE)
        .filter(|g| g.checked_add(PAGE).is_some())
        .ok_or(Errno::EINVAL)?;
    if gpa + PAGE <= cx.mem.size() {
        if x.is_reserved_pfn(gpfn) {
            return Err(Errno::EINVAL);
        }
        x.gnttab.place(cx.host, idx, gpa, gpa, false);
        return Ok(0);
    }
    let Some(base) = x.cfg.grant_frames_pfn else {
        x.stats.detail = Some(gpfn);
        return Err(Errno::ENOSYS);
    };
    let backing = (base + idx as u64) * PAGE;
    cx.host.alias_page(gpa, backing).map_err(|e| match e {
        AliasError::Unsupported => Errno::ENOSYS,
        AliasError::Refused => Errno::EINVAL,
        AliasError::Full => Errno::ENOMEM,
    })?;
    x.gnttab.place(cx.host, idx, gpa, backing, true);
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
