//! `cargo xtask pxe DIR`: a TFTP directory that a lab machine's iPXE (or QEMU's own) boots
//! Janus from, and the instructions to serve it. Files whose content is already there are
//! left alone, so a TFTP server can keep serving while a manifest changes.

use crate::disks::DiskSet;
use crate::emulator::qemu;
use crate::image::Images;
use crate::manifest::Staged;
use crate::util::shown;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The script iPXE is pointed at (QEMU's `bootfile=`, dnsmasq's second `pxe-service`).
pub const SCRIPT: &str = "boot.ipxe";
/// The names staged last time: stale ones are removed, and nothing else in DIR is touched.
const STAGED_LIST: &str = ".janus-pxe";
/// Written when the manifest has disks, which PXE cannot carry.
const DISKS_NOTE: &str = "disks.txt";
/// BIOS PXE ROMs chainload iPXE from this (Debian's `ipxe` package) before the script.
const UNDIONLY: &str = "/usr/lib/ipxe/undionly.kpxe";
const UNDIONLY_NAME: &str = "undionly.kpxe";
/// What the README's example serves.
const README_DIR: &str = "/srv/tftp/janus";
const README_MANIFEST: &str = "manifests/demo.toml";

enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Copied,
    Unchanged,
    Removed,
}

/// The iPXE script. iPXE passes each module's full URI as its string; the kernel names a
/// module by the basename of the string's first word, as it does under QEMU and GRUB.
pub fn boot_script(cmdline: &str, modules: &[String]) -> String {
    let mut s = String::from("#!ipxe\n");
    s.push_str("kernel janus-boot");
    if !cmdline.is_empty() {
        let _ = write!(s, " {cmdline}");
    }
    s.push('\n');
    s.push_str("module janus-kernel\n");
    for m in modules {
        let _ = writeln!(s, "module {m}");
    }
    s.push_str("boot\n");
    s
}

/// Each image file, in namespace order, and the GPT partition it needs on the lab machine.
fn disks_note(disks: &DiskSet) -> String {
    let mut s = String::from(
        "# PXE carries no disks. On the lab machine each image below goes into a GPT partition\n\
         # of the NVMe disk, named as the image file (write it with dd; leave room after it to\n\
         # grow). The manifest numbers them in this order.\n",
    );
    for (k, f) in disks.files.iter().enumerate() {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let len = std::fs::metadata(&f.path).map_or(0, |m| m.len());
        let _ = writeln!(
            s,
            "namespace {}: partition \"{name}\" <- {} ({len} bytes, {})",
            k + 1,
            shown(&f.path),
            if f.writable { "writable" } else { "read-only" }
        );
    }
    s
}

/// Stages the images, the manifest's modules and the script into `dir`.
pub fn stage(
    images: &Images,
    staged: &Staged,
    cmdline: &str,
    dir: &Path,
) -> Result<Vec<(String, Fate)>> {
    let names: Vec<String> = staged.modules.iter().map(|(_, n)| n.clone()).collect();
    let mut wanted = vec![
        ("janus-boot".to_string(), Source::File(images.boot.clone())),
        (
            "janus-kernel".to_string(),
            Source::File(images.kernel.clone()),
        ),
    ];
    for (file, name) in &staged.modules {
        wanted.push((name.clone(), Source::File(file.clone())));
    }
    wanted.push((
        SCRIPT.into(),
        Source::Bytes(boot_script(cmdline, &names).into_bytes()),
    ));
    if !staged.disks.files.is_empty() {
        wanted.push((
            DISKS_NOTE.into(),
            Source::Bytes(disks_note(&staged.disks).into_bytes()),
        ));
    }
    if Path::new(UNDIONLY).exists() {
        wanted.push((UNDIONLY_NAME.into(), Source::File(UNDIONLY.into())));
    }
    sync(dir, &wanted)
}

