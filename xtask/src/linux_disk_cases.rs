//! Linux on its disks: ext4 file systems made on the host (`mke2fs -d`, no root rights), turned
//! into VHDs by the project's converter (a dynamic image, and a differencing child over a
//! parent the manifest cannot write), mounted by label inside the guest through the face's own
//! disk driver (xen-blkfront on Xen, hv_storvsc over VMBus on Hyper-V). Afterwards each image
//! is read back (the dynamic one by QEMU's converter, the child by the project's reader, as
//! QEMU cannot follow chains) and checked with `e2fsck`, the file the guest wrote is compared
//! byte for byte, and the parent must be unchanged.
//!
//! And one disk on both faces: a dynamic VHD that Linux on the Hyper-V face writes, Linux on
//! the Xen face reads and writes, and the Hyper-V face reads again, one boot each
//! ([`setup_move`], [`verify_move`] after each boot); the host checks the image between boots.

use crate::util::out_dir;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file systems' labels: what the guest mounts (`janus.disk=`).
pub const LABEL: &str = "janus-data";
pub const CHILD_LABEL: &str = "janus-child";
/// The moving disk's file system (`janus.diskmove=`).
pub const MOVE_LABEL: &str = "janus-move";
const HELLO_BYTES: usize = 1 << 20;
/// What the guest writes: `janus-disk-line\n` over and over, cut at 4 MiB.
const NEW_BYTES: usize = 4 << 20;
const NEW_LINE: &[u8] = b"janus-disk-line\n";
/// What step 1 and step 2 of `janus.diskmove=` write: X.bin holds `janus-move-X\n` over and
/// over, cut at 1 MiB (init.sh's `move_data`).
const MOVE_BYTES: usize = 1 << 20;
/// The moving disk's image.
const MOVE_DISK: &str = "moving.vhd";

/// The guest face a case boots Debian's cloud kernel on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    Xen,
    Hyperv,
    /// Plain emulated hardware: the disks are NVMe controllers on PCI.
    Hardware,
}

impl Face {
    /// The personality, and init.sh's `janus.face=`.
    pub fn name(self) -> &'static str {
        match self {
            Face::Xen => "xen",
            Face::Hyperv => "hyperv",
            Face::Hardware => "none",
        }
    }

    /// The disk test's VM: its name, which also names its dynamic image (`<vm>.vhd`).
    pub fn disk_vm(self) -> &'static str {
        match self {
            Face::Xen => "xen-disk",
            Face::Hyperv => "hv-disk",
            Face::Hardware => "nvme-disk",
        }
    }

    /// (kernel under target/linux/, console): Xen boots the PVH vmlinux and talks on hvc0,
    /// Hyper-V boots the bzImage through the Linux boot protocol and talks on ttyS0 (as
    /// manifests/xen-linux.toml and hyperv-linux.toml).
    fn boot(self) -> (&'static str, &'static str) {
        match self {
            Face::Xen => ("vmlinux", "hvc0"),
            Face::Hyperv | Face::Hardware => ("bzImage", "ttyS0"),
        }
    }
}

/// The disk test's directory, one per face so that the two cases never share a file.
fn dir(face: Face) -> PathBuf {
    out_dir().join(format!("linux-disk-{}", face.name()))
}

fn move_dir() -> PathBuf {
    out_dir().join("linux-disk-moves")
}

/// A manifest of one VM, Debian's cloud kernel on `face` with init.sh's `words` on its
/// command line, and `disks` (files beside the manifest, two directories below the tree's
/// root as every directory of `out_dir()`).
fn manifest(case: &str, face: Face, vm: &str, words: &str, disks: &[&str]) -> String {
    let (kernel, console) = face.boot();
    let face = face.name();
    let mut m = format!(
        "# Made by `cargo xtask test` ({case}).\n\
         [[vm]]\nname = \"{vm}\"\npersonality = \"{face}\"\nmemory_mib = 256\nvcpus = 2\n\
         kernel = \"../../../target/linux/{kernel}\"\n\
         initrd = \"../../../target/linux/initramfs.cpio.gz\"\n\
         cmdline = \"console={console} janus.face={face} janus.vcpus=2 janus.clockwait=1 \
         {words} quiet panic=-1 nokaslr\"\n"
    );
    for d in disks {
        m.push_str(&format!("[[vm.disk]]\npath = \"{d}\"\n"));
    }
    m
}

/// e2fsprogs lives in /sbin, which a user's PATH often lacks.
pub fn e2fs(tool: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(tool))
}

pub fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn hello() -> Vec<u8> {
    (0..HELLO_BYTES)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect()
}

