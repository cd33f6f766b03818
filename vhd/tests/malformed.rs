//! A malformed-image corpus, generated here from valid images: every case must be refused
//! with its own named error (never a panic, a huge allocation or a hang), and the damaged-but-
//! usable cases must open and be reported by `check`.

mod common;

use common::Scratch;
use std::convert::Infallible;
use vhd::{CreateOptions, DynHeader, Error, Finding, Footer, Layer, MemDisk, OpenOptions, Vhd};

const SIZE: u64 = 10 << 20;

/// A dynamic 10 MiB image with blocks 2, 0 and 4 allocated in that order (as the notes'
/// QEMU sample), so BAT entries are neither sorted nor contiguous.
fn dynamic() -> Vec<u8> {
    let mut d = MemDisk::default();
    vhd::create_dynamic(&mut d, SIZE, &CreateOptions::new(1, [0x11; 16])).unwrap();
    let mut v = Vhd::open(d, OpenOptions::read_write()).unwrap();
    v.write_at(5 << 20, &[0xab; 4096]).unwrap();
    v.write_at(0, &[0xcd; 512]).unwrap();
    v.write_at(8 << 20, &[0xef; 65536]).unwrap();
    v.flush().unwrap();
    v.into_layers().pop().unwrap().into_inner().data
}

fn fixed() -> Vec<u8> {
    let mut d = MemDisk::default();
    vhd::create_fixed(&mut d, 1 << 20, &CreateOptions::new(1, [0x22; 16])).unwrap();
    d.data
}

/// A differencing child of `dynamic()` with W2ru and W2ku locators.
fn differencing() -> Vec<u8> {
    let parent = Layer::open(MemDisk::new(dynamic()), OpenOptions::read_only()).unwrap();
    let link = vhd::ParentLink {
        relative: Some(".\\parent.vhd"),
        absolute: Some("C:\\vhd\\parent.vhd"),
        ..vhd::link_from(&parent, 0, "parent.vhd")
    };
    let mut d = MemDisk::default();
    vhd::create_differencing(&mut d, &link, &CreateOptions::new(1, [0x33; 16])).unwrap();
    d.data
}

fn open(b: &[u8]) -> Result<Layer<MemDisk>, Error<Infallible>> {
    Layer::open(MemDisk::new(b.to_vec()), OpenOptions::read_write())
}

/// Re-encodes both footer copies (refreshing checksums) after `f` edits them.
fn footers(mut b: Vec<u8>, f: impl Fn(&mut Footer)) -> Vec<u8> {
    let len = b.len();
    let mut ft = Footer::parse(&b[len - 512..]).unwrap();
    f(&mut ft);
    let enc = ft.encode();
    b[len - 512..].copy_from_slice(&enc);
    if Footer::parse(&b[..512]).is_ok() {
        b[..512].copy_from_slice(&enc);
    }
    b
}

fn header(mut b: Vec<u8>, f: impl Fn(&mut DynHeader)) -> Vec<u8> {
    let mut raw = [0u8; 1024];
    raw.copy_from_slice(&b[512..1536]);
    let mut h = DynHeader::parse(&raw).unwrap();
    f(&mut h);
    b[512..1536].copy_from_slice(&h.encode());
    b
}

fn bat(mut b: Vec<u8>, i: usize, v: u32) -> Vec<u8> {
    b[1536 + 4 * i..1540 + 4 * i].copy_from_slice(&v.to_be_bytes());
    b
}

fn get_bat(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[1536 + 4 * i..1540 + 4 * i].try_into().unwrap())
}

fn poke(mut b: Vec<u8>, off: usize, bytes: &[u8]) -> Vec<u8> {
    b[off..off + bytes.len()].copy_from_slice(bytes);
    b
}

type Check = fn(&Error<Infallible>) -> bool;

