#![no_main]

// The body is `kernel::vm::testing::exits`; its seeded stable run is the kernel unit test
// `vm::tests::arbitrary_exits_never_panic`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kernel::vm::testing::exits::run(data);
});
