//! blkback in the hypervisor: each of the VM's disks is a Xen virtual block device (`vbd`)
//! that the guest's unmodified `xen-blkfront` finds in xenstore and drives through a blkif
//! ring ([`ring`]).
//!
//! The nodes exist before the guest looks (frontend `state` 1, backend `state` 2, InitWait);
//! when the frontend reports Initialised the backend reads `ring-ref` and `event-channel`,
//! binds the port and goes Connected. A frontend that closes is answered Closing, then Closed,
//! and one that starts over (a new driver, a rebooted guest) gets InitWait again. A ring whose indices no honest
//! frontend could produce stops that disk (backend state Closed, an `error` node); the VM and
//! its other disks carry on.

pub mod ring;

use crate::Xen;
use crate::xenstore::tree::Path;
use crate::xenstore::wire;
use ring::{Disk, Ring};
use virt::GuestMemory;
use virt::block::DiskInfo;
use virt::personality::Host;

/// Disks a Xen VM may have (xvda to xvdd).
pub const MAX_VBDS: usize = 4;
/// `xvda`: major 202, minor 0; each further disk 16 minors on.
pub const FIRST_DEVID: u32 = 202 << 8;

const INITIALISING: u32 = 1;
const INIT_WAIT: u32 = 2;
const INITIALISED: u32 = 3;
const CONNECTED: u32 = 4;
const CLOSING: u32 = 5;
const CLOSED: u32 = 6;

/// One virtual disk.
pub(crate) struct Vbd {
    /// Requests were left for a later pass (see `ring::BUDGET`).
    pending: bool,
    disk: u32,
    devid: u32,
    info: DiskInfo,
    state: u32,
    ring: Option<Ring>,
}

fn path(parts: &[&[u8]], num: Option<u32>, tail: &[u8]) -> Path {
    let mut p = Path::new();
    for part in parts {
        let _ = p.extend_from_slice(part);
    }
    if let Some(n) = num {
        let _ = wire::push_decimal(&mut p, n);
    }
    let _ = p.extend_from_slice(tail);
    p
}

impl Vbd {
    pub(crate) fn has_pending(&self) -> bool {
        self.pending && self.ring.is_some()
    }

    fn frontend(&self, x: &Xen, tail: &[u8]) -> Path {
        path(&[x.store.home(), b"/device/vbd/"], Some(self.devid), tail)
    }

    fn backend(&self, x: &Xen, tail: &[u8]) -> Path {
        let mut p = path(
            &[b"/local/domain/0/backend/vbd/"],
            Some(u32::from(x.cfg.domid)),
            b"/",
        );
        let _ = wire::push_decimal(&mut p, self.devid);
        let _ = p.extend_from_slice(tail);
        p
    }
}

fn join(a: &[u8], b: &[u8]) -> Path {
    path(&[a, b], None, b"")
}

fn decimal_value(n: u64) -> heapless::Vec<u8, 24> {
    let mut v = heapless::Vec::new();
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut n = n;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in digits[..len].iter().rev() {
        let _ = v.push(d);
    }
    v
}

/// Creates a vbd for each of the VM's disks, with the nodes the frontend expects.
pub(crate) fn publish(x: &mut Xen, host: &dyn Host) {
    for i in 0..MAX_VBDS as u32 {
        let Some(info) = host.disk(i) else { break };
        let vbd = Vbd {
            pending: false,
            disk: i,
            devid: FIRST_DEVID + 16 * i,
            info,
            state: INIT_WAIT,
            ring: None,
        };
        let fe = vbd.frontend(x, b"");
        let be = vbd.backend(x, b"");
        let devid = decimal_value(u64::from(vbd.devid));
        let dom = decimal_value(u64::from(x.cfg.domid));
        let s = &mut x.store;
        let nodes: [(Path, &[u8]); 5] = [
            (join(&fe, b"/backend"), &be),
            (join(&fe, b"/backend-id"), b"0"),
            (join(&fe, b"/virtual-device"), &devid),
            (join(&fe, b"/device-type"), b"disk"),
            (join(&fe, b"/state"), b"1"),
        ];
        let sectors = decimal_value(info.sectors);
        let back: [(Path, &[u8]); 10] = [
            (join(&be, b"/frontend"), &fe),
            (join(&be, b"/frontend-id"), &dom),
            (join(&be, b"/sectors"), &sectors),
            (
                join(&be, b"/info"),
                if info.read_only { b"4" } else { b"0" },
            ),
            (
                join(&be, b"/mode"),
                if info.read_only { b"r" } else { b"w" },
            ),
            (join(&be, b"/sector-size"), b"512"),
            (join(&be, b"/physical-sector-size"), b"512"),
            (join(&be, b"/feature-flush-cache"), b"1"),
            (
                join(&be, b"/feature-max-indirect-segments"),
                ring::INDIRECT_SEGMENTS_NODE,
            ),
            (join(&be, b"/state"), b"2"),
        ];
        for (p, v) in nodes.iter().chain(back.iter()) {
            let _ = s.write(p, v);
        }
        let _ = s.hv_watch(&join(&fe, b"/state"));
        if x.vbds.push(vbd).is_err() {
            break;
        }
    }
}

fn read_number(x: &Xen, p: &[u8]) -> Option<u32> {
    wire::decimal(x.store.read(p)?)
}