/// The corpus: name, bytes, the error it must produce.
fn corpus() -> Vec<(&'static str, Vec<u8>, Check)> {
    let dynm = dynamic();
    let len = dynm.len();
    let end = len - 512;
    let diff = differencing();
    let fx = fixed();
    let mut c: Vec<(&'static str, Vec<u8>, Check)> = Vec::new();
    c.push((
        "footer cookie (both)",
        poke(poke(dynm.clone(), 0, b"x"), end, b"x"),
        |e| matches!(e, Error::BadFooterCookie),
    ));
    c.push((
        "footer checksum (both)",
        poke(poke(dynm.clone(), 100, &[1]), end + 100, &[1]),
        |e| matches!(e, Error::BadFooterChecksum { .. }),
    ));
    c.push((
        "fixed footer cookie",
        poke(fx.clone(), fx.len() - 512, b"X"),
        |e| matches!(e, Error::BadFooterCookie),
    ));
    c.push(("header cookie", poke(dynm.clone(), 512, b"x"), |e| {
        matches!(e, Error::BadHeaderCookie)
    }));
    c.push((
        "header checksum",
        poke(dynm.clone(), 512 + 900, &[1]),
        |e| matches!(e, Error::BadHeaderChecksum { .. }),
    ));
    for bs in [3 << 20, 0, 256, 1000, 512 << 20] {
        c.push((
            "block size",
            header(dynm.clone(), move |h| h.block_size = bs),
            |e| matches!(e, Error::BadBlockSize(_)),
        ));
    }
    c.push((
        "table too small",
        header(dynm.clone(), |h| h.max_table_entries = 4),
        |e| {
            matches!(
                e,
                Error::TableTooSmall {
                    entries: 4,
                    needed: 6
                }
            )
        },
    ));
    // Covers all but the last sector of the disk.
    let short = footers(dynm.clone(), |f| f.current_size = 6 * (2 << 20) + 512);
    let short = footers(short, |f| f.creator_app = *b"win ");
    c.push(("table short by one sector", short, |e| {
        matches!(
            e,
            Error::TableTooSmall {
                entries: 6,
                needed: 7
            }
        )
    }));
    c.push((
        "table entries huge",
        header(dynm.clone(), |h| h.max_table_entries = 0xffff_fff0),
        |e| matches!(e, Error::TableTooLarge { .. }),
    ));
    c.push((
        "table offset misaligned",
        header(dynm.clone(), |h| h.table_offset = 1537),
        |e| matches!(e, Error::BadTableOffset(1537)),
    ));
    c.push((
        "table offset past EOF",
        header(dynm.clone(), |h| h.table_offset = 1 << 40),
        |e| matches!(e, Error::BadTableOffset(_)),
    ));
    c.push((
        "table over header",
        header(dynm.clone(), |h| h.table_offset = 1024),
        |e| matches!(e, Error::BadTableOffset(1024)),
    ));
    c.push((
        "table over footer copy",
        header(dynm.clone(), |h| h.table_offset = 0),
        |e| matches!(e, Error::BadTableOffset(0)),
    ));
    let last = len as u64 - 1024;
    let long = header(dynm.clone(), move |h| {
        h.table_offset = last;
        h.max_table_entries = 200;
    });
    c.push(("table runs past EOF", long, |e| {
        matches!(e, Error::Truncated { .. })
    }));
    c.push((
        "table over end footer",
        header(dynm.clone(), move |h| h.table_offset = last + 512),
        |e| matches!(e, Error::BadTableOffset(_)),
    ));
    c.push((
        "BAT entry past EOF",
        bat(dynm.clone(), 1, (len / 512) as u32),
        |e| matches!(e, Error::BatEntryPastEof { block: 1, .. }),
    ));
    c.push((
        "BAT entry overflows",
        bat(dynm.clone(), 1, 0xffff_fffe),
        |e| matches!(e, Error::BatEntryPastEof { block: 1, .. }),
    ));
    c.push(("BAT entry into header", bat(dynm.clone(), 1, 1), |e| {
        matches!(
            e,
            Error::BatEntryInMetadata {
                block: 1,
                sector: 1
            }
        )
    }));
    c.push(("BAT entry into BAT", bat(dynm.clone(), 1, 3), |e| {
        matches!(
            e,
            Error::BatEntryInMetadata {
                block: 1,
                sector: 3
            }
        )
    }));
    let e0 = get_bat(&dynm, 0);
    c.push(("BAT entries overlap", bat(dynm.clone(), 1, e0 + 1), |e| {
        matches!(e, Error::BlocksOverlap { .. })
    }));
    c.push(("BAT entries identical", bat(dynm.clone(), 3, e0), |e| {
        matches!(e, Error::BlocksOverlap { .. })
    }));
    c.push((
        "data offset garbage",
        footers(dynm.clone(), |f| f.data_offset = 0x1_2345),
        |e| matches!(e, Error::BadDataOffset(0x1_2345)),
    ));
    c.push((
        "data offset past EOF",
        footers(dynm.clone(), |f| f.data_offset = 1 << 40),
        |e| matches!(e, Error::BadDataOffset(_)),
    ));
    c.push((
        "data offset all ones",
        footers(dynm.clone(), |f| f.data_offset = u64::MAX),
        |e| matches!(e, Error::BadDataOffset(u64::MAX)),
    ));
    let huge = footers(dynm.clone(), |f| {
        f.current_size = 2041 << 30;
        f.creator_app = *b"win ";
    });
    c.push(("size above 2040 GiB", huge, |e| {
        matches!(e, Error::SizeTooLarge(_))
    }));
    c.push((
        "size not sector aligned",
        footers(dynm.clone(), |f| f.current_size = SIZE - 1),
        |e| matches!(e, Error::SizeNotSectorAligned(_)),
    ));
    for t in [0, 1, 5, 6, 7] {
        c.push((
            "disk type",
            footers(dynm.clone(), move |f| f.disk_type = t),
            |e| matches!(e, Error::UnsupportedDiskType(_)),
        ));
    }
    c.push((
        "footer version",
        footers(dynm.clone(), |f| f.version = 0x0002_0000),
        |e| matches!(e, Error::UnsupportedFooterVersion(0x0002_0000)),
    ));
    c.push((
        "header data offset",
        header(dynm.clone(), |h| h.data_offset = 0xffff_ffff),
        |e| matches!(e, Error::BadHeaderDataOffset(0xffff_ffff)),
    ));
    c.push((
        "header version",
        header(dynm.clone(), |h| h.version = 0x0001_0001),
        |e| matches!(e, Error::UnsupportedHeaderVersion(_)),
    ));
    let mut disagree = dynm.clone();
    let mut f0 = Footer::parse(&disagree[..512]).unwrap();
    f0.current_size += 512 * 17;
    disagree[..512].copy_from_slice(&f0.encode());
    c.push(("footers disagree", disagree, |e| {
        matches!(e, Error::FootersDisagree)
    }));
    c.push(("empty file", Vec::new(), |e| {
        matches!(e, Error::Truncated { .. })
    }));
    c.push(("truncated to 2000 bytes", dynm[..2000].to_vec(), |e| {
        matches!(e, Error::Truncated { .. })
    }));
    c.push(("511-byte footer only", dynm[..511].to_vec(), |e| {
        matches!(e, Error::Truncated { .. })
    }));
    c.push(("truncated before BAT end", dynm[..1800].to_vec(), |e| {
        matches!(e, Error::Truncated { .. })
    }));
    c.push((
        "truncated mid-block",
        dynm[..len - (1 << 20)].to_vec(),
        |e| matches!(e, Error::BatEntryPastEof { .. }),
    ));
    let mut grown = fx.clone();
    grown.splice(fx.len() - 512..fx.len() - 512, [0u8; 512]);
    c.push(("fixed with extra data", grown, |e| {
        matches!(e, Error::FixedSizeMismatch { .. })
    }));
    c.push(("fixed truncated", fx[512..].to_vec(), |e| {
        matches!(e, Error::FixedSizeMismatch { .. })
    }));

    // Differencing locators (slot 0 is W2ru, slot 1 W2ku, data right after the BAT).
    let loc0 = header_of(&diff).locators[0];
    c.push((
        "locator past EOF",
        header(diff.clone(), |h| h.locators[0].data_offset = 1 << 30),
        |e| matches!(e, Error::BadLocator { index: 0 }),
    ));
    c.push((
        "locator misaligned",
        header(diff.clone(), |h| h.locators[1].data_offset += 3),
        |e| matches!(e, Error::BadLocator { index: 1 }),
    ));
    c.push((
        "locator over BAT",
        header(diff.clone(), |h| h.locators[0].data_offset = 1536),
        |e| matches!(e, Error::BadLocator { index: 0 }),
    ));
    c.push((
        "locator over header",
        header(diff.clone(), |h| h.locators[0].data_offset = 512),
        |e| matches!(e, Error::BadLocator { index: 0 }),
    ));
    c.push((
        "locators overlap",
        header(diff.clone(), move |h| {
            h.locators[1].data_offset = loc0.data_offset
        }),
        |e| matches!(e, Error::BadLocator { index: 1 }),
    ));
    c.push((
        "locator space neither sectors nor bytes",
        header(diff.clone(), |h| h.locators[0].data_space = 600),
        |e| matches!(e, Error::BadLocator { index: 0 }),
    ));
    c.push((
        "locator length above space",
        header(diff.clone(), |h| h.locators[0].data_length = 513),
        |e| matches!(e, Error::BadLocator { index: 0 }),
    ));
    c.push((
        "locator platform unknown",
        header(diff.clone(), |h| h.locators[2].code = 0x1234_5678),
        |e| {
            matches!(
                e,
                Error::UnknownLocatorCode {
                    index: 2,
                    code: 0x1234_5678
                }
            )
        },
    ));
    c
}

fn header_of(b: &[u8]) -> DynHeader {
    DynHeader::parse(b[512..1536].try_into().unwrap()).unwrap()
}

#[test]
fn every_malformed_case_is_refused_with_its_error() {
    let mut failures = Vec::new();
    for (name, bytes, check) in corpus() {
        let r = std::panic::catch_unwind(|| open(&bytes).map(|_| ()));
        match r {
            Err(_) => failures.push(format!("{name}: panicked")),
            Ok(Ok(())) => failures.push(format!("{name}: opened")),
            Ok(Err(e)) if !check(&e) => failures.push(format!("{name}: wrong error {e:?}")),
            Ok(Err(e)) => {
                // Every error renders to a message.
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn corpus_base_images_are_valid() {
    for b in [dynamic(), fixed(), differencing()] {
        let mut l = open(&b).unwrap();
        assert!(l.check().unwrap().is_clean());
    }
}

#[test]
fn repairable_damage_opens_and_is_reported() {
    let dynm = dynamic();
    let end = dynm.len() - 512;
    // End footer lost: the copy at 0 is used; the next allocation writes a new end footer.
    let b = poke(dynm.clone(), end, b"garbage!");
    let mut l = open(&b).unwrap();
    assert!(l.end_footer_bad());
    let r = l.check().unwrap();
    assert!(!r.is_clean() && r.findings.contains(&Finding::EndFooterInvalid));
    let mut v = Vhd::from_layers(vec![l]).unwrap();
    let mut buf = [0u8; 4];
    v.read_at(5 << 20, &mut buf).unwrap();
    assert_eq!(buf, [0xab; 4]);
    v.write_at(3 << 20, &[9; 100]).unwrap();
    v.flush().unwrap();
    let repaired = v.into_layers().pop().unwrap().into_inner().data;
    let mut l = open(&repaired).unwrap();
    assert!(!l.end_footer_bad());
    assert!(
        l.check()
            .unwrap()
            .findings
            .contains(&Finding::Leaked { bytes: 512 })
    );

    // Copy at 0 lost: the end footer is used.
    let b = poke(dynm.clone(), 10, &[0xee]);
    let mut l = open(&b).unwrap();
    assert!(
        l.check()
            .unwrap()
            .findings
            .contains(&Finding::HeadFooterInvalid)
    );

    // Reserved feature bit clear: tolerated, noted.
    let b = footers(dynm.clone(), |f| f.features = 0);
    let mut l = open(&b).unwrap();
    let r = l.check().unwrap();
    assert!(r.is_clean() && r.findings.contains(&Finding::FeaturesReservedClear));

    // Saved state: readable, never written.
    let b = footers(dynm.clone(), |f| f.saved_state = 1);
    let mut v = Vhd::from_layers(vec![open(&b).unwrap()]).unwrap();
    v.read_at(0, &mut buf).unwrap();
    assert!(matches!(v.write_at(0, &[1]), Err(Error::SavedState)));

    // Read-only opens refuse writes; out-of-range accesses are errors.
    let mut v = Vhd::open(MemDisk::new(dynm.clone()), OpenOptions::read_only()).unwrap();
    assert!(matches!(v.write_at(0, &[1]), Err(Error::ReadOnly)));
    let size = v.size();
    assert!(matches!(
        v.read_at(size - 3, &mut buf),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        v.read_at(u64::MAX - 1, &mut buf),
        Err(Error::OutOfRange { .. })
    ));

    // Stale data under clear bitmap bits of a differencing block: harmless, noted.
    let diff = differencing();
    let parent = Layer::open(MemDisk::new(dynamic()), OpenOptions::read_only()).unwrap();
    let child = open(&diff).unwrap();
    let mut v = Vhd::from_layers(vec![child, parent]).unwrap();
    v.write_at(0, &[1; 512]).unwrap();
    v.flush().unwrap();
    let mut layers = v.into_layers();
    layers.truncate(1);
    let mut img = layers.pop().unwrap().into_inner().data;
    let first = (header_of(&img).locators[1].data_offset + 512) as usize;
    img[first + 512 + 1024] = 0x77;
    let r = open(&img).unwrap().check().unwrap();
    assert!(
        r.is_clean()
            && r.findings.contains(&Finding::StaleSectors {
                block: 0,
                sectors: 1
            }),
        "{r:?}"
    );
}

/// Locator text problems show when the chain is resolved from files.
#[test]
fn bad_locator_text_is_refused() {
    let dir = Scratch::new("loctext");
    let parent = dir.path("parent.vhd");
    vhd::fs::create(
        &parent,
        vhd::DiskType::Dynamic,
        SIZE,
        &vhd::fs::create_options(),
    )
    .unwrap();
    let child = dir.path("child.vhd");
    vhd::fs::create_differencing(&child, &parent, None, &vhd::fs::create_options()).unwrap();
    let good = std::fs::read(&child).unwrap();
    let at = header_of(&good).locators[0].data_offset as usize;
    for (name, bytes) in [
        (
            "odd length",
            header(good.clone(), |h| h.locators[0].data_length = 3),
        ),
        (
            "unpaired surrogate",
            poke(good.clone(), at, &[0x00, 0xd8, b'x', 0]),
        ),
    ] {
        std::fs::write(&child, &bytes).unwrap();
        match vhd::fs::open(&child, OpenOptions::read_only()) {
            Err(e) => assert!(
                matches!(e.vhd_error(), Some(Error::BadLocatorText { index: 0 })),
                "{name}: {e}"
            ),
            Ok(_) => panic!("{name}: opened"),
        }
    }
}
