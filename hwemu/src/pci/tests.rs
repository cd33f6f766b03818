use super::*;

fn nvme_like() -> FunctionSpec {
    let mut bars = [None; 6];
    bars[0] = Some(BarSpec {
        kind: BarKind::Mem64,
        size: 0x4000,
    });
    bars[4] = Some(BarSpec {
        kind: BarKind::Mem32,
        size: MSIX_BAR_SIZE,
    });
    FunctionSpec {
        vendor: 0x1b36,
        device: 0x0010,
        class: [0x01, 0x08, 0x02],
        revision: 2,
        subsystem_vendor: 0x1af4,
        subsystem: 0x1100,
        bars,
        msix: Some(MsixSpec { vectors: 4, bar: 4 }),
        msi: true,
        interrupt_pin: 1,
    }
}

fn placed() -> Function {
    let mut at = [0; 6];
    at[0] = 0xC000_0000;
    at[4] = 0xC001_0000;
    Function::new(nvme_like(), at)
}

#[test]
fn mechanisms_decode_as_specified() {
    assert_eq!(type1(0x0000_0810, 0), None);
    let a = type1(0x8001_0A14, 2).unwrap();
    assert_eq!(
        a.bdf,
        Bdf {
            bus: 1,
            device: 1,
            function: 2
        }
    );
    assert_eq!(a.offset, 0x16);
    let e = ecam((2 << 20) | (3 << 15) | (1 << 12) | 0x104);
    assert_eq!(
        e.bdf,
        Bdf {
            bus: 2,
            device: 3,
            function: 1
        }
    );
    assert_eq!(e.offset, 0x104);
}

#[test]
fn header_identifies_the_function() {
    let f = placed();
    assert_eq!(f.config_read(0, 4), 0x0010_1b36);
    assert_eq!(f.config_read(2, 2), 0x0010);
    assert_eq!(f.config_read(0x0B, 1), 0x01);
    assert_eq!(f.config_read(0x09, 1), 0x02);
    assert_eq!(f.config_read(0x08, 4) >> 8, 0x01_0802);
    assert_eq!(f.config_read(0x2C, 4), 0x1100_1af4);
    assert_eq!(f.config_read(0x3D, 1), 1);
    // Capability list: status bit, MSI-X first, then MSI, then the end.
    assert_ne!(f.config_read(0x06, 2) & u32::from(STATUS_CAP_LIST), 0);
    let first = f.config_read(0x34, 1) as u16;
    assert_eq!(f.config_read(first, 1), u32::from(CAP_MSIX));
    let second = f.config_read(first + 1, 1) as u16;
    assert_eq!(f.config_read(second, 1), u32::from(CAP_MSI));
    assert_eq!(f.config_read(second + 1, 1), 0);
    // MSI-X table size is N-1, table and PBA in BAR 4.
    assert_eq!(f.config_read(first + 2, 2) & 0x7FF, 3);
    assert_eq!(f.config_read(first + 4, 4), 4);
    assert_eq!(f.config_read(first + 8, 4), MSIX_PBA_OFFSET as u32 | 4);
    // Extended space and unknown registers read zero.
    assert_eq!(f.config_read(0x100, 4), 0);
    assert_eq!(f.config_read(0xFFC, 4), 0);
    let bridge = Function::new(FunctionSpec::host_bridge(0x1b36, 0x0008), [0; 6]);
    assert_eq!(bridge.config_read(0x08, 4) >> 8, 0x06_0000);
    assert_eq!(bridge.config_read(0x34, 1), 0);
    assert_eq!(bridge.config_read(0x06, 2), 0);
}

#[test]
fn bars_size_and_move_as_an_os_programs_them() {
    let mut f = placed();
    assert_eq!(f.config_read(0x10, 4), 0xC000_0004);
    assert_eq!(f.config_read(0x14, 4), 0);
    assert_eq!(f.config_read(0x20, 4), 0xC001_0000);
    // Not decoded until memory space is enabled.
    assert_eq!(f.bar_range(0), None);
    f.config_write(0x04, 2, u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER));
    assert_eq!(f.bar_range(0), Some(0xC000_0000..0xC000_4000));
    assert_eq!(f.bar_at(0xC001_0010), Some((4, 0x10)));
    // Sizing: all ones reads back the size mask with the type bits; a sized BAR decodes nothing.
    f.config_write(0x10, 4, u32::MAX);
    f.config_write(0x14, 4, u32::MAX);
    assert_eq!(f.config_read(0x10, 4), 0xFFFF_C004);
    assert_eq!(f.config_read(0x14, 4), u32::MAX);
    assert_eq!(f.bar_range(0), None);
    f.config_write(0x20, 4, u32::MAX);
    assert_eq!(f.config_read(0x20, 4), 0xFFFF_F000);
    // Moved above 4 GiB, and the other BAR back.
    f.config_write(0x10, 4, 0x8000_0000);
    f.config_write(0x14, 4, 0x1);
    f.config_write(0x20, 4, 0xD000_0000);
    assert_eq!(f.bar_range(0), Some(0x1_8000_0000..0x1_8000_4000));
    assert_eq!(f.bar_range(4), Some(0xD000_0000..0xD000_1000));
    // Slots without a BAR stay zero whatever is written.
    f.config_write(0x18, 4, u32::MAX);
    assert_eq!(f.config_read(0x18, 4), 0);
    // The command register keeps only its writable bits.
    f.config_write(0x04, 4, u32::MAX);
    assert_eq!(f.command(), COMMAND_WRITABLE);
}

