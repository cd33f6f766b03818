//! The blkif fuzz body (`abi-xen/fuzz/src/blkif.rs`) run on stable over inputs from a seeded
//! PRNG, so every `cargo test` drives the ring server with hostile requests and indices.

#[path = "../fuzz/src/blkif.rs"]
mod body;

use virt::testing::XorShift;

#[test]
fn seeded_ring_traffic_never_panics() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..1500 {
        let len = (rng.next_u64() % 1024) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        body::run(&data);
    }
}

#[test]
fn empty_and_tiny_inputs() {
    body::run(&[]);
    for b in 0..=255u8 {
        body::run(&[b]);
        body::run(&[b; 60]);
    }
}
