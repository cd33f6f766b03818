use super::wire::{self, Header};
use super::*;
use virt::VecMemory;

const PAGE: u64 = 0x3000;

struct Rig {
    s: Store,
    mem: VecMemory,
    /// Watch events seen while waiting for replies.
    pending: Vec<(u32, Vec<u8>)>,
}

fn rig() -> Rig {
    let mem = VecMemory::new(0x10000);
    let mut s = Store::new(3);
    s.attach(&mem, PAGE, 2, 65536);
    Rig {
        s,
        mem,
        pending: Vec::new(),
    }
}

impl Rig {
    fn idx(&self, off: u64) -> u32 {
        self.mem.read_u32(PAGE + off).unwrap()
    }

    /// Appends raw bytes to the request ring (no service).
    fn push(&self, data: &[u8]) {
        let mut prod = self.idx(2052);
        for &b in data {
            self.mem.write(PAGE + u64::from(prod % 1024), &[b]).unwrap();
            prod = prod.wrapping_add(1);
        }
        self.mem.write_u32(PAGE + 2052, prod).unwrap();
    }

    /// All reply bytes available, consumed.
    fn pull(&self) -> Vec<u8> {
        let mut cons = self.idx(2056);
        let prod = self.idx(2060);
        let mut v = Vec::new();
        while cons != prod {
            v.push(
                self.mem
                    .read_u8(PAGE + 1024 + u64::from(cons % 1024))
                    .unwrap(),
            );
            cons = cons.wrapping_add(1);
        }
        self.mem.write_u32(PAGE + 2056, cons).unwrap();
        v
    }

    fn send(&mut self, ty: u32, tx: u32, payload: &[u8]) {
        let h = Header {
            ty,
            req_id: 77,
            tx_id: tx,
            len: payload.len() as u32,
        };
        self.push(&h.encode());
        self.push(payload);
        self.s.service(&self.mem);
    }

    /// Every message waiting in the response ring.
    fn messages(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.extend(self.pull());
            let before = out.len();
            while buf.len() >= 16 {
                let h = Header::parse(buf[..16].try_into().unwrap());
                let end = 16 + h.len as usize;
                if buf.len() < end {
                    break;
                }
                out.push((h.ty, buf[16..end].to_vec()));
                buf.drain(..end);
            }
            self.s.service(&self.mem);
            if out.len() == before && self.idx(2056) == self.idx(2060) {
                break;
            }
        }
        assert!(buf.is_empty(), "partial message left");
        out
    }

    /// One request, its reply (watch events that follow are left queued).
    fn req(&mut self, ty: u32, tx: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        self.send(ty, tx, payload);
        let mut m = self.messages();
        let i = m
            .iter()
            .position(|(t, _)| *t != wire::WATCH_EVENT)
            .expect("a reply");
        let r = m.remove(i);
        self.pending.extend(m);
        r
    }
}

impl Rig {
    /// Watch events delivered so far, in order.
    fn events(&mut self) -> Vec<Vec<u8>> {
        let mut v = std::mem::take(&mut self.pending);
        v.extend(self.messages());
        v.into_iter()
            .map(|(t, b)| {
                assert_eq!(t, wire::WATCH_EVENT);
                b
            })
            .collect()
    }
}

fn err(name: &str) -> (u32, Vec<u8>) {
    (wire::ERROR, [name.as_bytes(), b"\0"].concat())
}

fn ok(ty: u32) -> (u32, Vec<u8>) {
    (ty, b"OK\0".to_vec())
}

#[test]
fn initial_nodes_and_paths() {
    let mut r = rig();
    assert_eq!(
        r.req(wire::READ, 0, b"domid\0"),
        (wire::READ, b"3".to_vec())
    );
    assert_eq!(
        r.req(wire::READ, 0, b"/local/domain/3/cpu/1/availability\0"),
        (wire::READ, b"online".to_vec())
    );
    assert_eq!(r.req(wire::READ, 0, b"memory/target\0").1, b"65536");
    assert_eq!(
        r.req(wire::READ, 0, b"control/shutdown\0"),
        (wire::READ, vec![])
    );
    let (t, d) = r.req(wire::DIRECTORY, 0, b"cpu\0");
    assert_eq!((t, d), (wire::DIRECTORY, b"0\x001\0".to_vec()));
    assert_eq!(
        r.req(wire::DIRECTORY, 0, b"device\0"),
        (wire::DIRECTORY, vec![])
    );
    assert_eq!(r.req(wire::READ, 0, b"nothing\0"), err("ENOENT"));
    assert_eq!(r.req(wire::READ, 0, b"unterminated"), err("EINVAL"));
    assert_eq!(r.req(wire::READ, 0, b"a//b\0"), err("EINVAL"));
    assert_eq!(r.req(wire::READ, 0, b"a/\0"), err("EINVAL"));
    let long = [vec![b'x'; 200], vec![0]].concat();
    assert_eq!(r.req(wire::READ, 0, &long), err("E2BIG"));
    assert_eq!(
        r.req(wire::GET_DOMAIN_PATH, 0, b"3\0"),
        (wire::GET_DOMAIN_PATH, b"/local/domain/3\0".to_vec())
    );
    assert_eq!(r.req(wire::INTRODUCE, 0, b"1\0"), err("EACCES"));
    assert_eq!(r.req(99, 0, b"\0"), err("EINVAL"));
}