#[test]
fn msix_masks_hold_and_unmasks_send() {
    let mut f = placed();
    let cap = f.config_read(0x34, 1) as u16;
    // Nothing enabled: INTx.
    assert_eq!(f.signal(0), Signal::Intx);
    f.config_write(0x04, 2, u32::from(COMMAND_INTX_DISABLE));
    assert_eq!(f.signal(0), Signal::Nothing);
    // MSI-X on, entries masked at reset.
    f.config_write(cap + 2, 2, u32::from(MSIX_ENABLE));
    assert_eq!(f.signal(1), Signal::Held);
    assert_eq!(f.msix_read(MSIX_PBA_OFFSET, 4), 0b10);
    f.msix_write(16, 8, 0xFEE0_1000);
    f.msix_write(24, 4, 0x41);
    let sent = f.msix_write(28, 4, 0);
    let want = Message {
        address: 0xFEE0_1000,
        data: 0x41,
    };
    assert_eq!(sent.0.as_slice(), &[want]);
    assert_eq!(f.msix_read(MSIX_PBA_OFFSET, 4), 0);
    assert_eq!(f.signal(1), Signal::Message(want));
    assert_eq!(f.msix_read(16, 8), 0xFEE0_1000);
    assert_eq!(f.msix_read(24, 4), 0x41);
    // Function mask holds everything; clearing it releases.
    f.config_write(cap + 2, 2, u32::from(MSIX_ENABLE | MSIX_FUNCTION_MASK));
    assert_eq!(f.signal(1), Signal::Held);
    let sent = f.config_write(cap + 2, 2, u32::from(MSIX_ENABLE));
    assert_eq!(sent.0.len(), 1);
    // Vectors past the table go nowhere; writes past it are ignored.
    assert_eq!(f.signal(9), Signal::Nothing);
    f.msix_write(16 * 40, 4, 1);
    assert_eq!(f.msix_read(16 * 40, 4), 0);
    assert_eq!(
        Message {
            address: 0xFEE0_1000,
            data: 0x41
        }
        .target(),
        Some(MsiTarget {
            vector: 0x41,
            dest: 1,
            logical: false
        })
    );
    assert_eq!(
        Message {
            address: 0xFEF0_0000,
            data: 0x41
        }
        .target(),
        None
    );
}

#[test]
fn msi_is_used_when_msix_is_off() {
    let mut f = placed();
    let cap = f.config_read(0x34, 1) as u16;
    let msi = f.config_read(cap + 1, 1) as u16;
    assert_eq!(f.config_read(msi + 2, 2), u32::from(MSI_64BIT));
    f.config_write(msi + 4, 4, 0xFEE0_0000);
    f.config_write(msi + 8, 4, 0);
    f.config_write(msi + 12, 2, 0x4022);
    f.config_write(msi + 2, 2, 1);
    assert_eq!(
        f.signal(0),
        Signal::Message(Message {
            address: 0xFEE0_0000,
            data: 0x4022
        })
    );
    assert!(!f.set_intx(true));
}

#[test]
fn arbitrary_config_and_table_traffic_never_panics() {
    let mut f = placed();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = [1, 2, 4, 8][(x & 3) as usize];
        let off = (x >> 8) as u16 & 0xFFF;
        match (x >> 40) % 6 {
            0 => _ = f.config_read(off, size),
            1 => _ = f.config_write(off, size, (x >> 20) as u32),
            2 => _ = f.msix_read(u64::from(off), size),
            3 => _ = f.msix_write(u64::from(off), size, x),
            4 => _ = f.signal((x >> 50) as u16 & 0x3F),
            _ => _ = f.bar_at(x >> 16),
        }
    }
}
