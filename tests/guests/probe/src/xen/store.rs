//! xenstore from the guest's side: the ring at `HVM_PARAM_STORE_PFN`, the port at
//! `HVM_PARAM_STORE_EVTCHN`, requests answered as Linux's xenbus expects, and the hostile
//! cases (another domain's nodes, malformed paths, quotas, a transaction that lost a race, an
//! oversized message) answered with xenstore's own errors. The hypervisor serves the ring
//! while the notifying hypercall runs, so each reply is there when `send` returns.

use super::{
    DOMID_SELF, EVENT_CHANNEL_OP, EVTCHNOP_SEND, HVM_OP, HVMOP_GET_PARAM, HvmParam, Xen, ptr,
};
use crate::arch;
use crate::checks::check;

const HVM_PARAM_STORE_PFN: u32 = 1;
const HVM_PARAM_STORE_EVTCHN: u32 = 2;

const READ: u32 = 2;
const WATCH: u32 = 4;
const TRANSACTION_START: u32 = 6;
const TRANSACTION_END: u32 = 7;
const WRITE: u32 = 11;
const WATCH_EVENT: u32 = 15;
const ERROR: u32 = 16;

const RSP: u64 = 1024;
const REQ_CONS: u64 = 2048;
const REQ_PROD: u64 = 2052;
const RSP_CONS: u64 = 2056;
const RSP_PROD: u64 = 2060;

/// A reply: its type and up to 128 bytes of payload.
struct Reply {
    ty: u32,
    len: usize,
    body: [u8; 128],
}

impl Reply {
    fn is(&self, ty: u32, body: &[u8]) -> bool {
        self.ty == ty && &self.body[..self.len.min(128)] == body
    }

    fn text(&self) -> &str {
        core::str::from_utf8(&self.body[..self.len.min(128)]).unwrap_or("?")
    }
}

struct Store {
    x: Xen,
    page: u64,
    port: u32,
    /// Watch events that arrived while waiting for a reply.
    events: u32,
}

fn get_param(x: Xen, index: u32) -> (i64, u64) {
    let mut p = HvmParam {
        domid: DOMID_SELF,
        pad: 0,
        index,
        value: 0,
    };
    let r = x.call(HVM_OP, [HVMOP_GET_PARAM, ptr(&mut p), 0, 0, 0]);
    (r, p.value)
}

fn rd(addr: u64) -> u32 {
    arch::read_u32(addr)
}

fn byte(addr: u64) -> u8 {
    arch::read_u8(addr)
}

fn put_byte(addr: u64, v: u8) {
    // Whole words are what the probe can write; merge the byte into its word.
    let word = addr & !3;
    let shift = (addr & 3) * 8;
    let old = rd(word);
    arch::write_u32(word, (old & !(0xff << shift)) | (u32::from(v) << shift));
}

impl Store {
    /// Queues a raw message (header fields as given) and notifies the store.
    fn send_raw(&self, ty: u32, tx: u32, len: u32, payload: &[u8]) {
        let mut prod = rd(self.page + REQ_PROD);
        let mut push = |b: u8| {
            put_byte(self.page + u64::from(prod % 1024), b);
            prod = prod.wrapping_add(1);
        };
        for w in [ty, 7, tx, len] {
            w.to_le_bytes().into_iter().for_each(&mut push);
        }
        payload.iter().copied().for_each(&mut push);
        arch::write_u32(self.page + REQ_PROD, prod);
        let mut port = self.port;
        self.x
            .call(EVENT_CHANNEL_OP, [EVTCHNOP_SEND, ptr(&mut port), 0, 0, 0]);
    }

    /// The next reply that is not a watch event (those are counted), if one arrived.
    fn reply(&mut self) -> Option<Reply> {
        loop {
            let cons = rd(self.page + RSP_CONS);
            if rd(self.page + RSP_PROD).wrapping_sub(cons) < 16 {
                return None;
            }
            let at = |i: u32| self.page + RSP + u64::from(cons.wrapping_add(i) % 1024);
            let word = |i: u32| {
                u32::from_le_bytes([
                    byte(at(i)),
                    byte(at(i + 1)),
                    byte(at(i + 2)),
                    byte(at(i + 3)),
                ])
            };
            let (ty, len) = (word(0), word(12));
            let mut r = Reply {
                ty,
                len: len as usize,
                body: [0; 128],
            };
            for i in 0..len.min(128) {
                r.body[i as usize] = byte(at(16 + i));
            }
            arch::write_u32(self.page + RSP_CONS, cons.wrapping_add(16 + len));
            if ty == WATCH_EVENT {
                self.events += 1;
                continue;
            }
            return Some(r);
        }
    }

    /// Takes every message still in the reply ring, counting the watch events.
    fn drain(&mut self) {
        while self.reply().is_some() {}
    }

    fn call(&mut self, ty: u32, tx: u32, payload: &[u8]) -> Option<Reply> {
        self.send_raw(ty, tx, payload.len() as u32, payload);
        self.reply()
    }
}

