//! The boot manifest. Its types and encoding are the `manifest` crate's, shared with xtask;
//! the re-export keeps them at `crate::manifest` for the kernel.

pub use ::manifest::*;
