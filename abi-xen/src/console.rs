//! The guest console: `CONSOLEIO_write`, the PV console ring behind hvc0 (output drained,
//! input typed on the host's console produced into its `in` side), and port 0xE9.

use crate::errno::Errno;
use crate::hypercall::{Cx, Outcome};
use crate::{CONSOLE_PORT, Xen, evtchn};
use virt::GuestMemory;
use virt::personality::{Action, Host};

const CONSOLEIO_WRITE: u64 = 0;
const CONSOLEIO_READ: u64 = 1;

/// Bytes copied per exit before the call continues itself, so a huge count cannot hold the
/// pCPU (the guest re-executes the hypercall with the remaining arguments).
const WRITE_BUDGET: u64 = 4096;

/// `xencons_interface`: in[1024], out[2048], then the four indices.
const IN_SIZE: u32 = 1024;
const IN_CONS: u64 = 3072;
const IN_PROD: u64 = 3076;
const RING_OUT: u64 = 1024;
const OUT_SIZE: u32 = 2048;
const OUT_CONS: u64 = 3080;
const OUT_PROD: u64 = 3084;

pub const DEBUG_PORT: u16 = 0xE9;

pub(crate) fn console_io(x: &mut Xen, cx: &mut Cx<'_>, args: [u64; 5]) -> Outcome {
    match args[0] {
        CONSOLEIO_WRITE => {
            // count is an unsigned int in the ABI.
            let count = args[1] & 0xffff_ffff;
            let buf = args[2];
            let n = count.min(WRITE_BUDGET);
            let mut chunk = [0u8; 128];
            let mut off = 0;
            while off < n {
                let len = (n - off).min(chunk.len() as u64) as usize;
                let part = &mut chunk[..len];
                if let Err(e) = cx.va.read(buf.wrapping_add(off), part) {
                    return Err(e).into();
                }
                cx.host.console_write(part);
                off += len as u64;
            }
            if count > n {
                let mut next = args;
                next[1] = count - n;
                next[2] = buf.wrapping_add(n);
                return Outcome {
                    ret: Ok(0),
                    action: Action::Retry,
                    cont: Some(next),
                };
            }
            let _ = x;
            Ok(0).into()
        }
        // Typed input goes to the console ring (`input`), which is what a domU reads.
        CONSOLEIO_READ => Ok(0).into(),
        _ => Err(Errno::ENOSYS).into(),
    }
}

/// The console ring page's address, if the guest has one.
fn ring_gpa(x: &Xen) -> Option<u64> {
    x.cfg
        .console_pfn?
        .checked_mul(0x1000)
        .filter(|r| r.checked_add(0x1000).is_some())
}

/// Produces `bytes` into the ring's `in` side as far as there is room, then notifies the
/// guest. `None`: this guest has no console ring. Indices the guest left further apart than
/// the ring count as a full ring: the host keeps its bytes rather than guess.
pub(crate) fn input(
    x: &Xen,
    bytes: &[u8],
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
) -> Option<usize> {
    let ring = ring_gpa(x)?;
    let (Ok(cons), Ok(prod)) = (mem.read_u32(ring + IN_CONS), mem.read_u32(ring + IN_PROD)) else {
        return Some(0);
    };
    let used = prod.wrapping_sub(cons);
    if used >= IN_SIZE {
        return Some(0);
    }
    let n = bytes.len().min((IN_SIZE - used) as usize);
    let mut at = prod;
    for &b in &bytes[..n] {
        if mem.write(ring + u64::from(at % IN_SIZE), &[b]).is_err() {
            return Some(0);
        }
        at = at.wrapping_add(1);
    }
    // The bytes are in place before the producer index says so (x86 keeps stores in order).
    if n > 0 && mem.write_u32(ring + IN_PROD, at).is_ok() && x.ports.is_bound(CONSOLE_PORT) {
        evtchn::set_pending(x, mem, host, CONSOLE_PORT);
    }
    Some(n)
}

/// Consumes everything in the console ring's out buffer, then tells the guest there is room.
pub(crate) fn drain_ring(x: &Xen, mem: &dyn GuestMemory, host: &mut dyn Host) {
    let Some(ring) = ring_gpa(x) else {
        return;
    };
    let (Ok(mut cons), Ok(prod)) = (mem.read_u32(ring + OUT_CONS), mem.read_u32(ring + OUT_PROD))
    else {
        return;
    };
    let avail = prod.wrapping_sub(cons);
    if avail == 0 {
        return;
    }
    // Indices further apart than the ring are the guest's corruption: skip to its producer
    // rather than print stale bytes or loop.
    if avail <= OUT_SIZE {
        let mut buf = [0u8; 256];
        while cons != prod {
            let idx = cons % OUT_SIZE;
            let n = prod
                .wrapping_sub(cons)
                .min(OUT_SIZE - idx)
                .min(buf.len() as u32);
            let part = &mut buf[..n as usize];
            if mem.read(ring + RING_OUT + u64::from(idx), part).is_err() {
                return;
            }
            host.console_write(part);
            cons = cons.wrapping_add(n);
        }
    }
    if mem.write_u32(ring + OUT_CONS, prod).is_ok() && x.ports.is_bound(CONSOLE_PORT) {
        evtchn::set_pending(x, mem, host, CONSOLE_PORT);
    }
}

pub(crate) fn io(
    x: &mut Xen,
    port: u16,
    _size: u8,
    write: bool,
    data: u32,
    host: &mut dyn Host,
) -> Action {
    if port != DEBUG_PORT || !write {
        return Action::NotMine;
    }
    let byte = data as u8;
    // Line-buffered so the kernel's per-write VM-name prefix lands once per line.
    if x.e9.push(byte).is_err() {
        flush_e9(x, host);
        let _ = x.e9.push(byte);
    }
    if byte == b'\n' {
        flush_e9(x, host);
    }
    Action::Done
}

pub(crate) fn flush_e9(x: &mut Xen, host: &mut dyn Host) {
    if !x.e9.is_empty() {
        host.console_write(&x.e9);
        x.e9.clear();
    }
}
