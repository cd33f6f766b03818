//! Images made by qemu-img/qemu-io read back exactly as QEMU reads them, and images made and
//! written by this library pass `qemu-img compare` against the same raw data.

mod common;

use common::{Rng, Scratch, first_diff, qemu, qemu_status, read_all, s};
use std::path::Path;
use vhd::{DiskType, OpenOptions};

const SIZES: &[&str] = &["1000000", "1M", "10M", "6291968", "100M"];

/// qemu-io commands that cover aligned, unaligned, block-crossing and tail writes.
fn qemu_writes(size: u64) -> Vec<String> {
    let mut cmds = vec![
        "write -P 0xab 0 4k".to_string(),
        "write -P 0xcd 1000 3000".to_string(),
    ];
    let cross = (2 << 20) - 700;
    if cross + 5000 <= size {
        cmds.push(format!("write -P 0x5e {cross} 5000"));
    }
    if size > (5 << 20) + 65536 {
        cmds.push("write -P 0x11 5M 64k".to_string());
    }
    cmds.push(format!("write -P 0x77 {} 512", size - 512));
    cmds
}

fn qemu_image(dir: &Scratch, sub: &str, force: bool, size: &str) -> std::path::PathBuf {
    let img = dir.path(&format!("{sub}-{size}-{force}.vhd"));
    let opts = format!(
        "subformat={sub},force_size={}",
        if force { "on" } else { "off" }
    );
    qemu(
        "qemu-img",
        &["create", "-q", "-f", "vpc", "-o", &opts, s(&img), size],
    );
    img
}

fn qemu_virtual_size(img: &Path, fmt: &str) -> u64 {
    let out = qemu("qemu-img", &["info", "-f", fmt, "--output", "json", s(img)]);
    // The top-level field: QEMU 10 also lists the protocol child's size (the file length).
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("qemu-img info --output json is JSON");
    info["virtual-size"]
        .as_u64()
        .expect("top-level virtual-size in qemu-img info")
}

#[test]
fn qemu_images_read_identically() {
    let dir = Scratch::new("qemu-read");
    for sub in ["fixed", "dynamic"] {
        for force in [false, true] {
            for size in SIZES {
                let img = qemu_image(&dir, sub, force, size);
                let vsize = qemu_virtual_size(&img, "vpc");
                let mut args = vec!["-f".to_string(), "vpc".into()];
                for c in qemu_writes(vsize) {
                    args.push("-c".into());
                    args.push(c);
                }
                args.push(s(&img).into());
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                qemu("qemu-io", &args);
                let raw = dir.path("out.raw");
                qemu(
                    "qemu-img",
                    &["convert", "-f", "vpc", "-O", "raw", s(&img), s(&raw)],
                );
                let want = std::fs::read(&raw).unwrap();
                let got = read_all(&img);
                assert_eq!(got.len() as u64, vsize, "{sub} {size} force={force}: size");
                assert_eq!(
                    first_diff(&got, &want),
                    None,
                    "{sub} {size} force={force}: content differs from qemu-img convert"
                );
                let mut v = vhd::fs::open_layer(&img, OpenOptions::read_only()).unwrap();
                assert!(v.check().unwrap().is_clean(), "{sub} {size} {force} check");
            }
        }
    }
}

/// Writes the same pseudo-random pattern through the library and into a raw file.
fn write_pattern(img: &Path, raw: &Path, seed: u64) {
    let mut v = vhd::fs::open(img, OpenOptions::read_write()).unwrap();
    let size = v.size();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(seed);
    for i in 0..40 {
        let len = match i % 4 {
            0 => 4096,
            1 => 1 + rng.below(9000) as usize,
            2 => 512 * (1 + rng.below(300) as usize),
            _ => 70_000,
        }
        .min(size as usize);
        let off = if i % 4 == 2 {
            rng.below((size - len as u64) / 512 + 1) * 512
        } else {
            rng.below(size - len as u64 + 1)
        };
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        v.write_at(off, &data).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
        if i % 10 == 9 {
            v.flush().unwrap();
        }
    }
    // The last sector and the first, which QEMU's size rounding makes easy to get wrong.
    v.write_at(size - 512, &[0x42; 512]).unwrap();
    model[size as usize - 512..].fill(0x42);
    v.flush().unwrap();
    std::fs::write(raw, &model).unwrap();
}

#[test]
fn janus_images_pass_qemu_compare() {
    let dir = Scratch::new("janus-write");
    for kind in [DiskType::Fixed, DiskType::Dynamic] {
        for force in [false, true] {
            for (i, size) in [1_000_000u64, 10 << 20, 6_291_968, 33 << 20]
                .into_iter()
                .enumerate()
            {
                let img = dir.path(&format!("{}-{size}-{force}.vhd", kind.name()));
                let mut opts = vhd::fs::create_options();
                opts.force_size = force;
                vhd::fs::create(&img, kind, size, &opts).unwrap();
                let raw = dir.path(&format!("{}-{size}-{force}.raw", kind.name()));
                write_pattern(&img, &raw, 7 + i as u64);
                let (rc, text) = qemu_status(
                    "qemu-img",
                    &["compare", "-f", "vpc", "-F", "raw", s(&img), s(&raw)],
                );
                assert_eq!(rc, 0, "{} {size} force={force}: {text}", kind.name());
                let v = vhd::fs::open(&img, OpenOptions::read_only()).unwrap();
                assert_eq!(qemu_virtual_size(&img, "vpc"), v.size());
                assert_eq!(std::fs::metadata(&raw).unwrap().len(), v.size());
                let (rc, text) = qemu_status("qemu-img", &["check", "-f", "vpc", s(&img)]);
                assert!(
                    rc == 0 || text.contains("not support"),
                    "qemu-img check: {text}"
                );
            }
        }
    }
}

