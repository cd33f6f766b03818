//! The device models on seeded arbitrary access sequences (the `kernel-devices` fuzz body,
//! `testing::devices`): 16550, PIT, CMOS RTC, ACPI power ports and IOAPIC on the bus, the
//! x2APIC through its MSRs. Set `KERNEL_FUZZ_SEED_DIR` to also write the inputs out as a
//! cargo-fuzz corpus.

use super::testing::devices;
use virt::testing::XorShift;

#[test]
fn the_devices_take_any_access_sequence() {
    let seed_dir = std::env::var_os("KERNEL_FUZZ_SEED_DIR").map(|d| {
        let dir = std::path::PathBuf::from(d).join("devices");
        std::fs::create_dir_all(&dir).expect("seed dir");
        dir
    });
    let (mut lines, mut irqs, mut stops) = (0, 0, 0);
    for seed in 1..=200u64 {
        let mut r = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let len = (r.next_u64() % 8192) as usize;
        let data: Vec<u8> = (0..len).map(|_| r.next_u64() as u8).collect();
        if let Some(dir) = &seed_dir {
            std::fs::write(dir.join(format!("stable-{seed:03}")), &data).expect("write seed");
        }
        let reached = devices::run(&data);
        lines += reached.lines;
        irqs += reached.irqs;
        stops += reached.stops;
    }
    // The sequences reached the devices' state, not only their decoders.
    assert!(
        lines > 0 && irqs > 0 && stops > 0,
        "lines {lines} irqs {irqs} stops {stops}"
    );
    devices::run(&[]);
}