#[test]
fn write_mkdir_rm_and_permissions() {
    let mut r = rig();
    assert_eq!(r.req(wire::WRITE, 0, b"data/a/b\0hello"), ok(wire::WRITE));
    assert_eq!(r.req(wire::READ, 0, b"data/a/b\0").1, b"hello");
    assert_eq!(r.req(wire::READ, 0, b"data/a\0").1, b"", "parent made");
    assert_eq!(r.req(wire::MKDIR, 0, b"data/c\0"), ok(wire::MKDIR));
    assert_eq!(r.req(wire::MKDIR, 0, b"data/c\0"), ok(wire::MKDIR));
    assert_eq!(r.req(wire::DIRECTORY, 0, b"data\0").1, b"a\0c\0");
    assert_eq!(r.req(wire::RM, 0, b"data/a\0"), ok(wire::RM));
    assert_eq!(r.req(wire::READ, 0, b"data/a/b\0"), err("ENOENT"));
    assert_eq!(
        r.req(wire::RM, 0, b"data/a\0"),
        ok(wire::RM),
        "gone, parent there"
    );
    assert_eq!(r.req(wire::RM, 0, b"nope/x\0"), err("ENOENT"));
    assert_eq!(r.req(wire::RM, 0, b"/local/domain/3\0"), err("EACCES"));
    // Other domains and the rest of the tree are out of reach.
    assert_eq!(
        r.req(wire::READ, 0, b"/local/domain/4/domid\0"),
        err("EACCES")
    );
    assert_eq!(
        r.req(wire::WRITE, 0, b"/local/domain/4/x\0v"),
        err("EACCES")
    );
    assert_eq!(r.req(wire::WRITE, 0, b"/tool\0v"), err("EACCES"));
    // Backend nodes kept for this domain are readable, not writable.
    r.s.write(b"/local/domain/0/backend/vbd/3/51712/state", b"2")
        .unwrap();
    r.s.write(b"/local/domain/0/backend/vbd/4/51712/state", b"2")
        .unwrap();
    assert_eq!(
        r.req(
            wire::READ,
            0,
            b"/local/domain/0/backend/vbd/3/51712/state\0"
        )
        .1,
        b"2"
    );
    assert_eq!(
        r.req(wire::DIRECTORY, 0, b"/local/domain/0/backend/vbd/3\0")
            .1,
        b"51712\0"
    );
    assert_eq!(
        r.req(
            wire::READ,
            0,
            b"/local/domain/0/backend/vbd/4/51712/state\0"
        ),
        err("EACCES")
    );
    assert_eq!(
        r.req(
            wire::WRITE,
            0,
            b"/local/domain/0/backend/vbd/3/51712/state\x005"
        ),
        err("EACCES")
    );
    assert_eq!(
        r.req(wire::DIRECTORY, 0, b"/local/domain/0/backend/vbd\0"),
        err("EACCES")
    );
    assert_eq!(r.req(wire::GET_PERMS, 0, b"domid\0").1, b"n3\0");
    assert_eq!(
        r.req(wire::GET_PERMS, 0, b"/local/domain/0/backend/vbd/3\0")
            .1,
        b"n0\0r3\0"
    );
    assert_eq!(
        r.req(wire::SET_PERMS, 0, b"domid\0n3\0"),
        ok(wire::SET_PERMS)
    );
    assert_eq!(r.req(wire::SET_PERMS, 0, b"domid\0n3\0r0\0"), err("EACCES"));
}

