//! The cargo-fuzz body (`abi-hyperv/fuzz/src/lib.rs`) run on stable over inputs from a seeded
//! PRNG, so every `cargo test` exercises MSR and hypercall dispatch with hostile scripts.
//! Set `ABI_HYPERV_FUZZ_SEED_DIR` to also write the inputs out as a cargo-fuzz corpus.

#[path = "../fuzz/src/lib.rs"]
mod body;

use virt::testing::XorShift;

#[test]
fn seeded_scripts_never_misbehave() {
    let seed_dir = std::env::var_os("ABI_HYPERV_FUZZ_SEED_DIR").map(std::path::PathBuf::from);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 {
        let len = (rng.next_u64() % 768) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // A third of the scripts start with hypercalls already enabled.
        if i % 3 == 0
            && let Some(b) = data.first_mut()
        {
            *b |= 0x80;
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
    }
}
