//! The blkif fuzz body, shared by the cargo-fuzz target `blkif` and the stable, seeded test
//! `abi-xen/tests/fuzz_blkif.rs`. The input is a script of frontend actions on a ring page
//! (whole request entries with arbitrary operations, segment counts, sectors, grant references
//! and sector ranges; raw bytes; arbitrary indices; grants revoked and restored) each followed
//! by a service pass on a small disk, read-only or not. A panic, a write to a read-only disk,
//! or a disk that changes size is a bug.

use abi_xen::GrantError;
use abi_xen::blkback::ring::{Disk, Ring};
use virt::block::{MemVolume, SECTOR};
use virt::testing::FakeHost;
use virt::{GuestMemory, VecMemory};

const RING: u64 = 0x1000;
const DATA: u64 = 0x2000;
const PAGES: u64 = 8;
const DISK_SECTORS: u64 = 64;
const MAX_OPS: usize = 256;

pub fn run(data: &[u8]) {
    let mem = VecMemory::new((DATA + PAGES * 0x1000) as usize);
    let pattern: Vec<u8> = (0..PAGES * 0x1000).map(|i| (i / 512) as u8 | 1).collect();
    let _ = mem.write(DATA, &pattern);
    let mut host = FakeHost::new(1);
    let mut disk = MemVolume::new(DISK_SECTORS);
    disk.read_only = data.first().is_some_and(|b| b & 1 == 1);
    let read_only = disk.read_only;
    host.disks.push(disk);
    // Refs 0..PAGES grant data pages (odd ones read-only), PAGES the ring; the rest nothing.
    let revoked = core::cell::Cell::new(0u64);
    let grants = |_: &dyn GuestMemory, r: u32, write: bool| {
        let r = u64::from(r);
        if r > PAGES || revoked.get() & (1 << r) != 0 {
            return Err(GrantError::NotPermitted);
        }
        if r == PAGES {
            return Ok(RING);
        }
        if write && r % 2 == 1 {
            return Err(GrantError::ReadOnly);
        }
        Ok(DATA + r * 0x1000)
    };
    let mut ring = Ring::new(PAGES as u32, 5);
    let mut broken = false;
    let mut d = data.get(1..).unwrap_or_default();
    let mut take = |n: usize| -> Option<Vec<u8>> {
        if d.len() < n {
            return None;
        }
        let (a, b) = d.split_at(n);
        d = b;
        Some(a.to_vec())
    };
    let mut prod = 0u32;
    for _ in 0..MAX_OPS {
        let Some(op) = take(1) else { break };
        match op[0] % 6 {
            // A request entry at the next slot.
            0..=2 => {
                let Some(e) = take(24) else { break };
                let mut b = [0u8; 112];
                b[0] = e[0] % 8;
                b[1] = e[1] % 14;
                b[8..16].copy_from_slice(&e[2..10]);
                // Sectors mostly near the disk, sometimes anywhere.
                let sector = u64::from_le_bytes(e[10..18].try_into().unwrap_or_default());
                let sector = if e[18] & 1 == 0 { sector % 80 } else { sector };
                b[16..24].copy_from_slice(&sector.to_le_bytes());
                // Mostly well-formed segments (so data moves), sometimes anything.
                let wild = e[22] & 3 == 0;
                for s in 0..11 {
                    let o = 24 + 8 * s;
                    let (g, f, l) = (
                        e[19].wrapping_add(s as u8),
                        e[20].wrapping_add(s as u8),
                        e[21].wrapping_add((s * 3) as u8),
                    );
                    if wild {
                        (b[o], b[o + 4], b[o + 5]) = (g % 12, f % 10, l % 10);
                    } else {
                        let first = f % 8;
                        (b[o], b[o + 4], b[o + 5]) = (g % 8, first, first + l % (8 - first));
                    }
                }
                if e[23] & 1 == 0 {
                    b[0] = e[0] % 2;
                    b[1] = 1 + e[1] % 3;
                }
                let _ = mem.write(RING + 64 + u64::from(prod % 32) * 112, &b);
                prod = prod.wrapping_add(1);
                let _ = mem.write_u32(RING, prod);
            }
            // Raw bytes anywhere in the ring page.
            3 => {
                let Some(h) = take(3) else { break };
                let raw = take(usize::from(h[2] % 32)).unwrap_or_default();
                let _ = mem.write(
                    RING + u64::from(u16::from_le_bytes([h[0], h[1]]) % 4096),
                    &raw,
                );
            }
            // An arbitrary index (req_prod, req_event, rsp_prod, rsp_event).
            4 => {
                let Some(v) = take(5) else { break };
                let val = u32::from_le_bytes([v[1], v[2], v[3], v[4]]);
                let _ = mem.write_u32(RING + u64::from(v[0] % 4) * 4, val);
                if v[0] % 4 == 0 {
                    prod = val;
                }
            }
            // A grant revoked or restored.
            _ => {
                let Some(v) = take(1) else { break };
                revoked.set(revoked.get() ^ (1 << (v[0] % 10)));
            }
        }
        if broken {
            continue;
        }
        let before = host.disks[0].data.clone();
        let served = ring.service(
            &mem,
            &mut host,
            &Disk {
                index: 0,
                sectors: DISK_SECTORS,
                read_only,
                grants: &grants,
            },
        );
        broken = served.is_err();
        assert!(
            !read_only || host.disks[0].data == before,
            "a read-only disk was written"
        );
        assert_eq!(host.disks[0].data.len() as u64, DISK_SECTORS * SECTOR);
    }
}