#[test]
fn quotas() {
    let mut r = rig();
    let big = [b"data/v\0".to_vec(), vec![b'v'; tree::VALUE_MAX + 1]].concat();
    assert_eq!(r.req(wire::WRITE, 0, &big), err("E2BIG"));
    let mut n = 0;
    loop {
        let p = format!("data/n{n}\0");
        let (t, _) = r.req(wire::WRITE, 0, p.as_bytes());
        if t == wire::ERROR {
            break;
        }
        n += 1;
        assert!(n < tree::MAX_NODES);
    }
    assert_eq!(r.req(wire::WRITE, 0, b"data/more\0"), err("ENOSPC"));
    // The hypervisor still has its reserve.
    r.s.write(b"/local/domain/0/backend/vbd/3/1/state", b"1")
        .unwrap();
    for i in 0..MAX_WATCHES {
        let p = format!("data\0t{i}\0");
        assert_eq!(r.req(wire::WATCH, 0, p.as_bytes()), ok(wire::WATCH));
    }
    assert_eq!(r.req(wire::WATCH, 0, b"data\0extra\0"), err("E2BIG"));
    let _ = r.events();
    for _ in 0..MAX_TRANSACTIONS {
        assert_eq!(
            r.req(wire::TRANSACTION_START, 0, b"\0").0,
            wire::TRANSACTION_START
        );
    }
    assert_eq!(r.req(wire::TRANSACTION_START, 0, b"\0"), err("ENOSPC"));
    // RESET_WATCHES drops the abandoned transactions and the watches.
    assert_eq!(r.req(wire::RESET_WATCHES, 0, b""), ok(wire::RESET_WATCHES));
    assert_eq!(
        r.req(wire::TRANSACTION_START, 0, b"\0").0,
        wire::TRANSACTION_START
    );
    assert_eq!(r.req(wire::WATCH, 0, b"data\0extra\0"), ok(wire::WATCH));
}

