//! The VMBus fuzz body (`abi-hyperv/fuzz/src/vmbus.rs`) run on stable over inputs from a
//! seeded PRNG, so every `cargo test` drives the VMBus host and storvsc with hostile messages,
//! packets, SRBs and ring indices.

#[path = "../fuzz/src/vmbus.rs"]
mod body;

use virt::testing::XorShift;

#[test]
fn seeded_vmbus_traffic_never_misbehaves() {
    let mut rng = XorShift(0x6a09_e667_f3bc_c908);
    for i in 0..600 {
        let len = (rng.next_u64() % 2048) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Most scripts start from an open, initialized channel.
        if let Some(b) = data.first_mut()
            && i % 4 != 0
        {
            *b |= 3;
        }
        body::run(&data);
    }
}

#[test]
fn empty_and_tiny_inputs() {
    body::run(&[]);
    for b in 0..=255u8 {
        body::run(&[b]);
        body::run(&[b, b, b, b]);
    }
}
