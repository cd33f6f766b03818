//! janus-boot: the multiboot1 loader. QEMU `-kernel`, GRUB and iPXE start it in 32-bit protected
//! mode; it enters long mode, loads the first module (the Janus kernel ELF) with hermit-entry and
//! jumps to it with a `RawBootInfo`. Every other module is left in place for the kernel.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod loader;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("janus-boot runs only on x86_64-unknown-none: build it with `cargo xtask build`");
    std::process::exit(2);
}
