//! `cargo xtask vhd …`: the qemu-img-like VHD tool. Owned by the VHD work (issue 4).

use std::process::ExitCode;

/// Entry point for `cargo xtask vhd ARGS…`; returns the tool's exit code.
pub fn main(_args: &[String]) -> ExitCode {
    eprintln!("xtask vhd: not implemented yet");
    ExitCode::from(2)
}
