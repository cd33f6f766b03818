//! The decoders and the page walker on arbitrary input: the cargo-fuzz bodies
//! (`virt/fuzz/src/`) run on stable over inputs from a seeded generator, so every `cargo test`
//! checks that whatever a guest puts at RIP or in its page tables is answered (or refused)
//! without panicking, and that what is answered stays inside what was given.
//! Set `VIRT_FUZZ_SEED_DIR` to also write the inputs out as cargo-fuzz corpora
//! (`decode/`, `walk/` below it).

#[path = "../fuzz/src/decode.rs"]
mod decode;
#[path = "../fuzz/src/walk.rs"]
mod walk;

use virt::testing::XorShift;

const ROUNDS: usize = 20_000;

fn save(target: &str, i: usize, data: &[u8]) {
    if let Some(dir) = std::env::var_os("VIRT_FUZZ_SEED_DIR") {
        let dir = std::path::PathBuf::from(dir).join(target);
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join(format!("stable-{i:05}")), data).expect("write seed");
    }
}

/// Up to `max` bytes biased towards prefixes and the opcodes the decoders know, so that they
/// get past the first byte often.
fn insn_bytes(rng: &mut XorShift, max: u64) -> Vec<u8> {
    let n = rng.next_u64() % (max + 1);
    (0..n)
        .map(|_| match rng.next_u64() % 8 {
            0 => [0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x3e][(rng.next_u64() % 6) as usize],
            1 => 0x0f,
            2 => 0x40 | (rng.next_u64() & 0xf) as u8,
            3 => [0x88, 0x89, 0x8a, 0x8b, 0xc6, 0xc7, 0xa1, 0xa3][(rng.next_u64() % 8) as usize],
            _ => rng.next_u64() as u8,
        })
        .collect()
}

#[test]
fn instruction_decoders_take_any_bytes() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for i in 0..ROUNDS {
        let mut data = vec![rng.next_u64() as u8];
        data.extend(insn_bytes(&mut rng, 24));
        if i % 40 == 0 {
            save("decode", i, &data);
        }
        decode::run(&data);
    }
    decode::run(&[]);
    decode::run(&[0]);
}

#[test]
fn the_page_walker_takes_any_tables() {
    let mut rng = XorShift(0x0bad_cafe_dead_beef);
    for i in 0..ROUNDS / 10 {
        let len = (rng.next_u64() % 1024) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if i % 4 == 0 {
            save("walk", i, &data);
        }
        walk::run(&data);
    }
    walk::run(&[]);
}
