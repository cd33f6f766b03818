//! Serving an open channel's rings: taking the guest's packets out of its outgoing ring once,
//! each checked against the ring, and putting the host's into its incoming ring with the
//! signalling rules (interrupt mask, pending_send_sz, signal only when the guest had caught
//! up).

use super::ring::{Broken, DESCRIPTOR, Descriptor, Ring, TRAILER};
use super::{BUDGET, MAX_PACKET, Open, Served};
use crate::storvsc;
use core::sync::atomic::{Ordering, fence};
use virt::GuestMemory;
use virt::personality::Host;

pub(super) struct Rings<'a> {
    /// The guest's outgoing ring (requests to the host).
    pub(super) out: Ring<'a>,
    /// The guest's incoming ring (completions from the host).
    pub(super) inc: Ring<'a>,
}

pub(super) fn serve_rings(
    open: &mut Open,
    r: &Rings<'_>,
    target: &storvsc::Target,
    mem: &dyn GuestMemory,
    host: &mut dyn Host,
) -> Result<Served, Broken> {
    let need = (storvsc::COMPLETION_LEN + TRAILER) as u32;
    let mut budget = BUDGET;
    let start_write = open.in_write;
    let mut wrote = false;
    let mut more = false;
    let mut blocked = false;
    loop {
        let w = r.out.guest_index(mem, true)?;
        while open.out_read != w {
            if budget == 0 {
                more = true;
                break;
            }
            let desc = next_descriptor(&r.out, open.out_read, w, mem)?;
            // The answer must fit before the request is taken, so that a request is done
            // once; one byte always stays free.
            let unread = r
                .inc
                .distance(r.inc.guest_index(mem, false)?, open.in_write);
            if r.inc.size() - unread <= need {
                blocked = true;
                break;
            }
            budget -= 1;
            let mut packet = [0u8; MAX_PACKET];
            let reply = match packet.get_mut(..desc.len) {
                Some(p) => {
                    r.out.read(mem, open.out_read, p)?;
                    storvsc::handle(&mut open.session, &desc, p, target, mem, host)
                }
                None => storvsc::refuse(&desc),
            };
            open.out_read = r.out.advance(open.out_read, desc.len + TRAILER);
            if let Some(c) = reply {
                let (head, body) = c.split_at(DESCRIPTOR);
                write_packet(&r.inc, &mut open.in_write, head, body, c.len(), mem)?;
                wrote = true;
            }
        }
        // The completions are in place before the index says so.
        fence(Ordering::Release);
        r.inc.publish(mem, true, open.in_write)?;
        r.out.publish(mem, false, open.out_read)?;
        fence(Ordering::SeqCst);
        // A packet queued after the write index was read did not signal (the ring was not
        // empty to the guest): look once more after publishing the read index.
        if more || blocked || r.out.guest_index(mem, true)? == open.out_read {
            break;
        }
    }
    // Blocked: the guest signals once it has read enough (Linux's pending_send_sz check).
    r.inc
        .set_pending_send_sz(mem, if blocked { need } else { 0 })?;
    // Signal when the guest is not masking and had read everything before this pass: a
    // guest still reading finds the new packets on its own.
    let signal =
        wrote && !r.inc.interrupt_mask(mem)? && r.inc.guest_index(mem, false)? == start_write;
    Ok(Served {
        signal: signal.then_some(open.target_vp),
        more,
    })
}

/// Writes one packet (descriptor, payload padded to 8, trailer) at the host's write index of
/// `inc` and publishes it; false when the ring lacks room (one byte always stays free).
pub(super) fn put_packet(
    inc: &Ring<'_>,
    write: &mut u32,
    d: &Descriptor,
    payload: &[u8],
    mem: &dyn GuestMemory,
) -> Result<bool, Broken> {
    let unread = inc.distance(inc.guest_index(mem, false)?, *write);
    if (inc.size() - unread) as usize <= d.len + TRAILER {
        return Ok(false);
    }
    write_packet(inc, write, &d.encode(), payload, d.len, mem)?;
    fence(Ordering::Release);
    inc.publish(mem, true, *write)?;
    Ok(true)
}

/// Writes `head` (the encoded descriptor) and `payload`, zeroes up to `len` (a multiple of
/// 8) and the trailer at the host's write index, and advances it; publishing is the caller's.
fn write_packet(
    inc: &Ring<'_>,
    write: &mut u32,
    head: &[u8],
    payload: &[u8],
    len: usize,
    mem: &dyn GuestMemory,
) -> Result<(), Broken> {
    let old = *write;
    let body = head.len() + payload.len();
    let pad = len.checked_sub(body).filter(|p| *p < 8).ok_or(Broken)?;
    inc.write(mem, old, head)?;
    inc.write(mem, inc.advance(old, head.len()), payload)?;
    inc.write(mem, inc.advance(old, body), &[0u8; 8][..pad])?;
    inc.write(
        mem,
        inc.advance(old, len),
        &(u64::from(old) << 32).to_le_bytes(),
    )?;
    *write = inc.advance(old, len + TRAILER);
    Ok(())
}

/// The descriptor of the packet at `read` in the guest's outgoing ring, whose write index is
/// `w`: it must lie wholly between them, or the ring is broken.
fn next_descriptor(
    out: &Ring<'_>,
    read: u32,
    w: u32,
    mem: &dyn GuestMemory,
) -> Result<Descriptor, Broken> {
    let avail = out.distance(read, w) as usize;
    if avail < DESCRIPTOR + TRAILER {
        return Err(Broken);
    }
    let mut d = [0u8; DESCRIPTOR];
    out.read(mem, read, &mut d)?;
    let desc = Descriptor::parse(&d);
    if desc.len < DESCRIPTOR || desc.len + TRAILER > avail || desc.offset > desc.len {
        return Err(Broken);
    }
    Ok(desc)
}

/// Reads what the guest sent on the shutdown service: its answers.
pub(super) fn serve_ic(
    open: &mut Open,
    r: &Rings<'_>,
    mem: &dyn GuestMemory,
) -> Result<Served, Broken> {
    let mut budget = BUDGET;
    loop {
        let w = r.out.guest_index(mem, true)?;
        while open.out_read != w && budget > 0 {
            budget -= 1;
            let desc = next_descriptor(&r.out, open.out_read, w, mem)?;
            // Only the headers matter to the host.
            let mut head = [0u8; 64];
            let n = (desc.len - desc.offset).min(head.len());
            r.out.read(
                mem,
                r.out.advance(open.out_read, desc.offset),
                &mut head[..n],
            )?;
            open.ic.answer(&head[..n]);
            open.out_read = r.out.advance(open.out_read, desc.len + TRAILER);
        }
        r.out.publish(mem, false, open.out_read)?;
        fence(Ordering::SeqCst);
        if budget == 0 || r.out.guest_index(mem, true)? == open.out_read {
            break;
        }
    }
    Ok(Served {
        signal: None,
        more: budget == 0,
    })
}