fn expected_new() -> Vec<u8> {
    NEW_LINE.iter().copied().cycle().take(NEW_BYTES).collect()
}

/// What `janus.diskmove=` writes into `<x>.bin`.
fn move_data(x: &str) -> Vec<u8> {
    format!("janus-move-{x}\n")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(MOVE_BYTES)
        .collect()
}

/// A 64 MiB ext4 file system labelled `label` holding hello.bin and its checksum, as raw.
pub fn make_fs(d: &Path, label: &str) -> Result<PathBuf> {
    let files = d.join(format!("files-{label}"));
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("hello.bin"), hello())?;
    let sum = run(
        Command::new("sha256sum")
            .arg("hello.bin")
            .current_dir(&files),
        "sha256sum",
    )?;
    std::fs::write(files.join("hello.sha256"), sum)?;
    let raw = d.join(format!("{label}.raw"));
    run(
        Command::new(e2fs("mke2fs"))
            .args(["-q", "-F", "-t", "ext4", "-L", label, "-d"])
            .arg(&files)
            .arg(&raw)
            .arg("64M"),
        "mke2fs",
    )?;
    Ok(raw)
}

pub fn raw_to_dynamic(raw: &Path, vhd: &Path) -> Result<()> {
    let mut src = crate::vhd_cli::image::Source::open(raw).map_err(anyhow::Error::msg)?;
    let size = src.size();
    crate::vhd_cli::image::write_vhd(&mut src, vhd, vhd::DiskType::Dynamic, size, true)
        .map_err(anyhow::Error::msg)?;
    std::fs::remove_file(raw)?;
    Ok(())
}

/// An empty directory `d` (whatever an earlier run left there is gone).
fn fresh_dir(d: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(d);
    std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))
}

