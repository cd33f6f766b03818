//! The cargo-fuzz body (fuzz/src/lib.rs) on stable: valid seed images plus seeded random and
//! structured mutations (fields rewritten with their checksums refreshed, so mutations get
//! past the checksum and reach the deeper checks). Deterministic and time-bounded, so CI
//! covers the fuzz target without nightly. VHD_FUZZ_ITERS changes the count;
//! VHD_FUZZ_SEED_DIR writes the seeds there for cargo-fuzz.

#[path = "../../fuzz/src/lib.rs"]
mod body;
mod common;

use common::Rng;
use vhd::{CreateOptions, Layer, MemDisk, OpenOptions, Vhd};

fn small(block: u32, size: u64, uuid: u8) -> CreateOptions {
    let mut o = CreateOptions::new(1, [uuid; 16]);
    o.block_size = block;
    o.force_size = true;
    let _ = size;
    o
}

/// Small valid images of every kind, each under 64 KiB.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (block, size) in [(4096u32, 64u64 << 10), (512, 16 << 10), (8192, 40_000)] {
        let mut d = MemDisk::default();
        vhd::create_dynamic(&mut d, size, &small(block, size, 1)).unwrap();
        out.push(d.data.clone());
        let mut v = Vhd::open(d, OpenOptions::read_write()).unwrap();
        v.write_at(100, &[0xab; 3000]).unwrap();
        v.write_at(size / 2, &[0xcd; 700]).unwrap();
        v.flush().unwrap();
        let written = v.into_layers().pop().unwrap().into_inner();
        out.push(written.data.clone());
        let parent = Layer::open(written, OpenOptions::read_only()).unwrap();
        let link = vhd::ParentLink {
            relative: Some(".\\p.vhd"),
            absolute: Some("C:\\p.vhd"),
            ..vhd::link_from(&parent, 0, "p.vhd")
        };
        let mut c = MemDisk::default();
        vhd::create_differencing(&mut c, &link, &small(block, size, 2)).unwrap();
        out.push(c.data.clone());
        let mut v = Vhd::from_layers(vec![
            Layer::open(c, OpenOptions::read_write()).unwrap(),
            parent,
        ])
        .unwrap();
        v.write_at(7, &[1; 1000]).unwrap();
        v.flush().unwrap();
        out.push(v.into_layers().swap_remove(0).into_inner().data);
    }
    let mut f = MemDisk::default();
    vhd::create_fixed(&mut f, 32 << 10, &small(4096, 0, 3)).unwrap();
    out.push(f.data);
    out
}

const FOOTER_FIELDS: &[(usize, usize)] = &[
    (8, 4),
    (12, 4),
    (16, 8),
    (28, 4),
    (40, 8),
    (48, 8),
    (56, 2),
    (58, 1),
    (59, 1),
    (60, 4),
    (84, 1),
];
const HEADER_FIELDS: &[(usize, usize)] = &[
    (8, 8),
    (16, 8),
    (24, 4),
    (28, 4),
    (32, 4),
    (40, 16),
    (576, 4),
    (580, 4),
    (584, 4),
    (592, 8),
    (600, 4),
    (604, 4),
    (608, 4),
    (616, 8),
];

fn value(rng: &mut Rng, b: &[u8]) -> u64 {
    let len = b.len() as u64;
    match rng.below(10) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::from(u32::MAX),
        3 => len,
        4 => len.saturating_sub(512),
        5 => 512 * rng.below(len / 512 + 2),
        6 => 1 << rng.below(40),
        7 => rng.below(len + 1024) / 512,
        _ => rng.next(),
    }
}

fn put(b: &mut [u8], off: usize, width: usize, v: u64) {
    if off + width > b.len() {
        return;
    }
    // Fields wider than 8 bytes (UUIDs) repeat the value.
    for (i, byte) in b[off..off + width].iter_mut().rev().enumerate() {
        *byte = v.to_le_bytes()[i % 8];
    }
}

/// Recomputes the checksum of a footer at `at` (and of the header) if present.
fn refresh(b: &mut [u8]) {
    fn sum(b: &mut [u8], field: usize) {
        b[field..field + 4].fill(0);
        let s = !b.iter().fold(0u32, |a, &x| a.wrapping_add(u32::from(x)));
        b[field..field + 4].copy_from_slice(&s.to_be_bytes());
    }
    let len = b.len();
    if len >= 512 {
        sum(&mut b[len - 512..], 64);
        sum(&mut b[..512], 64);
    }
    if len >= 1536 && &b[512..520] == b"cxsparse" {
        sum(&mut b[512..1536], 36);
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = b.len();
        match rng.below(6) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(len as u64) as usize;
                    b[i] ^= 1 << rng.below(8);
                }
            }
            1 | 2 => {
                let (off, w) = FOOTER_FIELDS[rng.below(FOOTER_FIELDS.len() as u64) as usize];
                let v = value(rng, &b);
                if len >= 512 {
                    put(&mut b, len - 512 + off, w, v);
                }
                put(&mut b, off, w, v);
                refresh(&mut b);
            }
            3 => {
                let (off, w) = HEADER_FIELDS[rng.below(HEADER_FIELDS.len() as u64) as usize];
                let v = value(rng, &b);
                put(&mut b, 512 + off, w, v);
                refresh(&mut b);
            }
            4 => {
                // A BAT entry (the table sits at 1536 in these seeds).
                let i = 1536 + 4 * rng.below(16) as usize;
                let v = value(rng, &b);
                put(&mut b, i, 4, v);
            }
            _ => {
                let n = rng.below(len as u64 + 1) as usize;
                if rng.below(2) == 0 {
                    b.truncate(n);
                } else {
                    b.resize(len + n % 4096, 0);
                }
                if rng.below(2) == 0 {
                    refresh(&mut b);
                }
            }
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

#[test]
fn fuzz_body_on_seeds_and_mutations() {
    let seeds = seeds();
    if let Ok(dir) = std::env::var("VHD_FUZZ_SEED_DIR") {
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}.vhd")), s).unwrap();
        }
    }
    for s in &seeds {
        assert!(s.len() <= 65536);
        body::run(s);
    }
    let iters: u64 = std::env::var("VHD_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(0x5eed);
    let mut opened = 0;
    for i in 0..iters {
        let seed = &seeds[(i % seeds.len() as u64) as usize];
        let input = mutate(&mut rng, seed);
        if Layer::open(MemDisk::new(input.clone()), OpenOptions::read_only()).is_ok() {
            opened += 1;
        }
        let r = std::panic::catch_unwind(|| body::run(&input));
        if r.is_err() {
            let path = std::env::temp_dir().join(format!("vhd-fuzz-crash-{i}.vhd"));
            std::fs::write(&path, &input).unwrap();
            panic!(
                "fuzz body panicked on iteration {i}; input saved to {}",
                path.display()
            );
        }
    }
    // The mutations must reach past open often enough to exercise read and write.
    assert!(
        opened * 10 > iters,
        "only {opened} of {iters} mutated images opened"
    );
    // And pure noise must not open.
    let mut noise = vec![0u8; 4096];
    rng.fill(&mut noise);
    body::run(&noise);
}
