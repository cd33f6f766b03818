//! Minimal bzImages built in the test, the Linux boot protocol end to end, and every way a
//! bzImage is refused.

use super::*;
use crate::guest::linux::{self, BzImage};

pub const SETUP_SECTS: u8 = 3;
pub const INIT_SIZE: u32 = 0x80_0000;
pub const PREF: u64 = 0x100_0000;

/// A bzImage with protocol `version`: setup sectors, then `pm` as the protected-mode kernel.
pub fn bzimage(version: u16, pm: &[u8]) -> Vec<u8> {
    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut f = vec![0u8; setup_len];
    f[0x1F1] = SETUP_SECTS;
    f[0x1F4..0x1F8].copy_from_slice(&(pm.len().div_ceil(16) as u32).to_le_bytes());
    f[0x1FA..0x1FC].copy_from_slice(&0xFFFFu16.to_le_bytes());
    f[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
    f[0x200] = 0xEB;
    f[0x201] = (0x26C - 0x202) as u8;
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&version.to_le_bytes());
    f[0x211] = 0x01; // LOADED_HIGH
    f[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    f[0x22C..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    f[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    f[0x234] = 1; // relocatable
    f[0x236..0x238].copy_from_slice(&0x7fu16.to_le_bytes());
    f[0x238..0x23C].copy_from_slice(&2047u32.to_le_bytes());
    f[0x248..0x24C].copy_from_slice(&0x10u32.to_le_bytes());
    f[0x24C..0x250].copy_from_slice(&0x20u32.to_le_bytes());
    f[0x258..0x260].copy_from_slice(&PREF.to_le_bytes());
    f[0x260..0x264].copy_from_slice(&INIT_SIZE.to_le_bytes());
    // Setup code right after the header must not leak into the zero page.
    f[0x26C..0x280].copy_from_slice(&[0xCC; 0x14]);
    f.extend_from_slice(pm);
    f
}

pub fn pm_kernel() -> Vec<u8> {
    (0..0x3000u32).map(|i| (i % 251) as u8).collect()
}

fn set<const N: usize>(f: &mut [u8], at: usize, v: [u8; N]) {
    f[at..at + N].copy_from_slice(&v);
}

#[test]
fn linux_boot_end_to_end() {
    let m = mem(64);
    let pm = pm_kernel();
    let image = bzimage(0x020F, &pm);
    let initrd: Vec<u8> = (0..100_000u32).map(|i| (i * 3) as u8).collect();
    let mut p = params(&image, Some(&initrd));
    p.cmdline = b"console=ttyS0 earlycon=uart8250,io,0x3f8 panic=-1";
    p.acpi = AcpiOptions::hyperv();
    let e = load_linux(&m, &p).unwrap();

    assert_eq!(e.entry, PREF as u32);
    assert_eq!(e.esi, layout::BOOT_INFO as u32);
    assert_eq!(e.ebx, 0);
    assert_eq!(e.kernel, GuestRange::new(PREF, INIT_SIZE.into()));
    assert_eq!(read(&m, PREF, pm.len()), pm);

    let ird = e.initrd.unwrap();
    assert_eq!(ird.start % layout::PAGE, 0);
    assert!(ird.start >= e.kernel.end);
    let top = 64 * MIB - layout::HV_PAGES * layout::PAGE;
    assert!(ird.end <= top && top - ird.end < layout::PAGE);
    assert_eq!(read(&m, ird.start, initrd.len()), initrd);

    let bp = layout::BOOT_INFO;
    // The header came from the image ...
    assert_eq!(read_u16(&m, bp + 0x1FE), 0xAA55);
    assert_eq!(read(&m, bp + 0x202, 4), b"HdrS");
    assert_eq!(read_u16(&m, bp + 0x206), 0x020F);
    assert_eq!(read_u32(&m, bp + 0x260), INIT_SIZE);
    assert_eq!(read_u64(&m, bp + 0x258), PREF);
    // ... and what the loader owns was filled in.
    assert_eq!(read(&m, bp + 0x210, 1), [0xFF]);
    assert_eq!(read(&m, bp + 0x211, 1), [linux::LOADED_HIGH]);
    assert_eq!(read_u32(&m, bp + 0x214), PREF as u32);
    assert_eq!(read_u32(&m, bp + 0x218), ird.start as u32);
    assert_eq!(read_u32(&m, bp + 0x21C), initrd.len() as u32);
    assert_eq!(read_u32(&m, bp + 0x228), layout::CMDLINE as u32);
    assert_eq!(read_u32(&m, bp + 0x23C), 0);
    assert_eq!(read_u64(&m, bp + 0x250), 0);
    assert_eq!(read_u64(&m, bp + 0x070), e.rsdp);
    assert_eq!(read_u32(&m, bp + 0x0C8), 0);
    assert_eq!(read(&m, bp + 0x1EF, 1), [0], "sentinel");
    // Nothing past the header's declared end.
    assert!(read(&m, bp + 0x26C, 0x290 - 0x26C).iter().all(|&b| b == 0));

    let mut c = read(&m, layout::CMDLINE, p.cmdline.len() + 1);
    assert_eq!(c.pop(), Some(0));
    assert_eq!(c, p.cmdline);

    let want = VmLayout::new(64 * MIB, 2).unwrap().memory_map(false);
    assert_eq!(read(&m, bp + 0x1E8, 1), [want.as_slice().len() as u8]);
    for (i, r) in want.as_slice().iter().enumerate() {
        let at = bp + 0x2D0 + 20 * i as u64;
        assert_eq!(read_u64(&m, at), r.range.start);
        assert_eq!(read_u64(&m, at + 8), r.range.len());
        assert_eq!(read_u32(&m, at + 16), r.kind as u32);
    }
}

#[test]
fn header_accessors() {
    let pm = pm_kernel();
    let image = bzimage(0x020C, &pm);
    let b = BzImage::parse(&image).unwrap();
    assert_eq!(b.version(), 0x020C);
    assert_eq!(b.header().setup_sects, SETUP_SECTS);
    assert_eq!(b.protected_mode_kernel(), &pm[..]);
    assert_eq!(b.payload(), Some(&pm[0x10..0x30]));
    assert_eq!(b.cmdline_max(), 2047);
    assert_eq!(b.initrd_limit(), 0x8000_0000);
}

#[test]
fn non_relocatable_kernel_loads_at_code32_start() {
    let m = mem(16);
    let mut image = bzimage(0x020C, &pm_kernel());
    image[0x234] = 0;
    let e = load_linux(&m, &params(&image, None)).unwrap();
    assert_eq!(e.entry, 0x10_0000);
    assert_eq!(e.initrd, None);
    assert_eq!(read_u32(&m, layout::BOOT_INFO + 0x218), 0);
}

#[test]
fn setup_sects_zero_means_four() {
    let pm = pm_kernel();
    let mut image = bzimage(0x020F, &[]);
    image[0x1F1] = 0;
    // Four setup sectors after the boot sector, one more than `bzimage` lays out.
    image.resize(5 * 512, 0);
    image.extend_from_slice(&pm);
    set(&mut image, 0x1F4, (pm.len() as u32 / 16).to_le_bytes());
    let b = BzImage::parse(&image).unwrap();
    assert_eq!(b.protected_mode_kernel(), &pm[..]);
}

#[test]
fn trailing_bytes_after_syssize_are_not_loaded() {
    let pm = pm_kernel();
    let mut image = bzimage(0x020F, &pm);
    image.extend_from_slice(b"appended signature");
    let b = BzImage::parse(&image).unwrap();
    assert_eq!(b.protected_mode_kernel(), &pm[..]);
    // syssize 0: everything after setup is the kernel.
    set(&mut image, 0x1F4, [0; 4]);
    assert_eq!(
        BzImage::parse(&image)
            .unwrap()
            .protected_mode_kernel()
            .len(),
        pm.len() + 18
    );
}

#[test]
fn truncated() {
    use GuestLoadError::BzImageTruncated;
    let image = bzimage(0x020F, &pm_kernel());
    assert_eq!(
        BzImage::parse(&image[..0x200]).map(|_| ()),
        Err(BzImageTruncated {
            len: 0x200,
            needed: 0x26C
        })
    );
    let setup = (usize::from(SETUP_SECTS) + 1) * 512;
    assert!(matches!(
        BzImage::parse(&image[..setup - 1]),
        Err(BzImageTruncated { .. })
    ));
    assert!(matches!(
        BzImage::parse(&image[..setup]),
        Err(BzImageTruncated { .. })
    ));
    assert!(matches!(
        BzImage::parse(&image[..image.len() - 16]),
        Err(BzImageTruncated { .. })
    ));
    // Setup sectors that claim more than the file has.
    let mut bad = image.clone();
    bad[0x1F1] = 0xFF;
    assert!(matches!(BzImage::parse(&bad), Err(BzImageTruncated { .. })));
    assert!(matches!(
        load_linux(&mem(64), &params(&image[..300], None)),
        Err(BzImageTruncated { .. })
    ));
}

#[test]
fn not_a_bzimage() {
    use GuestLoadError::NotBzImage;
    let image = bzimage(0x020F, &pm_kernel());
    let elf = super::elf_files::pvh_elf64();
    let mut padded = elf.clone();
    padded.resize(0x1000, 0);
    assert_eq!(BzImage::parse(&padded).map(|_| ()), Err(NotBzImage));
    let mut f = image.clone();
    f[0x1FE] = 0;
    assert_eq!(BzImage::parse(&f).map(|_| ()), Err(NotBzImage));
    let mut f = image.clone();
    f[0x202..0x206].copy_from_slice(b"HdrX");
    assert_eq!(BzImage::parse(&f).map(|_| ()), Err(NotBzImage));
    // A zImage (loaded low) is not supported.
    let mut f = image.clone();
    f[0x211] = 0;
    assert_eq!(BzImage::parse(&f).map(|_| ()), Err(NotBzImage));
    // A jump that says the header ends before the fields the protocol version promises.
    let mut f = image.clone();
    f[0x201] = 0x20;
    assert_eq!(BzImage::parse(&f).map(|_| ()), Err(NotBzImage));
    let mut f = image.clone();
    f[0x201] = 0xFF;
    assert_eq!(BzImage::parse(&f).map(|_| ()), Err(NotBzImage));
    // An ELF handed to the bzImage loader.
    assert_eq!(
        load_linux(&mem(64), &params(&padded, None)),
        Err(NotBzImage)
    );
}

#[test]
fn protocol_too_old() {
    let image = bzimage(0x020B, &pm_kernel());
    assert_eq!(
        load_linux(&mem(64), &params(&image, None)),
        Err(GuestLoadError::ProtocolTooOld { version: 0x020B })
    );
    assert_eq!(linux::MIN_PROTOCOL, 0x020C);
}

#[test]
fn kernel_outside_ram() {
    use GuestLoadError::KernelOutsideRam;
    let image = bzimage(0x020F, &pm_kernel());
    // 16 MiB + init_size does not fit in 16 MiB.
    assert_eq!(
        load_linux(&mem(16), &params(&image, None)),
        Err(KernelOutsideRam {
            start: PREF,
            size: INIT_SIZE.into()
        })
    );
    let mut f = image.clone();
    set(&mut f, 0x258, (1u64 << 40).to_le_bytes());
    assert!(matches!(
        load_linux(&mem(64), &params(&f, None)),
        Err(KernelOutsideRam { .. })
    ));
    let mut f = image.clone();
    set(&mut f, 0x258, u64::MAX.to_le_bytes());
    assert!(matches!(
        load_linux(&mem(64), &params(&f, None)),
        Err(KernelOutsideRam { .. })
    ));
    // A non-relocatable kernel that wants to run below 1 MiB.
    let mut f = image.clone();
    f[0x234] = 0;
    set(&mut f, 0x214, 0x8000u32.to_le_bytes());
    assert!(matches!(
        load_linux(&mem(64), &params(&f, None)),
        Err(KernelOutsideRam { start: 0x8000, .. })
    ));
}

#[test]
fn relocatable_kernel_is_aligned_up() {
    let mut image = bzimage(0x020F, &pm_kernel());
    set(&mut image, 0x258, (PREF + 0x1234).to_le_bytes());
    let l = VmLayout::new(64 * MIB, 1).unwrap();
    let r = BzImage::parse(&image).unwrap().placement(&l).unwrap();
    assert_eq!(r.start, PREF + 0x20_0000);
}

#[test]
fn cmdline_limited_by_the_kernel() {
    let mut image = bzimage(0x020F, &pm_kernel());
    set(&mut image, 0x238, 16u32.to_le_bytes());
    let mut p = params(&image, None);
    p.cmdline = b"0123456789abcdefX";
    assert_eq!(
        load_linux(&mem(64), &p),
        Err(GuestLoadError::CmdlineTooLong { len: 17, max: 16 })
    );
    p.cmdline = b"0123456789abcdef";
    assert!(load_linux(&mem(64), &p).is_ok());
}

#[test]
fn initrd_respects_initrd_addr_max() {
    let mut image = bzimage(0x020F, &pm_kernel());
    set(&mut image, 0x22C, (32 * MIB as u32 - 1).to_le_bytes());
    let initrd = vec![7u8; 0x5000];
    let e = load_linux(&mem(64), &params(&image, Some(&initrd))).unwrap();
    assert_eq!(e.initrd, Some(GuestRange::new(32 * MIB - 0x5000, 0x5000)));
    // Between the kernel's init_size end (24 MiB) and 32 MiB there are 8 MiB.
    let big = vec![7u8; (8 * MIB + 1) as usize];
    assert_eq!(
        load_linux(&mem(64), &params(&image, Some(&big))),
        Err(GuestLoadError::InitrdTooBig {
            size: 8 * MIB + 1,
            max: 8 * MIB
        })
    );
}