/// Makes `dir` hold `wanted`, writing only files whose content differs, and removes what an
/// earlier staging left that is no longer wanted.
fn sync(dir: &Path, wanted: &[(String, Source)]) -> Result<Vec<(String, Fate)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", shown(dir)))?;
    let mut fates = Vec::new();
    for (name, src) in wanted {
        let bytes = match src {
            Source::File(p) => {
                std::fs::read(p).with_context(|| format!("cannot read {}", shown(p)))?
            }
            Source::Bytes(b) => b.clone(),
        };
        let dst = dir.join(name);
        let same = std::fs::metadata(&dst).is_ok_and(|m| m.len() == bytes.len() as u64)
            && std::fs::read(&dst).is_ok_and(|old| old == bytes);
        if same {
            fates.push((name.clone(), Fate::Unchanged));
            continue;
        }
        // A TFTP server never serves half a file: the new one replaces the old in one step.
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, &bytes)
            .with_context(|| format!("cannot write {}", shown(&partial)))?;
        std::fs::rename(&partial, &dst)
            .with_context(|| format!("cannot replace {}", shown(&dst)))?;
        fates.push((name.clone(), Fate::Copied));
    }
    let list = dir.join(STAGED_LIST);
    let before = std::fs::read_to_string(&list).unwrap_or_default();
    for old in before.lines() {
        if !old.is_empty() && !old.contains('/') && !wanted.iter().any(|(n, _)| n == old) {
            match std::fs::remove_file(dir.join(old)) {
                Ok(()) => fates.push((old.to_string(), Fate::Removed)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {old}")),
            }
        }
    }
    let names: String = wanted.iter().map(|(n, _)| format!("{n}\n")).collect();
    std::fs::write(&list, names).with_context(|| format!("cannot write {}", shown(&list)))?;
    Ok(fates)
}

/// How to serve `dir` (an absolute path), what `cargo xtask pxe` prints after staging.
pub fn instructions(dir: &str, script: &str, memory_mib: u64, cpus: u8) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "Serve {dir} over TFTP. Its {SCRIPT}:\n");
    for l in script.lines() {
        let _ = writeln!(s, "    {l}");
    }
    let _ = write!(
        s,
        "\nOn a lab network whose DHCP server stays as it is, dnsmasq answers PXE clients as a\n\
         proxy DHCP server and serves the files. BIOS PXE ROMs get iPXE first ({UNDIONLY_NAME},\n\
         from Debian's `ipxe` package: staged when installed here), iPXE then gets {SCRIPT}.\n\
         /etc/dnsmasq.d/janus.conf, with the lab's subnet for 192.168.1.0:\n\n\
         \x20   port=0\n\
         \x20   log-dhcp\n\
         \x20   dhcp-range=192.168.1.0,proxy\n\
         \x20   enable-tftp\n\
         \x20   tftp-root={dir}\n\
         \x20   dhcp-match=set:ipxe,175\n\
         \x20   pxe-service=tag:!ipxe,x86PC,\"Janus (iPXE)\",{UNDIONLY_NAME}\n\
         \x20   pxe-service=tag:ipxe,x86PC,\"Janus\",{SCRIPT}\n\n\
         Under QEMU, through its own iPXE (COM1 on the terminal; exit status 33 is a pass, 35 a\n\
         failure):\n\n"
    );
    let mut args = qemu::machine_args(qemu::DEFAULT_ACCEL, memory_mib, cpus);
    args.extend(["-serial".to_string(), "stdio".to_string()]);
    args.extend(qemu::pxe_args(Path::new(dir))?);
    s.push_str(&wrap_command("qemu-system-x86_64", &args));
    Ok(s)
}

