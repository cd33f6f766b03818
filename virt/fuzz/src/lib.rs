//! The fuzz bodies of the `virt` decoders and page walker, shared by the cargo-fuzz targets
//! and the stable, seeded test `virt/tests/arbitrary_input.rs`.

pub mod decode;
pub mod walk;
