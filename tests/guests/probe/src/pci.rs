//! The hardware-emulation face's PCI bus from inside: the host bridge through both
//! configuration mechanisms, empty slots, and with a disk its NVMe controller — class, BAR
//! sizing, the MSI-X capability, and an admin command whose completion arrives as an MSI-X
//! interrupt (held while its vector is masked, sent at unmask), plus a command whose data
//! pointer lies outside RAM, which must fail without harming anything.

use crate::arch;
use crate::checks::check;
use crate::io::{inl, outl};

const ECAM: u64 = 0xE000_0000;
const VECTOR: u8 = 0x71;

fn cfg(dev: u8, reg: u8) -> u32 {
    outl(0xCF8, 0x8000_0000 | u32::from(dev) << 11 | u32::from(reg));
    inl(0xCFC)
}

fn cfg_write(dev: u8, reg: u8, v: u32) {
    outl(0xCF8, 0x8000_0000 | u32::from(dev) << 11 | u32::from(reg));
    outl(0xCFC, v);
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Admin submission and completion queues and an Identify buffer, identity mapped.
static mut PAGES: [Page; 3] = [const { Page([0; 4096]) }; 3];

fn page(i: usize) -> u64 {
    (&raw const PAGES).cast::<Page>().wrapping_add(i) as u64
}

pub fn checks(disks: u32) {
    let id = cfg(0, 0);
    check(
        "pci-host-bridge",
        id == 0x0008_1b36 && cfg(0, 8) >> 8 == 0x06_0000,
        format_args!("id {id:#x} class {:#x}", cfg(0, 8) >> 8),
    );
    let ecam = arch::read_u32(ECAM);
    check(
        "pci-ecam-matches-cf8",
        ecam == id && arch::read_u32(ECAM + 8) == cfg(0, 8),
        format_args!("{ecam:#x}"),
    );
    let empty = cfg(31, 0);
    outl(0xCF8, 0x8001_0000);
    let other_bus = inl(0xCFC);
    check(
        "pci-empty-slots-float-high",
        empty == u32::MAX && other_bus == u32::MAX && arch::read_u32(ECAM + (31 << 15)) == u32::MAX,
        format_args!("{empty:#x} {other_bus:#x}"),
    );
    if disks == 0 {
        return;
    }
    let class = cfg(1, 8) >> 8;
    check(
        "pci-nvme-class",
        class == 0x01_0802,
        format_args!("{class:#x}"),
    );

    let (lo, hi) = (cfg(1, 0x10), cfg(1, 0x14));
    cfg_write(1, 0x10, u32::MAX);
    cfg_write(1, 0x14, u32::MAX);
    let (size_lo, size_hi) = (cfg(1, 0x10), cfg(1, 0x14));
    cfg_write(1, 0x10, lo);
    cfg_write(1, 0x14, hi);
    check(
        "pci-bar-sizing",
        size_lo == 0xFFFF_C004 && size_hi == u32::MAX && cfg(1, 0x10) == lo,
        format_args!("{size_lo:#x} {size_hi:#x}"),
    );

    let mut cap = (cfg(1, 0x34) & 0xFF) as u8;
    let mut msix = None;
    for _ in 0..8 {
        if cap == 0 {
            break;
        }
        let head = cfg(1, cap);
        if head & 0xFF == 0x11 {
            msix = Some(cap);
            break;
        }
        cap = (head >> 8) as u8;
    }
    let Some(msix) = msix else {
        check(
            "pci-msix-capability",
            false,
            format_args!("none in the list"),
        );
        return;
    };
    let table = cfg(1, msix + 4);
    let vectors = ((cfg(1, msix) >> 16) & 0x7FF) + 1;
    check(
        "pci-msix-capability",
        table & 7 == 4 && vectors >= 2,
        format_args!("table {table:#x}, {vectors} vectors"),
    );
    nvme_interrupts(msix);
}

/// One admin command through the controller with its completion signalled by MSI-X entry 0.
fn nvme_interrupts(msix: u8) {
    let bar0 = u64::from(cfg(1, 0x10) & !0xF) | u64::from(cfg(1, 0x14)) << 32;
    let bar4 = u64::from(cfg(1, 0x20) & !0xF);
    // Memory space and bus mastering on, INTx off.
    cfg_write(1, 4, 0x406);
    arch::expect_vector(VECTOR, true);
    // Entry 0: APIC 0, fixed, our vector; masked until the capability is on.
    arch::write_u32(bar4, 0xFEE0_0000);
    arch::write_u32(bar4 + 4, 0);
    arch::write_u32(bar4 + 8, u32::from(VECTOR));
    arch::write_u32(bar4 + 12, 1);
    cfg_write(1, msix, 0x8000_0000);

    let (sq, cq, data) = (page(0), page(1), page(2));
    let r64 = |off: u64| u64::from(arch::read_u32(bar0 + off));
    arch::write_u32(bar0 + 0x24, 1 << 16 | 1);
    arch::write_u32(bar0 + 0x28, sq as u32);
    arch::write_u32(bar0 + 0x2C, (sq >> 32) as u32);
    arch::write_u32(bar0 + 0x30, cq as u32);
    arch::write_u32(bar0 + 0x34, (cq >> 32) as u32);
    arch::write_u32(bar0 + 0x14, 1 | 6 << 16 | 4 << 20);
    let t0 = arch::rdtsc();
    while r64(0x1C) & 1 == 0 && arch::rdtsc() - t0 < crate::arch::WATCHDOG {
        core::hint::spin_loop();
    }
    check(
        "nvme-ready",
        r64(0x1C) & 3 == 1,
        format_args!("CSTS {:#x}", r64(0x1C)),
    );

    // Identify controller into the data page, CID 1, with the vector masked: the pending bit.
    submit(sq, 0, 0x06, 1, data, 1);
    let before = arch::vector_hits(VECTOR).0;
    arch::write_u32(bar0 + 0x1000, 1);
    let pending = arch::read_u32(bar4 + 0x800);
    check(
        "pci-msix-masked-vector-pends",
        pending & 1 == 1 && arch::vector_hits(VECTOR).0 == before,
        format_args!("PBA {pending:#x}"),
    );
    arch::write_u32(bar4 + 12, 0);
    let (hits, _) = arch::wait_vector(VECTOR, before, crate::arch::WATCHDOG);
    let done = arch::read_u32(cq + 12);
    let vid = arch::read_u32(data) as u16;
    check(
        "nvme-msix-completion",
        hits > before && done & 0xFFFF == 1 && done >> 16 == 1 && vid == 0x1b36,
        format_args!("hits {hits}, entry dw3 {done:#x}, VID {vid:#x}"),
    );
    arch::write_u32(bar0 + 0x1004, 1);

    // A data pointer outside RAM: the command fails (Data Transfer Error), nothing else.
    submit(sq, 1, 0x06, 2, 0xF000_0000, 1);
    let before = hits;
    arch::write_u32(bar0 + 0x1000, 0);
    let (hits, _) = arch::wait_vector(VECTOR, before, crate::arch::WATCHDOG);
    let entry = arch::read_u32(cq + 16 + 12);
    let status = entry >> 17;
    check(
        "nvme-prp-outside-ram-fails",
        hits > before && entry & 0xFFFF == 2 && status & 0xFF == 0x04,
        format_args!("entry dw3 {entry:#x}"),
    );
    arch::write_u32(bar0 + 0x1004, 0);
    // Controller off again, as the probe found it.
    arch::write_u32(bar0 + 0x14, 0);
}

/// Writes a 64-byte command into submission slot `slot`.
fn submit(sq: u64, slot: u64, opcode: u8, cid: u16, prp1: u64, cdw10: u32) {
    let at = sq + slot * 64;
    for i in 0..16 {
        arch::write_u32(at + 4 * i, 0);
    }
    arch::write_u32(at, u32::from(opcode) | u32::from(cid) << 16);
    arch::write_u32(at + 24, prp1 as u32);
    arch::write_u32(at + 28, (prp1 >> 32) as u32);
    arch::write_u32(at + 40, cdw10);
}
