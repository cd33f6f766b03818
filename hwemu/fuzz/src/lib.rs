//! Fuzz bodies for the hardware-emulation face's devices, shared by the cargo-fuzz targets and
//! the stable, seeded tests below (`cargo test` in this directory).

mod nvme;

pub use nvme::run as nvme;

#[cfg(test)]
mod tests {
    use virt::testing::XorShift;

    /// Inputs from a seeded generator: mostly a Linux-like bring-up followed by random
    /// operations, some pure noise. With HWEMU_FUZZ_SEED_DIR set, they are also written there
    /// as the libFuzzer corpus's first seeds.
    #[test]
    fn seeded_nvme_scripts_never_panic() {
        let seed_dir = std::env::var_os("HWEMU_FUZZ_SEED_DIR").map(std::path::PathBuf::from);
        let mut rng = XorShift(0xd1b5_4a32_d192_ed03);
        for i in 0..1500 {
            let len = (rng.next_u64() % 1024) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if i % 4 != 0 && !data.is_empty() {
                data[0] |= 0x80;
            }
            super::nvme(&data);
            if let Some(dir) = &seed_dir
                && i % 15 == 0
            {
                std::fs::write(dir.join(format!("seed-{i:04}")), &data).unwrap();
            }
        }
    }

    #[test]
    fn empty_and_tiny_inputs() {
        super::nvme(&[]);
        for b in 0..=255u8 {
            super::nvme(&[b]);
            super::nvme(&[b; 80]);
        }
    }
}
