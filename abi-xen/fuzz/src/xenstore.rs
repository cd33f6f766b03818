//! The xenstore fuzz body, shared by the cargo-fuzz target `xenstore` and the stable, seeded
//! test `abi-xen/tests/fuzz_xenstore.rs`. The input is a script of guest actions on the ring
//! page (well-formed requests with arbitrary types, transaction ids and payloads, raw bytes,
//! arbitrary indices, consuming replies) and hypervisor writes, each followed by a service
//! pass. A panic, or a reply ring the store overfills while the guest keeps its indices sane,
//! is a bug.

use abi_xen::Store;
use virt::{GuestMemory, VecMemory};

const PAGE: u64 = 0x1000;
const MAX_OPS: usize = 512;

pub fn run(data: &[u8]) {
    let mem = VecMemory::new(0x4000);
    let mut s = Store::new(5);
    s.attach(&mem, PAGE, 2, 4096);
    let mut d = data;
    let mut take = |n: usize| -> Option<Vec<u8>> {
        if d.len() < n {
            return None;
        }
        let (a, b) = d.split_at(n);
        d = b;
        Some(a.to_vec())
    };
    let idx = |off: u64| mem.read_u32(PAGE + off).unwrap_or(0);
    // Once the script writes indices itself, the ring is the guest's to break.
    let mut scribbled = false;
    for _ in 0..MAX_OPS {
        let Some(op) = take(1) else { break };
        match op[0] % 8 {
            // A framed request: type, tx id, payload length, payload.
            0..=2 => {
                let Some(h) = take(4) else { break };
                let len = usize::from(h[3] % 64) + usize::from(h[2] & 1) * 200;
                let payload = take(len).unwrap_or_default();
                let mut msg = Vec::new();
                msg.extend_from_slice(&u32::from(h[0] % 24).to_le_bytes());
                msg.extend_from_slice(&7u32.to_le_bytes());
                msg.extend_from_slice(&u32::from(h[1] % 4).to_le_bytes());
                msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                msg.extend_from_slice(&payload);
                push(&mem, &msg);
            }
            // Raw bytes into the request ring.
            3 => {
                let Some(n) = take(1) else { break };
                let raw = take(usize::from(n[0] % 48)).unwrap_or_default();
                push(&mem, &raw);
            }
            // An arbitrary index.
            4 => {
                let Some(v) = take(5) else { break };
                let off = 2048 + u64::from(v[0] % 4) * 4;
                let val = u32::from_le_bytes([v[1], v[2], v[3], v[4]]);
                let _ = mem.write_u32(PAGE + off, val);
                scribbled = true;
            }
            // The guest consumes some replies.
            5 => {
                let Some(n) = take(1) else { break };
                let cons = idx(2056);
                let avail = idx(2060).wrapping_sub(cons);
                let _ = mem.write_u32(
                    PAGE + 2056,
                    cons.wrapping_add(avail.min(u32::from(n[0]) * 8)),
                );
            }
            // The hypervisor changes a node the guest may watch.
            6 => {
                let Some(v) = take(2) else { break };
                let path = match v[0] % 4 {
                    0 => "/local/domain/5/data/x".to_string(),
                    1 => format!("/local/domain/0/backend/vbd/5/{}/state", v[1] % 3),
                    2 => "/local/domain/5/device".to_string(),
                    _ => format!("/local/domain/5/data/k{}", v[1]),
                };
                if v[1] & 0x80 != 0 {
                    let _ = s.rm(path.as_bytes());
                } else {
                    let _ = s.write(path.as_bytes(), &v[1..]);
                }
            }
            _ => {}
        }
        s.service(&mem);
        if !scribbled && !s.is_broken() {
            let held = idx(2060).wrapping_sub(idx(2056));
            assert!(held <= 1024, "reply ring overfilled: {held}");
        }
    }
}

fn push(mem: &VecMemory, data: &[u8]) {
    let mut prod = mem.read_u32(PAGE + 2052).unwrap_or(0);
    for &b in data {
        let _ = mem.write(PAGE + u64::from(prod % 1024), &[b]);
        prod = prod.wrapping_add(1);
    }
    let _ = mem.write_u32(PAGE + 2052, prod);
}
