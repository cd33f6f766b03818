#![no_main]

// The body is `kernel::vm::testing::devices`; its seeded stable run is the kernel unit test
// `vm::device_fuzz::the_devices_take_any_access_sequence`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kernel::vm::testing::devices::run(data);
});
