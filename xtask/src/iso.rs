//! `cargo xtask iso`: a BIOS-bootable GRUB ISO (multiboot1) holding janus-boot, the kernel and
//! a staged manifest's modules — for Bochs, USB sticks and lab machines.

use crate::prereq;
use crate::util::shown;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes the ISO to `out`; `work` is emptied and used as the ISO tree.
pub fn make(
    boot: &Path,
    kernel: &Path,
    modules: &[(PathBuf, String)],
    cmdline: &str,
    work: &Path,
    out: &Path,
) -> Result<()> {
    prereq::tools(&[&prereq::GRUB_ISO, &prereq::XORRISO, &prereq::MFORMAT])?;
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("cannot empty {}", shown(work)))?;
    }
    let grub = work.join("boot").join("grub");
    std::fs::create_dir_all(&grub)?;
    let place = |src: &Path, name: &str| -> Result<()> {
        let dst = work.join("boot").join(name);
        std::fs::hard_link(src, &dst)
            .or_else(|_| std::fs::copy(src, &dst).map(|_| ()))
            .with_context(|| format!("cannot place {} in the ISO tree", shown(src)))
    };
    place(boot, "janus-boot")?;
    place(kernel, "janus-kernel")?;
    // GRUB passes only the words after the path as the module string, so the path is given
    // again: the kernel names modules by the basename of the string's first word.
    let mut cfg = String::from(
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
         set timeout=0\nset default=0\nmenuentry \"janus\" {\n",
    );
    let _ = writeln!(cfg, "  multiboot /boot/janus-boot {cmdline}");
    let _ = writeln!(cfg, "  module /boot/janus-kernel /boot/janus-kernel");
    for (src, name) in modules {
        place(src, name)?;
        let _ = writeln!(cfg, "  module /boot/{name} /boot/{name}");
    }
    cfg.push_str("  boot\n}\n");
    std::fs::write(grub.join("grub.cfg"), cfg)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut cmd = Command::new(prereq::GRUB_ISO.binary);
    cmd.arg("-o").arg(out).arg(work);
    let output = cmd.output().context("cannot start grub-mkrescue")?;
    if !output.status.success() {
        anyhow::bail!(
            "grub-mkrescue failed for {}: {}",
            shown(out),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
