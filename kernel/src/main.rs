#![cfg_attr(target_os = "none", no_std, no_main)]
#[cfg(not(target_os = "none"))]
fn main() { eprintln!("janus-kernel runs only on x86_64-unknown-none: use cargo xtask build"); std::process::exit(2); }