/// A command line as shell lines of at most 90 columns, each option with its value.
fn wrap_command(program: &str, args: &[String]) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        match it.peek() {
            Some(v) if a.starts_with('-') && !v.starts_with('-') => {
                words.push(format!("{a} {v}"));
                it.next();
            }
            _ => words.push(a.clone()),
        }
    }
    let mut out = String::new();
    let mut line = format!("    {program}");
    for w in words {
        if line.len() + 1 + w.len() + 2 > 90 {
            out.push_str(&line);
            out.push_str(" \\\n");
            line = format!("        {w}");
        } else {
            line.push(' ');
            line.push_str(&w);
        }
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The README's PXE example: what `cargo xtask pxe /srv/tftp/janus --manifest
/// manifests/demo.toml` prints after staging.
pub fn readme_section() -> Result<String> {
    let path = crate::util::root().join(README_MANIFEST);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", shown(&path)))?;
    let plan = crate::manifest::plan(&text)?;
    let script = boot_script("", &plan.modules);
    let body = instructions(
        README_DIR,
        &script,
        512 + plan.guest_memory_mib,
        2.max(plan.max_vcpus),
    )?;
    Ok(format!(
        "`cargo xtask pxe {README_DIR} --manifest {README_MANIFEST}` ends with:\n\n```text\n{body}```\n"
    ))
}

/// `cargo xtask pxe`: stages, reports each file, prints the instructions.
pub fn run(
    dir: &Path,
    images: &Images,
    staged: &Staged,
    cmdline: &str,
    memory_mib: u64,
    cpus: u8,
) -> Result<()> {
    let fates = stage(images, staged, cmdline, dir)?;
    let count = |f: Fate| fates.iter().filter(|(_, x)| *x == f).count();
    for (name, fate) in &fates {
        let what = match fate {
            Fate::Copied => "copied",
            Fate::Unchanged => "unchanged",
            Fate::Removed => "removed (no longer staged)",
        };
        println!("pxe: {name}: {what}");
    }
    println!(
        "pxe: {} copied, {} unchanged (compared by content), {} removed, in {}",
        count(Fate::Copied),
        count(Fate::Unchanged),
        count(Fate::Removed),
        shown(dir)
    );
    if !staged.disks.files.is_empty() {
        println!(
            "pxe: the manifest has disks, which PXE cannot carry: {DISKS_NOTE} says which \
             GPT partition each image needs on the lab machine"
        );
    }
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let names: Vec<String> = staged.modules.iter().map(|(_, n)| n.clone()).collect();
    println!();
    print!(
        "{}",
        instructions(
            &abs.display().to_string(),
            &boot_script(cmdline, &names),
            memory_mib,
            cpus
        )?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_the_modules_as_the_kernel_finds_them() {
        let s = boot_script(
            "janus.watch",
            &["vm0-kernel-probe".into(), "manifest.bin".into()],
        );
        assert_eq!(
            s,
            "#!ipxe\nkernel janus-boot janus.watch\nmodule janus-kernel\n\
             module vm0-kernel-probe\nmodule manifest.bin\nboot\n"
        );
        assert!(boot_script("", &[]).contains("kernel janus-boot\n"));
    }

    #[test]
    fn only_what_changed_is_staged_again() {
        let dir = std::env::temp_dir().join(format!("janus-xtask-pxe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("theirs"), b"not ours").unwrap();
        let bytes = |s: &str| Source::Bytes(s.as_bytes().to_vec());
        let fates = |w: &[(String, Source)]| -> Vec<(String, Fate)> { sync(&dir, w).unwrap() };
        let first = fates(&[("a".into(), bytes("1")), ("b".into(), bytes("2"))]);
        assert!(first.iter().all(|(_, f)| *f == Fate::Copied));
        let second = fates(&[("a".into(), bytes("1")), ("b".into(), bytes("3"))]);
        assert_eq!(
            second,
            [("a".into(), Fate::Unchanged), ("b".into(), Fate::Copied)]
        );
        assert_eq!(std::fs::read(dir.join("b")).unwrap(), b"3");
        let third = fates(&[("a".into(), bytes("1"))]);
        assert_eq!(
            third,
            [("a".into(), Fate::Unchanged), ("b".into(), Fate::Removed)]
        );
        assert!(!dir.join("b").exists());
        // What it did not stage is never its to remove.
        assert!(dir.join("theirs").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The README's PXE section is this generator's output, not a copy kept by hand.
    #[test]
    fn the_readme_shows_what_pxe_prints() {
        let readme = std::fs::read_to_string(crate::util::root().join("README.md")).unwrap();
        let section = readme_section().unwrap();
        assert!(
            readme.contains(&section),
            "README.md's PXE example is out of date; replace it with the output of \
             `cargo xtask pxe --readme`:\n{section}"
        );
    }
}