/// The two images and the manifest of a VM on `face` (Debian's cloud kernel) with them: disk 0
/// a dynamic VHD, disk 1 a differencing VHD whose parent (another file system) stays
/// read-only. xvda and xvdb on Xen, sda and sdb on Hyper-V.
pub fn setup(face: Face) -> Result<()> {
    crate::prereq::tools(&[&crate::prereq::E2FSPROGS])?;
    let d = dir(face);
    fresh_dir(&d)?;
    let vm = face.disk_vm();
    let disk = format!("{vm}.vhd");
    raw_to_dynamic(&make_fs(&d, LABEL)?, &d.join(&disk))?;
    let parent = d.join("parent.vhd");
    raw_to_dynamic(&make_fs(&d, CHILD_LABEL)?, &parent)?;
    vhd::fs::create_differencing(
        &d.join("child.vhd"),
        &parent,
        None,
        &vhd::fs::create_options(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(d.join("parent.before"), std::fs::read(&parent)?)?;
    std::fs::write(
        d.join(format!("{vm}.toml")),
        manifest(
            &format!("qemu-svm-{}-linux-disk", face.name()),
            face,
            vm,
            &format!("janus.disk={LABEL},{CHILD_LABEL}"),
            &[&disk, "child.vhd"],
        ),
    )?;
    Ok(())
}

/// The plain-hardware disk case again, its kernel told `pci=nomsi`: the NVMe controllers
/// interrupt through INTx, the IOAPIC's level-triggered pins and the DSDT's `_PRT`.
pub fn setup_hardware_intx() -> Result<()> {
    setup(Face::Hardware)?;
    let d = dir(Face::Hardware);
    let vm = Face::Hardware.disk_vm();
    let m = std::fs::read_to_string(d.join(format!("{vm}.toml")))?;
    std::fs::write(
        d.join("nvme-intx.toml"),
        m.replace("janus.disk=", "pci=nomsi janus.disk="),
    )?;
    Ok(())
}

/// `name` in the ext4 file system in `raw`, read by debugfs; `None` when there is no such file.
fn dump(raw: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let out = raw.with_extension(name);
    let _ = std::fs::remove_file(&out);
    let done = Command::new(e2fs("debugfs"))
        .arg("-R")
        .arg(format!("dump /{name} {}", out.display()))
        .arg(raw)
        .output()
        .context("cannot run debugfs")?;
    let stderr = String::from_utf8_lossy(&done.stderr);
    if !done.status.success() {
        bail!("debugfs dump /{name} failed: {}", stderr.trim());
    }
    match std::fs::read(&out) {
        Ok(bytes) => {
            std::fs::remove_file(&out)?;
            Ok(Some(bytes))
        }
        Err(_) if stderr.contains("File not found") => Ok(None),
        Err(e) => bail!("debugfs dump /{name}: {e} ({})", stderr.trim()),
    }
}

/// e2fsck finds the file system in `raw` clean, and each of `files` is there holding what it
/// must, byte for byte, or (`None`) is not there at all. Removes `raw`.
fn check_fs(raw: &Path, what: &str, files: &[(&str, Option<Vec<u8>>)]) -> Result<()> {
    run(
        Command::new(e2fs("e2fsck")).arg("-fn").arg(raw),
        &format!("e2fsck -fn ({what})"),
    )?;
    for (name, want) in files {
        match (dump(raw, name)?, want) {
            (None, None) => {}
            (Some(_), None) => bail!("{what}: {name} is on the disk, but no step wrote it yet"),
            (None, Some(_)) => bail!("{what}: {name} is not on the disk after the run"),
            (Some(got), Some(want)) if got != *want => {
                let at = got.iter().zip(want).position(|(a, b)| a != b);
                bail!(
                    "{what}: {name} differs from what was written ({} bytes, want {}; first difference at {:?})",
                    got.len(),
                    want.len(),
                    at
                );
            }
            (Some(_), Some(_)) => {}
        }
    }
    std::fs::remove_file(raw)?;
    Ok(())
}

/// `vhd` as raw at `raw`, read by QEMU's converter (`-f vpc`, a reader that is not ours).
fn qemu_img_raw(vhd: &Path, raw: &Path) -> Result<()> {
    let _ = std::fs::remove_file(raw);
    run(
        Command::new(crate::prereq::QEMU_IMG.binary)
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(vhd)
            .arg(raw),
        "qemu-img convert",
    )?;
    Ok(())
}

/// `vhd` (with its parents) as raw at `raw`, read by the project's own reader.
fn own_raw(vhd: &Path, raw: &Path) -> Result<()> {
    let _ = std::fs::remove_file(raw);
    let mut src = crate::vhd_cli::image::Source::open(vhd).map_err(anyhow::Error::msg)?;
    crate::vhd_cli::image::write_raw(&mut src, raw).map_err(anyhow::Error::msg)
}

/// After the run: the dynamic image through QEMU's converter, the child through the project's
/// reader; both file systems clean and holding the guest's file; the parent unchanged.
pub fn verify(face: Face) -> Result<()> {
    let d = dir(face);
    let disk = format!("{}.vhd", face.disk_vm());
    let files = [
        ("new.bin", Some(expected_new())),
        ("hello.bin", Some(hello())),
    ];
    let raw = d.join("after-dynamic.raw");
    qemu_img_raw(&d.join(&disk), &raw)?;
    check_fs(&raw, &disk, &files)?;
    let raw = d.join("after-child.raw");
    own_raw(&d.join("child.vhd"), &raw)?;
    check_fs(&raw, "child.vhd", &files)?;
    if std::fs::read(d.join("parent.vhd"))? != std::fs::read(d.join("parent.before"))? {
        bail!("parent.vhd changed: a read-only parent was written");
    }
    Ok(())
}

/// The faces the moving disk is booted on, in order: boot `n` (from 1) is `MOVE_FACES[n - 1]`
/// with `janus.diskmove=janus-move:n`.
pub const MOVE_FACES: [Face; 4] = [Face::Hyperv, Face::Xen, Face::Hyperv, Face::Hardware];

/// The moving disk's VM on `face`.
pub fn move_vm(face: Face) -> &'static str {
    match face {
        Face::Xen => "xen-move",
        Face::Hyperv => "hv-move",
        Face::Hardware => "nvme-move",
    }
}

/// One dynamic VHD and a manifest per boot (`<n>-<face>.toml`), each with that one disk.
pub fn setup_move() -> Result<()> {
    crate::prereq::tools(&[&crate::prereq::E2FSPROGS])?;
    let d = move_dir();
    fresh_dir(&d)?;
    raw_to_dynamic(&make_fs(&d, MOVE_LABEL)?, &d.join(MOVE_DISK))?;
    for (i, face) in MOVE_FACES.iter().enumerate() {
        let step = i + 1;
        std::fs::write(
            d.join(format!("{step}-{}.toml", face.name())),
            manifest(
                "qemu-svm-linux-disk-moves-between-faces",
                *face,
                move_vm(*face),
                &format!("janus.diskmove={MOVE_LABEL}:{step}"),
                &[MOVE_DISK],
            ),
        )?;
    }
    Ok(())
}

/// After boot `step`: the image is a sound VHD by the project's checker, QEMU's converter
/// and the project's reader read the same disk from it, whose file system e2fsck finds clean,
/// holding what the steps so far wrote (a.bin from step 1, b.bin from step 2) and nothing
/// more, and hello.bin as it was made. Steps 3 (Hyper-V) and 4 (plain hardware, NVMe) only
/// read.
pub fn verify_move(step: u8) -> Result<()> {
    let d = move_dir();
    let vhd = d.join(MOVE_DISK);
    let what = format!("{MOVE_DISK} after boot {step}");
    let (mut image, _) = vhd::fs::open_with_paths(&vhd, vhd::OpenOptions::read_only())
        .map_err(|e| anyhow::anyhow!("{what}: the project's reader cannot open it: {e}"))?;
    for layer in image.layers_mut() {
        let report = layer.check().map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        if !report.is_clean() {
            bail!("{what}: the image is damaged ({:?})", report.findings);
        }
    }
    drop(image);
    let raw = d.join(format!("after-{step}.raw"));
    let own = d.join(format!("after-{step}-own.raw"));
    qemu_img_raw(&vhd, &raw)?;
    own_raw(&vhd, &own)?;
    let same = std::fs::read(&raw)? == std::fs::read(&own)?;
    std::fs::remove_file(&own)?;
    if !same {
        bail!("{what}: QEMU's converter and the project's reader read different disks");
    }
    let since = |first: u8, x: &str| (step >= first).then(|| move_data(x));
    check_fs(
        &raw,
        &what,
        &[
            ("hello.bin", Some(hello())),
            ("a.bin", since(1, "a")),
            ("b.bin", since(2, "b")),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moving_disks_data_is_what_init_writes() {
        // init.sh: yes "janus-move-$1" | head -c 1048576
        let a = move_data("a");
        assert_eq!(a.len(), 1 << 20);
        assert!(a.starts_with(b"janus-move-a\njanus-move-a\n"));
        assert!(
            include_str!("linux_guest/init.sh").contains("yes \"janus-move-$1\" | head -c 1048576")
        );
        assert_ne!(a, move_data("b"));
    }

    /// The host's file checks: present with the right bytes, or absent; anything else fails.
    #[test]
    fn the_host_check_wants_each_file_as_the_steps_left_it() {
        if !e2fs("mke2fs").is_file() || !e2fs("debugfs").is_file() {
            eprintln!("no e2fsprogs on this host: not checked");
            return;
        }
        let d = std::env::temp_dir().join(format!("janus-check-fs-{}", std::process::id()));
        fresh_dir(&d).unwrap();
        let files = d.join("files");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("a.bin"), move_data("a")).unwrap();
        let made = d.join("made.raw");
        run(
            Command::new(e2fs("mke2fs"))
                .args(["-q", "-F", "-t", "ext4", "-L", "t", "-d"])
                .arg(&files)
                .arg(&made)
                .arg("8M"),
            "mke2fs",
        )
        .unwrap();
        let check = |want: &[(&str, Option<Vec<u8>>)]| {
            let raw = d.join("check.raw");
            std::fs::copy(&made, &raw).unwrap();
            check_fs(&raw, "t", want).map_err(|e| e.to_string())
        };
        assert_eq!(
            check(&[("a.bin", Some(move_data("a"))), ("b.bin", None)]),
            Ok(())
        );
        let e = check(&[("b.bin", Some(move_data("b")))]).unwrap_err();
        assert!(e.contains("b.bin is not on the disk"), "{e}");
        let e = check(&[("a.bin", None)]).unwrap_err();
        assert!(
            e.contains("a.bin is on the disk, but no step wrote it"),
            "{e}"
        );
        let e = check(&[("a.bin", Some(move_data("b")))]).unwrap_err();
        assert!(e.contains("a.bin differs"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn each_face_boots_its_own_kernel_and_console() {
        let x = manifest(
            "c",
            Face::Xen,
            "xen-disk",
            "janus.disk=l",
            &["a.vhd", "b.vhd"],
        );
        assert!(x.contains("personality = \"xen\""));
        assert!(x.contains("target/linux/vmlinux\""));
        assert!(x.contains("console=hvc0 janus.face=xen "));
        assert_eq!(x.matches("[[vm.disk]]").count(), 2);
        let h = manifest(
            "c",
            Face::Hyperv,
            "hv-move",
            "janus.diskmove=l:1",
            &["m.vhd"],
        );
        assert!(h.contains("name = \"hv-move\""));
        assert!(h.contains("personality = \"hyperv\""));
        assert!(h.contains("target/linux/bzImage\""));
        assert!(h.contains("console=ttyS0 janus.face=hyperv "));
        assert!(h.contains(" janus.diskmove=l:1 "));
        // Each parses as a manifest.
        for m in [x, h] {
            crate::manifest::plan(&m).unwrap();
        }
    }
}