pub(super) fn checks(x: Xen) {
    let (rp, pfn) = get_param(x, HVM_PARAM_STORE_PFN);
    let (re, port) = get_param(x, HVM_PARAM_STORE_EVTCHN);
    let page = pfn << 12;
    check(
        "xen-store-params",
        rp == 0 && re == 0 && pfn != 0 && port != 0 && rd(page + REQ_CONS) == rd(page + REQ_PROD),
        format_args!("pfn {rp}: {pfn:#x}, evtchn {re}: {port}"),
    );
    if rp != 0 || re != 0 || pfn == 0 {
        return;
    }
    let mut s = Store {
        x,
        page,
        port: port as u32,
        events: 0,
    };
    let [_, _, domid, _] = arch::cpuid(0x4000_0004, 0);
    let mut want = [0u8; 12];
    let n = decimal(domid, &mut want);
    let r = s.call(READ, 0, b"domid\0");
    check(
        "xen-store-read-domid",
        r.as_ref().is_some_and(|r| r.is(READ, &want[..n])),
        format_args!("{:?}", r.as_ref().map(|r| (r.ty, r.text()))),
    );

    let w = s.call(WRITE, 0, b"data/probe\0janus");
    let r = s.call(READ, 0, b"data/probe\0");
    check(
        "xen-store-write-read",
        w.as_ref().is_some_and(|w| w.is(WRITE, b"OK\0"))
            && r.as_ref().is_some_and(|r| r.is(READ, b"janus")),
        format_args!(
            "write {:?}, read {:?}",
            w.map(|w| w.ty),
            r.as_ref().map(|r| r.text())
        ),
    );

    // Another domain's nodes, a path without its NUL, and a relative path that climbs out.
    let other = s.call(READ, 0, b"/local/domain/0/name\0");
    let unterminated = s.call(READ, 0, b"data/probe");
    let write_other = s.call(WRITE, 0, b"/local/domain/0/x\0v");
    check(
        "xen-store-hostile-paths",
        other.as_ref().is_some_and(|r| r.is(ERROR, b"EACCES\0"))
            && unterminated
                .as_ref()
                .is_some_and(|r| r.is(ERROR, b"EINVAL\0"))
            && write_other
                .as_ref()
                .is_some_and(|r| r.is(ERROR, b"EACCES\0")),
        format_args!(
            "dom0 read {:?}, unterminated {:?}, dom0 write {:?}",
            other.as_ref().map(|r| r.text()),
            unterminated.as_ref().map(|r| r.text()),
            write_other.as_ref().map(|r| r.text())
        ),
    );

    // A new watch fires at once, with its path and token.
    let before = s.events;
    let r = s.call(WATCH, 0, b"data/probe\0tok\0");
    s.drain();
    check(
        "xen-store-watch-fires-at-once",
        r.as_ref().is_some_and(|r| r.is(WATCH, b"OK\0")) && s.events > before,
        format_args!(
            "{:?}, events {before} -> {}",
            r.as_ref().map(|r| r.text()),
            s.events
        ),
    );

    // A transaction whose node changed under it is told to try again.
    let t = s.call(TRANSACTION_START, 0, b"\0");
    let id = t
        .as_ref()
        .map_or(0, |t| parse_decimal(&t.body[..t.len.min(128)]));
    let in_tx = s.call(WRITE, id, b"data/probe\0in-tx");
    let outside = s.call(WRITE, 0, b"data/probe\0outside");
    let end = s.call(TRANSACTION_END, id, b"T\0");
    let now = s.call(READ, 0, b"data/probe\0");
    check(
        "xen-store-transaction-conflict-eagain",
        id != 0
            && in_tx.is_some_and(|r| r.ty == WRITE)
            && outside.is_some_and(|r| r.ty == WRITE)
            && end.as_ref().is_some_and(|r| r.is(ERROR, b"EAGAIN\0"))
            && now.as_ref().is_some_and(|r| r.is(READ, b"outside")),
        format_args!(
            "tx {id}, end {:?}, node {:?}",
            end.as_ref().map(|r| r.text()),
            now.as_ref().map(|r| r.text())
        ),
    );

    // Quotas: a value too large, and more nodes than a domain may have.
    let mut big = [b'v'; 160];
    big[..11].copy_from_slice(b"data/probe\0");
    let too_big = s.call(WRITE, 0, &big);
    let mut refused = None;
    let mut path = *b"data/n000\0x";
    for i in 0..300u32 {
        path[6] = b'0' + (i / 100) as u8;
        path[7] = b'0' + (i / 10 % 10) as u8;
        path[8] = b'0' + (i % 10) as u8;
        match s.call(WRITE, 0, &path) {
            Some(r) if r.ty == WRITE => {}
            other => {
                refused = Some((i, other));
                break;
            }
        }
    }
    let quota_ok = refused.as_ref().is_some_and(|(_, r)| {
        r.as_ref()
            .is_some_and(|r| r.is(ERROR, b"ENOSPC\0") || r.is(ERROR, b"E2BIG\0"))
    });
    let still = s.call(READ, 0, b"domid\0");
    check(
        "xen-store-quotas",
        too_big.as_ref().is_some_and(|r| r.is(ERROR, b"E2BIG\0"))
            && quota_ok
            && still.is_some_and(|r| r.is(READ, &want[..n])),
        format_args!(
            "160-byte value {:?}, nodes refused at {:?}",
            too_big.as_ref().map(|r| r.text()),
            refused
                .as_ref()
                .map(|(i, r)| (*i, r.as_ref().map(|r| r.text())))
        ),
    );

    // Last: a message longer than 4096 bytes breaks this domain's connection, and nothing
    // else; the store answers no more, and the hypervisor runs on.
    s.send_raw(READ, 0, 5000, b"domid\0");
    let after = s.call(READ, 0, b"domid\0");
    check(
        "xen-store-oversized-message-drops-the-connection",
        after.is_none(),
        format_args!(
            "a reply after the oversized message: {:?}",
            after.map(|r| r.ty)
        ),
    );
}

fn decimal(mut v: u32, out: &mut [u8; 12]) -> usize {
    let mut tmp = [0u8; 12];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = tmp[n - 1 - i];
    }
    n
}

fn parse_decimal(b: &[u8]) -> u32 {
    b.iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0, |a, &c| a * 10 + u32::from(c - b'0'))
}