fn start(r: &mut Rig) -> u32 {
    let (t, d) = r.req(wire::TRANSACTION_START, 0, b"\0");
    assert_eq!(t, wire::TRANSACTION_START);
    assert_eq!(d.last(), Some(&0));
    std::str::from_utf8(&d[..d.len() - 1])
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn transactions_are_isolated_and_conflict() {
    let mut r = rig();
    let t = start(&mut r);
    assert_eq!(
        r.req(wire::WRITE, t, b"device/x/ring-ref\x008"),
        ok(wire::WRITE)
    );
    assert_eq!(r.req(wire::READ, t, b"device/x/ring-ref\0").1, b"8");
    assert_eq!(r.req(wire::READ, 0, b"device/x/ring-ref\0"), err("ENOENT"));
    assert_eq!(r.req(wire::DIRECTORY, t, b"device\0").1, b"x\0");
    assert_eq!(r.req(wire::DIRECTORY, 0, b"device\0").1, b"");
    assert_eq!(r.req(wire::RM, t, b"control\0"), ok(wire::RM));
    assert_eq!(r.req(wire::READ, t, b"control/shutdown\0"), err("ENOENT"));
    assert_eq!(r.req(wire::READ, 0, b"control/shutdown\0").1, b"");
    assert_eq!(
        r.req(wire::TRANSACTION_END, t, b"T\0"),
        ok(wire::TRANSACTION_END)
    );
    assert_eq!(r.req(wire::READ, 0, b"device/x/ring-ref\0").1, b"8");
    assert_eq!(r.req(wire::READ, 0, b"control/shutdown\0"), err("ENOENT"));
    assert_eq!(r.req(wire::READ, t, b"domid\0"), err("ENOENT"), "ended");

    // A change under a transaction makes it fail; its writes vanish.
    let t = start(&mut r);
    assert_eq!(
        r.req(wire::WRITE, t, b"device/x/state\x003"),
        ok(wire::WRITE)
    );
    r.s.write(b"/local/domain/0/backend/vbd/3/1/state", b"4")
        .unwrap();
    assert_eq!(r.req(wire::TRANSACTION_END, t, b"T\0"), err("EAGAIN"));
    assert_eq!(r.req(wire::READ, 0, b"device/x/state\0"), err("ENOENT"));
    // Aborting always succeeds and applies nothing.
    let t = start(&mut r);
    assert_eq!(
        r.req(wire::WRITE, t, b"device/x/state\x003"),
        ok(wire::WRITE)
    );
    assert_eq!(
        r.req(wire::TRANSACTION_END, t, b"F\0"),
        ok(wire::TRANSACTION_END)
    );
    assert_eq!(r.req(wire::READ, 0, b"device/x/state\0"), err("ENOENT"));
    assert_eq!(r.req(wire::TRANSACTION_END, 0, b"T\0"), err("ENOENT"));
    let t = start(&mut r);
    assert_eq!(r.req(wire::TRANSACTION_END, t, b"X\0"), err("EINVAL"));
}

#[test]
fn watches_fire_at_once_on_change_and_on_removal() {
    let mut r = rig();
    assert_eq!(r.req(wire::WATCH, 0, b"device\0tok\0"), ok(wire::WATCH));
    assert_eq!(
        r.events(),
        vec![b"device\0tok\0".to_vec()],
        "first fire, relative"
    );
    assert_eq!(r.req(wire::WATCH, 0, b"device\0tok\0"), err("EEXIST"));
    assert_eq!(
        r.req(
            wire::WATCH,
            0,
            b"/local/domain/0/backend/vbd/3/51712/state\0be\0"
        ),
        ok(wire::WATCH)
    );
    assert_eq!(
        r.events(),
        vec![b"/local/domain/0/backend/vbd/3/51712/state\0be\0".to_vec()]
    );
    r.s.write(b"/local/domain/0/backend/vbd/3/51712/state", b"2")
        .unwrap();
    r.s.service(&r.mem);
    assert_eq!(
        r.events(),
        vec![b"/local/domain/0/backend/vbd/3/51712/state\0be\0".to_vec()]
    );
    assert_eq!(
        r.req(wire::WRITE, 0, b"device/vbd/1/state\x001"),
        ok(wire::WRITE)
    );
    let ev = r.events();
    assert!(
        ev.contains(&b"device/vbd/1/state\0tok\0".to_vec()),
        "{ev:?}"
    );
    assert!(
        ev.contains(&b"device/vbd\0tok\0".to_vec()),
        "new parents fire too"
    );
    r.s.rm(b"/local/domain/0/backend/vbd/3").unwrap();
    r.s.service(&r.mem);
    assert_eq!(
        r.events(),
        vec![b"/local/domain/0/backend/vbd/3/51712/state\0be\0".to_vec()],
        "a removed parent fires watches below it"
    );
    // Nobody watches control: no event.
    assert_eq!(r.req(wire::WRITE, 0, b"control/x\0y"), ok(wire::WRITE));
    assert!(r.events().is_empty());
    assert_eq!(r.req(wire::UNWATCH, 0, b"device\0tok\0"), ok(wire::UNWATCH));
    assert_eq!(r.req(wire::UNWATCH, 0, b"device\0tok\0"), err("ENOENT"));
    assert_eq!(
        r.req(wire::WRITE, 0, b"device/vbd/1/state\x002"),
        ok(wire::WRITE)
    );
    assert!(r.events().is_empty());
    // A flood of changes is coalesced, never lost and never unbounded.
    assert_eq!(r.req(wire::WATCH, 0, b"data\0d\0"), ok(wire::WATCH));
    let _ = r.events();
    for i in 0..40 {
        r.s.write(format!("/local/domain/3/data/k{i}").as_bytes(), b"1")
            .unwrap();
    }
    r.s.service(&r.mem);
    let ev = r.events();
    assert!(ev.len() <= MAX_EVENTS + 1 && ev.len() > 1, "{}", ev.len());
    assert_eq!(
        ev.last().unwrap(),
        &b"data\0d\0".to_vec(),
        "overflow reported"
    );
    // RESET_WATCHES silences everything.
    assert_eq!(r.req(wire::RESET_WATCHES, 0, b""), ok(wire::RESET_WATCHES));
    r.s.write(b"/local/domain/3/data/k1", b"2").unwrap();
    r.s.service(&r.mem);
    assert!(r.events().is_empty());
}

#[test]
fn hypervisor_watches() {
    let mut r = rig();
    let w =
        r.s.hv_watch(b"/local/domain/3/device/vbd/51712/state")
            .unwrap();
    assert_eq!(r.s.take_hv_event(), None);
    assert_eq!(
        r.req(wire::WRITE, 0, b"device/vbd/51712/state\x003"),
        ok(wire::WRITE)
    );
    assert_eq!(r.s.take_hv_event(), Some(w));
    assert_eq!(r.s.take_hv_event(), None);
    assert_eq!(
        r.s.read(b"/local/domain/3/device/vbd/51712/state"),
        Some(&b"3"[..])
    );
}

#[test]
fn ring_wraps_and_takes_partial_messages() {
    let mut r = rig();
    // Move the indices near the wrap point.
    for off in [2048u64, 2052, 2056, 2060] {
        r.mem.write_u32(PAGE + off, u32::MAX - 5).unwrap();
    }
    let h = Header {
        ty: wire::READ,
        req_id: 1,
        tx_id: 0,
        len: 6,
    };
    let msg = [&h.encode()[..], b"domid\0"].concat();
    r.push(&msg[..10]);
    assert!(
        r.s.service(&r.mem),
        "consumed bytes: the guest may write more"
    );
    assert!(r.pull().is_empty());
    r.push(&msg[10..]);
    r.s.service(&r.mem);
    let m = r.messages();
    assert_eq!(m, vec![(wire::READ, b"3".to_vec())]);
    // A reply larger than the ring goes out in pieces as the guest consumes.
    let names: Vec<u8> = (0..60)
        .flat_map(|i| format!("d{i:02}\0").into_bytes())
        .collect();
    for i in 0..60 {
        r.s.write(
            format!("/local/domain/3/data/{}", format_args!("d{i:02}")).as_bytes(),
            b"",
        )
        .ok();
    }
    let (t, d) = r.req(wire::DIRECTORY, 0, b"data\0");
    assert_eq!(t, wire::DIRECTORY);
    assert_eq!(d.len(), names.len().min(d.len()));
    // Several requests queued at once are all answered, in order.
    let a = [&Header { len: 6, ..h }.encode()[..], b"domid\0"].concat();
    r.push(&a);
    r.push(&a);
    r.s.service(&r.mem);
    assert_eq!(r.messages().len(), 2);
}

#[test]
fn a_large_request_streams_through_the_small_ring() {
    let mut r = rig();
    let mut p = b"data/x\0".to_vec();
    p.extend(vec![b'a'; 4000]);
    let h = Header {
        ty: wire::WRITE,
        req_id: 9,
        tx_id: 0,
        len: p.len() as u32,
    };
    let msg = [&h.encode()[..], &p[..]].concat();
    for chunk in msg.chunks(1000) {
        r.push(chunk);
        r.s.service(&r.mem);
    }
    assert_eq!(
        r.messages(),
        vec![err("E2BIG")],
        "value over quota, ring intact"
    );
    assert!(!r.s.is_broken());
}

#[test]
fn broken_rings_stop_the_store() {
    let mut r = rig();
    r.mem.write_u32(PAGE + 2052, 5000).unwrap();
    r.s.service(&r.mem);
    assert!(r.s.is_broken());
    assert!(!r.s.service(&r.mem));

    let mut r = rig();
    let h = Header {
        ty: wire::WRITE,
        req_id: 1,
        tx_id: 0,
        len: 4097,
    };
    r.push(&h.encode());
    r.s.service(&r.mem);
    assert!(r.s.is_broken(), "payload over 4096");

    let mut r = rig();
    r.mem.write_u32(PAGE + 2060, 3000).unwrap();
    r.send(wire::READ, 0, b"domid\0");
    assert!(r.s.is_broken(), "response indices");
    // A fresh attach (a new boot) serves again.
    r.s.attach(&r.mem, PAGE, 1, 1024);
    r.send(wire::READ, 0, b"domid\0");
    assert_eq!(r.messages(), vec![(wire::READ, b"3".to_vec())]);
}

/// What Linux's xenbus does with a host shutdown request: a relative watch on
/// control/shutdown fires, then the node is read and cleared in a transaction.
#[test]
fn a_shutdown_request_is_seen_and_acknowledged_as_linux_does() {
    let mut r = rig();
    assert_eq!(
        r.req(wire::WATCH, 0, b"control/shutdown\0tok\0"),
        ok(wire::WATCH)
    );
    assert_eq!(r.events(), [b"control/shutdown\0tok\0".to_vec()]);
    r.s.write(b"/local/domain/3/control/shutdown", b"poweroff")
        .unwrap();
    r.s.service(&r.mem);
    assert_eq!(r.events(), [b"control/shutdown\0tok\0".to_vec()]);
    let (t, id) = r.req(wire::TRANSACTION_START, 0, b"\0");
    assert_eq!(t, wire::TRANSACTION_START);
    let id: u32 = std::str::from_utf8(&id[..id.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        r.req(wire::READ, id, b"control/shutdown\0"),
        (wire::READ, b"poweroff".to_vec())
    );
    assert_eq!(
        r.req(wire::WRITE, id, b"control/shutdown\0"),
        ok(wire::WRITE)
    );
    assert_eq!(
        r.req(wire::TRANSACTION_END, id, b"T\0"),
        ok(wire::TRANSACTION_END)
    );
    assert_eq!(
        r.req(wire::READ, 0, b"control/shutdown\0"),
        (wire::READ, Vec::new())
    );
}