/// Our empty images are QEMU's, byte for byte, apart from timestamp, UUID and checksums.
#[test]
fn creation_matches_qemu_layout() {
    let dir = Scratch::new("layout");
    for sub in ["fixed", "dynamic"] {
        for force in [false, true] {
            for size in ["1000000", "1M", "10M", "1G", "127G"] {
                if sub == "fixed" && size == "127G" {
                    continue;
                }
                let q = qemu_image(&dir, sub, force, size);
                let j = dir.path(&format!("j-{sub}-{size}-{force}.vhd"));
                let mut opts = vhd::fs::create_options();
                opts.force_size = force;
                let kind = if sub == "fixed" {
                    DiskType::Fixed
                } else {
                    DiskType::Dynamic
                };
                let bytes = qemu_size_arg(size);
                vhd::fs::create(&j, kind, bytes, &opts).unwrap();
                let (ql, jl) = (
                    std::fs::metadata(&q).unwrap().len(),
                    std::fs::metadata(&j).unwrap().len(),
                );
                assert_eq!(ql, jl, "{sub} {size} {force}: file length");
                let meta_len = if sub == "fixed" { 0 } else { ql - 512 };
                let (qb, jb) = (read_range(&q, 0, meta_len), read_range(&j, 0, meta_len));
                assert_eq!(
                    mask(&qb, sub),
                    mask(&jb, sub),
                    "{sub} {size} {force}: metadata"
                );
                let (qf, jf) = (read_range(&q, ql - 512, 512), read_range(&j, jl - 512, 512));
                assert_eq!(
                    mask(&qf, "fixed"),
                    mask(&jf, "fixed"),
                    "{sub} {size} {force}: footer"
                );
            }
        }
    }
}

fn qemu_size_arg(s: &str) -> u64 {
    let (n, mul) = match s.as_bytes()[s.len() - 1] {
        b'M' => (&s[..s.len() - 1], 1u64 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>().unwrap() * mul
}

fn read_range(p: &Path, off: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(p).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = vec![0u8; len as usize];
    f.read_exact(&mut b).unwrap();
    b
}

/// Blanks the fields that legitimately differ: timestamp, checksum, UUID (footers at 0 and
/// the end), and the header checksum.
fn mask(b: &[u8], sub: &str) -> Vec<u8> {
    let mut b = b.to_vec();
    if b.len() >= 512 {
        b[24..28].fill(0);
        b[64..84].fill(0);
    }
    if sub == "dynamic" && b.len() >= 1536 {
        b[512 + 36..512 + 40].fill(0);
    }
    b
}

/// QEMU can write into our images and we can write into QEMU's: both directions agree.
#[test]
fn cross_writes() {
    let dir = Scratch::new("cross");
    // QEMU writes into a Janus image.
    let j = dir.path("j.vhd");
    vhd::fs::create(&j, DiskType::Dynamic, 10 << 20, &vhd::fs::create_options()).unwrap();
    qemu(
        "qemu-io",
        &[
            "-f",
            "vpc",
            "-c",
            "write -P 0x3c 3M 100k",
            "-c",
            "write -P 0x99 777 1",
            s(&j),
        ],
    );
    let raw = dir.path("j.raw");
    qemu(
        "qemu-img",
        &["convert", "-f", "vpc", "-O", "raw", s(&j), s(&raw)],
    );
    assert_eq!(
        first_diff(&read_all(&j), &std::fs::read(&raw).unwrap()),
        None
    );

    // Janus writes into a QEMU image that QEMU already wrote.
    let q = qemu_image(&dir, "dynamic", false, "10M");
    qemu(
        "qemu-io",
        &["-f", "vpc", "-c", "write -P 0xee 1M 8k", s(&q)],
    );
    {
        let mut v = vhd::fs::open(&q, OpenOptions::read_write()).unwrap();
        v.write_at((1 << 20) + 100, &[1u8; 300]).unwrap();
        v.write_at(7 << 20, &[2u8; 5000]).unwrap();
        v.flush().unwrap();
    }
    let mut want = vec![0u8; qemu_virtual_size(&q, "vpc") as usize];
    want[1 << 20..(1 << 20) + 8192].fill(0xee);
    want[(1 << 20) + 100..(1 << 20) + 400].fill(1);
    want[7 << 20..(7 << 20) + 5000].fill(2);
    let raw = dir.path("q.raw");
    std::fs::write(&raw, &want).unwrap();
    let (rc, text) = qemu_status(
        "qemu-img",
        &["compare", "-f", "vpc", "-F", "raw", s(&q), s(&raw)],
    );
    assert_eq!(rc, 0, "{text}");
}
