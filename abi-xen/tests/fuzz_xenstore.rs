//! The xenstore fuzz body (`abi-xen/fuzz/src/xenstore.rs`) run on stable over inputs from a
//! seeded PRNG, so every `cargo test` drives the store with hostile ring traffic.

#[path = "../fuzz/src/xenstore.rs"]
mod body;

use virt::testing::XorShift;

#[test]
fn seeded_ring_traffic_never_panics() {
    let mut rng = XorShift(0x1319_8a2e_0370_7344);
    for _ in 0..1500 {
        let len = (rng.next_u64() % 2048) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        body::run(&data);
    }
}

#[test]
fn empty_and_tiny_inputs() {
    body::run(&[]);
    for b in 0..=255u8 {
        body::run(&[b]);
        body::run(&[b; 40]);
    }
}
