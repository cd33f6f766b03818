//! `janus.selftest=disk` and `janus.selftest=disk-stress`: the volume layer end to end on the
//! real NVMe driver, before any VM starts. The host reads the images afterwards with its own
//! tools and checks them against `virt::block::test_pattern`.
//!
//! `disk`: on every writable disk, 64 KiB at sector 2048 and one sector three from the end
//! (both allocate blocks), flushed and read back; on read-only disks, a read of sector 0.
//! `disk-stress`: round after round on the first VM's first disk, each rewriting 16 sectors
//! spread over the disk and allocating one more block, then flushing and saying so (COM1 and a
//! `disk-flushed` record); it never ends by itself — the power-cut test stops the emulator
//! at a random moment and checks that every flushed round is in the image.

use super::host::DISKS;
use crate::println;
use virt::block::{SECTOR, Volume, stress_sectors, test_pattern};

const RUN: usize = 128;

fn fail(what: core::fmt::Arguments<'_>) -> bool {
    println!("disk: selftest FAILED: {what}");
    false
}

/// `true` when every disk passed.
pub fn disk() -> bool {
    let mut buf = [0u8; RUN * SECTOR as usize];
    let mut back = [0u8; RUN * SECTOR as usize];
    let mut any = false;
    for (i, vm) in DISKS.iter().enumerate() {
        for (j, d) in vm.iter().enumerate() {
            let Some(d) = d.get() else { continue };
            any = true;
            let mut v = d.lock();
            if v.read_only() {
                if let Err(e) = v.read(0, &mut back[..SECTOR as usize]) {
                    return fail(format_args!("vm {i} disk {j}: read: {e:?}"));
                }
                println!("disk: vm {i} disk {j}: read-only, read back");
                continue;
            }
            let last = v.sectors().saturating_sub(3);
            for (at, n) in [(2048, RUN), (last, 1)] {
                let len = n * SECTOR as usize;
                test_pattern(0, at, &mut buf[..len]);
                if let Err(e) = v.write(at, &buf[..len]) {
                    return fail(format_args!("vm {i} disk {j}: write at {at}: {e:?}"));
                }
            }
            if let Err(e) = v.flush() {
                return fail(format_args!("vm {i} disk {j}: flush: {e:?}"));
            }
            for (at, n) in [(2048, RUN), (last, 1)] {
                let len = n * SECTOR as usize;
                test_pattern(0, at, &mut buf[..len]);
                if let Err(e) = v.read(at, &mut back[..len]) {
                    return fail(format_args!("vm {i} disk {j}: read at {at}: {e:?}"));
                }
                if back[..len] != buf[..len] {
                    return fail(format_args!(
                        "vm {i} disk {j}: sector {at} reads back wrong"
                    ));
                }
            }
            println!("disk: vm {i} disk {j}: written, flushed and read back");
        }
    }
    if !any {
        return fail(format_args!("no disk could be opened"));
    }
    println!("disk: selftest passed");
    true
}

/// Rounds of writes and flushes until the machine is stopped; returns only on an error.
pub fn stress() -> bool {
    let Some(d) = DISKS[0][0].get() else {
        return fail(format_args!("the first VM's first disk is not open"));
    };
    let mut v = d.lock();
    let sectors = v.sectors();
    let mut sector = [0u8; SECTOR as usize];
    let mut round = 1u32;
    loop {
        for at in stress_sectors(round, sectors) {
            test_pattern(round, at, &mut sector);
            if let Err(e) = v.write(at, &sector) {
                return fail(format_args!("round {round}: write at {at}: {e:?}"));
            }
        }
        if let Err(e) = v.flush() {
            return fail(format_args!("round {round}: flush: {e:?}"));
        }
        println!("disk: round {round} flushed");
        defmt::info!("disk-flushed {=u32}", round);
        round += 1;
    }
}

/// The workloads of `cargo xtask bench disk`, on the first VM's first disk: (name, request
/// bytes, requests, random, write).
pub const BENCH: [(&str, usize, u32, bool, bool); 4] = [
    ("seq-write-1M", 1 << 20, 64, false, true),
    ("seq-read-1M", 1 << 20, 64, false, false),
    ("rand-write-4K", 4096, 1024, true, true),
    ("rand-read-4K", 4096, 1024, true, false),
];
/// Random requests fall in the first 64 MiB, which the sequential writes filled.
const BENCH_SPAN: u64 = 64 << 20;

/// `janus.selftest=disk-bench`: each workload timed on the hypervisor's clock, from the first
/// request to the completion of the flush that makes the writes durable. Each result is a
/// `disk-bench NAME BYTES NS` record.
pub fn bench() -> bool {
    let Some(d) = DISKS[0][0].get() else {
        return fail(format_args!("the first VM's first disk is not open"));
    };
    let mut v = d.lock();
    let mut buf = alloc::vec![0u8; 1 << 20];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for (name, size, count, random, write) in BENCH {
        let started = crate::arch::tsc::now_ns();
        for i in 0..count {
            let at = if random {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % (BENCH_SPAN / size as u64) * size as u64
            } else {
                u64::from(i) * size as u64
            } / SECTOR;
            let r = if write {
                test_pattern(i, at, &mut buf[..size]);
                v.write(at, &buf[..size])
            } else {
                v.read(at, &mut buf[..size])
            };
            if let Err(e) = r {
                return fail(format_args!("{name}: request {i} at sector {at}: {e:?}"));
            }
        }
        if write && let Err(e) = v.flush() {
            return fail(format_args!("{name}: flush: {e:?}"));
        }
        let ns = crate::arch::tsc::now_ns() - started;
        let bytes = size as u64 * u64::from(count);
        println!("disk-bench: {name}: {bytes} bytes in {} us", ns / 1000);
        defmt::info!("disk-bench {=str} {=u64} {=u64}", name, bytes, ns);
    }
    true
}
