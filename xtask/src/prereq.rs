//! Installs what a fresh Debian machine with only Rust lacks, or says exactly what is missing.

use crate::util::{have, run};
use anyhow::{Result, bail};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

pub const TARGET: &str = "x86_64-unknown-none";

/// A host tool and the Debian packages that provide it.
pub struct Tool {
    pub binary: &'static str,
    pub packages: &'static [&'static str],
}

pub const QEMU: Tool = Tool {
    binary: "qemu-system-x86_64",
    packages: &["qemu-system-x86"],
};
pub const QEMU_IMG: Tool = Tool {
    binary: "qemu-img",
    packages: &["qemu-utils"],
};
pub const BOCHS: Tool = Tool {
    binary: "bochs",
    packages: &["bochs", "bochsbios", "vgabios", "bochs-term"],
};
pub const GRUB_ISO: Tool = Tool {
    binary: "grub-mkrescue",
    packages: &["grub-pc-bin", "grub-common", "xorriso", "mtools"],
};
pub const XORRISO: Tool = Tool {
    binary: "xorriso",
    packages: &["xorriso"],
};
pub const MFORMAT: Tool = Tool {
    binary: "mformat",
    packages: &["mtools"],
};
/// For xz payloads with a branch filter (Debian's generic kernel), which lzma-rs lacks.
pub const XZ: Tool = Tool {
    binary: "xz",
    packages: &["xz-utils"],
};
/// `mke2fs -d` and `e2fsck`/`debugfs` for the file systems of the Linux disk cases.
pub const E2FSPROGS: Tool = Tool {
    // By path: /usr/sbin is often not on a user's PATH.
    binary: "/usr/sbin/e2fsck",
    packages: &["e2fsprogs"],
};
/// Debian systems from Debian's packages (`cargo xtask image debian`).
pub const MMDEBSTRAP: Tool = Tool {
    binary: "mmdebstrap",
    packages: &["mmdebstrap"],
};
/// For zstd-compressed initramfs images (Debian's default where zstd is installed).
pub const ZSTD: Tool = Tool {
    binary: "zstd",
    packages: &["zstd"],
};
pub const OBJCOPY: Tool = Tool {
    binary: "objcopy",
    packages: &["binutils"],
};

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

pub fn rust_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match out {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("xtask: installing the {TARGET} Rust target");
            run(Command::new("rustup").args(["target", "add", TARGET]))
        }
        Err(_) => {
            bail!("rustup is not installed: add the Rust target with `rustup target add {TARGET}`")
        }
    }
}

pub fn tools(tools: &[&Tool]) -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    for t in tools {
        if !have(t.binary) || (t.binary == "grub-mkrescue" && !grub_pc_present()) {
            missing.extend(t.packages);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    missing.dedup();
    if !is_root() {
        bail!(
            "missing host tools; install them with: sudo apt-get install {}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    if !APT_UPDATED.swap(true, Ordering::Relaxed) {
        let _ = run(Command::new("apt-get").args(["update", "-q"]));
    }
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing);
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut cmd)
}

/// grub-mkrescue exists without the BIOS platform files when only grub-efi is installed.
fn grub_pc_present() -> bool {
    std::path::Path::new("/usr/lib/grub/i386-pc/modinfo.sh").exists()
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
