//! Debian's own kernel, when one is on this machine: the bzImage through the Linux boot
//! protocol, and the ELF vmlinux (extracted from it, as xtask does) through PVH.
//!
//! `JANUS_TEST_BZIMAGE` / `JANUS_TEST_VMLINUX` name the files; without them the bzImage is
//! looked for as `/boot/vmlinuz-*`. Run with `cargo test -p boot -- --ignored real_`.

use super::*;
use crate::guest::linux::BzImage;

fn find(var: &str, boot_prefix: Option<&str>) -> Option<Vec<u8>> {
    if let Some(path) = std::env::var_os(var) {
        return Some(std::fs::read(&path).expect("read the kernel named by the environment"));
    }
    let prefix = boot_prefix?;
    let mut found: Vec<_> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    std::fs::read(found.pop()?).ok()
}

#[test]
#[ignore = "needs a Debian kernel: JANUS_TEST_BZIMAGE or /boot/vmlinuz-*"]
fn real_bzimage_loads() {
    let Some(image) = find("JANUS_TEST_BZIMAGE", Some("vmlinuz-")) else {
        eprintln!("no bzImage found; nothing to check");
        return;
    };
    let b = BzImage::parse(&image).unwrap();
    assert!(b.version() >= 0x020C);
    assert!(b.header().relocatable_kernel != 0);
    assert_eq!(b.header().pref_address.get(), 0x100_0000);
    assert!(b.payload().is_some());
    let m = mem(512);
    let initrd = vec![0x5Au8; 4 << 20];
    let mut p = params(&image, Some(&initrd));
    p.cmdline = b"console=ttyS0 earlycon=uart8250,io,0x3f8 panic=-1";
    p.acpi = AcpiOptions::hyperv();
    let e = load_linux(&m, &p).unwrap();
    assert_eq!(e.entry, 0x100_0000);
    let pm = b.protected_mode_kernel();
    assert_eq!(read(&m, 0x100_0000, 4096), pm[..4096]);
    assert_eq!(read_u16(&m, layout::BOOT_INFO + 0x206), b.version());
    eprintln!(
        "bzImage {}.{:02}: kernel {:#x}..{:#x} (init_size), initrd {:?}",
        b.version() >> 8,
        b.version() & 0xff,
        e.kernel.start,
        e.kernel.end,
        e.initrd
    );
}

#[test]
#[ignore = "needs an ELF vmlinux: JANUS_TEST_VMLINUX"]
fn real_vmlinux_loads_as_pvh() {
    let Some(elf) = find("JANUS_TEST_VMLINUX", None) else {
        eprintln!("no vmlinux found; nothing to check");
        return;
    };
    let m = mem(512);
    let initrd = vec![0x5Au8; 4 << 20];
    let e = load_pvh(&m, &params(&elf, Some(&initrd))).unwrap();
    // Debian's 6.1 kernels: PHYS32_ENTRY inside .text, which starts at 16 MiB.
    assert!(e.entry > 0x100_0000 && u64::from(e.entry) < e.kernel.end);
    assert_eq!(e.kernel.start, 0x100_0000);
    assert_eq!(read_u32(&m, layout::BOOT_INFO), 0x336e_c578);
    eprintln!(
        "vmlinux: PVH entry {:#x}, kernel {:#x}..{:#x}, initrd {:?}",
        e.entry, e.kernel.start, e.kernel.end, e.initrd
    );
}
