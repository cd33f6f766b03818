#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vhd_fuzz::run(data));
