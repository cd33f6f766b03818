use super::*;
use crate::msr::*;
use virt::Event;

const SIMP_PAGE: u64 = 0x9000;
const SIEF_PAGE: u64 = 0xa000;

#[test]
fn synic_registers_reset_values_and_version() {
    let mut rig = Rig::new();
    assert_eq!(rig.rd_ok(0, SCONTROL), 0);
    assert_eq!(rig.rd_ok(0, SVERSION), 1);
    assert_eq!(rig.wr(0, SVERSION, 2), Err(Event::GP0));
    assert_eq!(rig.rd_ok(0, SIMP), 0);
    assert_eq!(rig.rd_ok(0, SIEFP), 0);
    assert_eq!(rig.rd_ok(0, EOM), 0);
    for i in 0..16 {
        assert_eq!(rig.rd_ok(1, SINT0 + i), 1 << 16, "SINT{i} starts masked");
    }
}

#[test]
fn sint_vector_masked_and_auto_eoi() {
    let mut rig = Rig::new();
    rig.wr_ok(0, SINT0 + 2, 0xf3);
    assert_eq!(rig.rd_ok(0, SINT0 + 2), 0xf3);
    assert_eq!(rig.rd_ok(1, SINT0 + 2), 1 << 16, "per VP");
    // An unmasked SINT may not name an exception vector; a masked one may.
    assert_eq!(rig.wr(0, SINT0 + 3, 0x0e), Err(Event::GP0));
    rig.wr_ok(0, SINT0 + 3, (1 << 16) | 0x0e);
    rig.wr_ok(0, SINT0 + 15, (1 << 17) | 0x40);
    assert_eq!(rig.rd_ok(0, SINT0 + 15), (1 << 17) | 0x40);
}

#[test]
fn enabling_message_and_event_pages_clears_them() {
    let mut rig = Rig::new();
    rig.mem.write(SIMP_PAGE, &[0xaa; 4096]).unwrap();
    rig.mem.write(SIEF_PAGE, &[0xbb; 4096]).unwrap();
    rig.wr_ok(0, SIMP, SIMP_PAGE | 1);
    rig.wr_ok(0, SIEFP, SIEF_PAGE | 1);
    assert_eq!(rig.page(SIMP_PAGE), vec![0; 4096]);
    assert_eq!(rig.page(SIEF_PAGE), vec![0; 4096]);
    assert_eq!(rig.rd_ok(0, SIMP), SIMP_PAGE | 1);
    assert_eq!(rig.rd_ok(0, SIEFP), SIEF_PAGE | 1);
    // Rewriting the same enabled value leaves what the guest consumes alone.
    rig.mem.write_u32(SIMP_PAGE + 512, 1).unwrap();
    rig.wr_ok(0, SIMP, SIMP_PAGE | 1);
    assert_eq!(rig.mem.read_u32(SIMP_PAGE + 512).unwrap(), 1);
    // Pages outside RAM cannot be enabled; disabled ones are just stored.
    assert_eq!(rig.wr(0, SIMP, (RAM as u64) | 1), Err(Event::GP0));
    rig.wr_ok(0, SIEFP, RAM as u64);
    assert_eq!(rig.rd_ok(0, SIEFP), RAM as u64);
}

#[test]
fn scontrol_is_per_vp_storage() {
    let mut rig = Rig::new();
    rig.wr_ok(1, SCONTROL, 1);
    assert_eq!(rig.rd_ok(1, SCONTROL), 1);
    assert_eq!(rig.rd_ok(0, SCONTROL), 0);
    rig.wr_ok(1, EOM, 0);
}