/// Follows the frontends' states after the store changed; whether it changed the store.
pub(crate) fn store_changed(x: &mut Xen, mem: &dyn GuestMemory) -> bool {
    let mut any = false;
    while x.store.take_hv_event().is_some() {
        any = true;
    }
    if !any {
        return false;
    }
    let mut changed = false;
    for i in 0..x.vbds.len() {
        let fe_state = read_number(x, &x.vbds[i].frontend(x, b"/state"));
        let want = match (fe_state, x.vbds[i].state) {
            (Some(INITIALISED | CONNECTED), INIT_WAIT) => connect(x, mem, i),
            // As Xen's blkback: Closing answers Closing (Linux's frontend waits for exactly
            // that while the system shuts down), Closed answers Closed.
            (Some(CLOSING), s) if s != CLOSING && s != CLOSED => {
                x.vbds[i].ring = None;
                CLOSING
            }
            (Some(CLOSED), s) if s != CLOSED => {
                x.vbds[i].ring = None;
                CLOSED
            }
            (Some(INITIALISING), CLOSING | CLOSED) => INIT_WAIT,
            (_, s) => s,
        };
        if want != x.vbds[i].state {
            set_state(x, i, want);
            changed = true;
        }
    }
    changed
}

fn set_state(x: &mut Xen, i: usize, state: u32) {
    x.vbds[i].state = state;
    let p = x.vbds[i].backend(x, b"/state");
    let _ = x.store.write(&p, &decimal_value(u64::from(state)));
}

/// Reads the frontend's ring details and binds its port; the backend's next state.
fn connect(x: &mut Xen, mem: &dyn GuestMemory, i: usize) -> u32 {
    let v = &x.vbds[i];
    let gref = read_number(x, &v.frontend(x, b"/ring-ref"));
    let port = read_number(x, &v.frontend(x, b"/event-channel"));
    let protocol = x.store.read(&v.frontend(x, b"/protocol"));
    // Only the 64-bit request layout is served; a 32-bit frontend says so here.
    let layout_ok = protocol.is_none_or(|p| p == b"x86_64-abi");
    let (Some(gref), Some(port), true) = (gref, port, layout_ok) else {
        return fail(x, i, b"bad ring-ref, event-channel or protocol");
    };
    if x.gnttab.grant(mem, gref, true).is_err() {
        return fail(x, i, b"ring-ref does not grant the ring page");
    }
    if x.ports.backend_bind(port).is_err() {
        return fail(x, i, b"event-channel is not an unbound port for domain 0");
    }
    x.vbds[i].ring = Some(Ring::new(gref, port));
    CONNECTED
}

/// Stops disk `i`, telling the frontend why in the backend's `error` node.
fn fail(x: &mut Xen, i: usize, why: &[u8]) -> u32 {
    x.vbds[i].ring = None;
    let p = x.vbds[i].backend(x, b"/error");
    let _ = x.store.write(&p, why);
    CLOSED
}

/// Serves what was notified or left by earlier passes: called on each of the guest's
/// hypercalls, when a vCPU halts and when its timer fires, so a guest that keeps its disks
/// busy keeps them served, one budget at a time.
pub(crate) fn resume(x: &mut Xen, mem: &dyn GuestMemory, host: &mut dyn Host) {
    for i in 0..x.vbds.len() {
        let port = match &x.vbds[i] {
            Vbd {
                pending: true,
                ring: Some(r),
                ..
            } => r.port,
            _ => continue,
        };
        kick(x, mem, host, port);
    }
}

/// The frontend notified `port`: its disk's ring is served at the vCPU's next halt, hypercall
/// or timer rather than now, so that the requests the frontend goes on queuing meanwhile
/// (it does not notify again until the backend asks) are served together, adjacent ones as
/// one volume request (`ring::Batch`). False if no disk owns the port.
pub(crate) fn notified(x: &mut Xen, port: u32) -> bool {
    let Some(i) = vbd_of(x, port) else {
        return false;
    };
    x.vbds[i].pending = true;
    true
}

/// The disk whose ring is bound to `port`.
fn vbd_of(x: &Xen, port: u32) -> Option<usize> {
    x.vbds
        .iter()
        .position(|v| v.ring.is_some_and(|r| r.port == port))
}

/// Serves the ring bound to `port` now. False if no disk owns the port.
pub(crate) fn kick(x: &mut Xen, mem: &dyn GuestMemory, host: &mut dyn Host, port: u32) -> bool {
    let Some(i) = vbd_of(x, port) else {
        return false;
    };
    let gnttab = &x.gnttab;
    let grants = |m: &dyn GuestMemory, r: u32, w: bool| gnttab.grant(m, r, w);
    let v = &mut x.vbds[i];
    let Some(ring) = v.ring.as_mut() else {
        return false;
    };
    let disk = Disk {
        index: v.disk,
        sectors: v.info.sectors,
        read_only: v.info.read_only,
        grants: &grants,
    };
    match ring.service(mem, host, &disk) {
        Ok(served) => {
            v.pending = served.more;
            if served.notify {
                crate::evtchn::set_pending(x, mem, host, port);
            }
        }
        Err(ring::Broken) => {
            fail(x, i, b"blkif ring indices out of range");
            set_state(x, i, CLOSED);
            crate::xenstore_service(x, mem, host);
        }
    }
    true
}
