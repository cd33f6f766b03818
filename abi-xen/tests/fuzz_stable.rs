//! The cargo-fuzz body (`abi-xen/fuzz/src/lib.rs`) run on stable over inputs from a seeded
//! PRNG, so every `cargo test` drives dispatch with hostile scripts.
//! Set `ABI_XEN_FUZZ_SEED_DIR` to also write the inputs out as a cargo-fuzz corpus.

#[path = "../fuzz/src/lib.rs"]
mod body;

use virt::testing::XorShift;

#[test]
fn seeded_scripts_never_misbehave() {
    let seed_dir = std::env::var_os("ABI_XEN_FUZZ_SEED_DIR").map(std::path::PathBuf::from);
    let mut rng = XorShift(0x243f_6a88_85a3_08d3);
    for i in 0..4000 {
        let len = (rng.next_u64() % 1024) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Half the scripts get a console ring inside RAM and a sane TSC frequency.
        if i % 2 == 0
            && let Some(b) = data.first_mut()
        {
            *b = (*b & 0x0d) | 0x02 | (0x20 << 2) | 0x80;
        }
        if let Some(dir) = &seed_dir {
            std::fs::write(dir.join(format!("stable-{i:04}")), &data).expect("write seed");
        }
        body::run(&data);
    }
}

#[test]
fn empty_and_tiny_inputs() {
    body::run(&[]);
    for b in 0..=255u8 {
        body::run(&[b]);
        body::run(&[b, b, b]);
        body::run(&[b; 40]);
    }
}
