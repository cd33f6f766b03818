#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| abi_xen_fuzz::run(data));
