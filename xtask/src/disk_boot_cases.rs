//! VMs that boot from their disk: ext4 file systems made on the host holding Debian's cloud
//! kernel and the test initramfs the way a Debian system holds them (`/boot/vmlinuz-<release>`
//! and `/boot/initrd.img-<release>`, with the `/vmlinuz` and `/initrd.img` links), in dynamic
//! VHDs, one per face; and disks the hypervisor must refuse to boot, each with a message that
//! names the disk and what was missing, while a neighbour boots.

use crate::linux_disk_cases::{e2fs, raw_to_dynamic, run};
use crate::util::out_dir;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

const RELEASE: &str = "6.1.0-cloud-amd64";

fn dir() -> PathBuf {
    out_dir().join("disk-boot")
}

/// An ext4 file system of `files` (name, bytes) and `links` (name, target), labelled `label`.
fn make(d: &Path, name: &str, files: &[(&str, Vec<u8>)], links: &[(&str, &str)]) -> Result<()> {
    let tree = d.join(format!("tree-{name}"));
    let _ = std::fs::remove_dir_all(&tree);
    for (path, bytes) in files {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(&tree))?;
        std::fs::write(&p, bytes)?;
    }
    for (path, target) in links {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(&tree))?;
        std::os::unix::fs::symlink(target, &p)?;
    }
    std::fs::create_dir_all(&tree)?;
    let raw = d.join(format!("{name}.raw"));
    run(
        Command::new(e2fs("mke2fs"))
            .args(["-q", "-F", "-t", "ext4", "-L", name, "-d"])
            .arg(&tree)
            .arg(&raw)
            .arg("48M"),
        "mke2fs",
    )?;
    raw_to_dynamic(&raw, &d.join(format!("{name}.vhd")))?;
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

fn debian_system() -> Result<Vec<(&'static str, Vec<u8>)>> {
    let root = crate::util::root().join("target/linux");
    Ok(vec![
        (
            Box::leak(format!("boot/vmlinuz-{RELEASE}").into_boxed_str()),
            std::fs::read(root.join("bzImage"))?,
        ),
        (
            Box::leak(format!("boot/initrd.img-{RELEASE}").into_boxed_str()),
            std::fs::read(root.join("initramfs.cpio.gz"))?,
        ),
    ])
}

/// Two Debian-like disks (one per face) and the manifest of two VMs without `kernel`.
pub fn setup() -> Result<()> {
    crate::prereq::tools(&[&crate::prereq::E2FSPROGS])?;
    crate::linux_guest::prepare()?;
    let d = dir();
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    let files = debian_system()?;
    let vmlinuz = format!("boot/vmlinuz-{RELEASE}");
    let initrd = format!("boot/initrd.img-{RELEASE}");
    for name in ["xen-root", "hv-root"] {
        make(
            &d,
            name,
            &files,
            &[("vmlinuz", &vmlinuz), ("initrd.img", &initrd)],
        )?;
    }
    std::fs::write(
        d.join("from-disk.toml"),
        "# Made by `cargo xtask test` (qemu-svm-linux-boots-from-its-disk): no `kernel`, so each\n\
         # VM boots what its first disk holds.\n\
         [[vm]]\nname = \"xen-disk-boot\"\npersonality = \"xen\"\nmemory_mib = 256\nvcpus = 2\n\
         cmdline = \"janus.face=xen janus.vcpus=2 janus.clockwait=1 quiet panic=-1 nokaslr\"\n\
         [[vm.disk]]\npath = \"xen-root.vhd\"\n\
         [[vm]]\nname = \"hv-disk-boot\"\npersonality = \"hyperv\"\nmemory_mib = 256\nvcpus = 2\n\
         cmdline = \"janus.face=hyperv janus.vcpus=2 quiet panic=-1 nokaslr\"\n\
         [[vm.disk]]\npath = \"hv-root.vhd\"\n",
    )?;
    Ok(())
}

/// Disks with nothing bootable, and the probe as the neighbour that boots regardless.
pub fn setup_bad() -> Result<()> {
    crate::prereq::tools(&[&crate::prereq::E2FSPROGS])?;
    crate::linux_guest::prepare()?;
    let d = out_dir().join("disk-boot-bad");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    // No kernel at all.
    make(&d, "empty", &[("etc/hostname", b"empty\n".to_vec())], &[])?;
    // A kernel compressed with something the hypervisor does not decode (its payload's first
    // bytes made zstd's), on the Xen face, which needs the ELF.
    let mut files = debian_system()?;
    let bz = &mut files[0].1;
    // The protected-mode kernel follows the setup sectors (0 in the header means 4).
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let pm = (setup_sects + 1) * 512;
    let payload = u32::from_le_bytes(bz[0x248..0x24c].try_into()?) as usize;
    bz[pm + payload..pm + payload + 4].copy_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
    let vmlinuz = format!("boot/vmlinuz-{RELEASE}");
    make(&d, "zstd", &files, &[("vmlinuz", &vmlinuz)])?;
    // A file system cut short: the VHD of the first 1 MiB of an ext4 image.
    make(&d, "whole", &debian_system()?, &[("vmlinuz", &vmlinuz)])?;
    let mut src =
        crate::vhd_cli::image::Source::open(&d.join("whole.vhd")).map_err(anyhow::Error::msg)?;
    let raw = d.join("cut.raw");
    crate::vhd_cli::image::write_raw(&mut src, &raw).map_err(anyhow::Error::msg)?;
    let bytes = std::fs::read(&raw)?;
    let mut cut = bytes[..1 << 20].to_vec();
    cut.resize(bytes.len(), 0);
    std::fs::write(&raw, cut)?;
    raw_to_dynamic(&raw, &d.join("cut.vhd"))?;
    std::fs::write(
        d.join("bad.toml"),
        "# Made by `cargo xtask test` (qemu-svm-unbootable-disks-stop-alone).\n\
         [[vm]]\nname = \"no-kernel\"\npersonality = \"hyperv\"\nmemory_mib = 64\n\
         [[vm.disk]]\npath = \"empty.vhd\"\n\
         [[vm]]\nname = \"zstd-kernel\"\npersonality = \"xen\"\nmemory_mib = 64\n\
         [[vm.disk]]\npath = \"zstd.vhd\"\n\
         [[vm]]\nname = \"cut-fs\"\npersonality = \"hyperv\"\nmemory_mib = 64\n\
         [[vm.disk]]\npath = \"cut.vhd\"\n\
         [[vm]]\nname = \"probe\"\npersonality = \"none\"\nmemory_mib = 32\nvcpus = 2\n\
         kernel = \"../guests/probe\"\n",
    )?;
    Ok(())
}

/// The Debian image (`cargo xtask image debian`) as one VM's disk: a differencing child of the
/// image, booted on the Xen face, then the same child on the Hyper-V face (`janus.check` runs
/// the image's boot check, which powers off).
pub fn setup_debian() -> Result<()> {
    let base = crate::debian_image::ensure_default()?;
    let d = out_dir().join("debian-boot");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    vhd::fs::create_differencing(
        &d.join("debian.vhd"),
        &base,
        None,
        &vhd::fs::create_options(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (file, name, face) in [
        ("1-xen.toml", "deb-xen", "xen"),
        ("2-hyperv.toml", "deb-hv", "hyperv"),
        ("3-none.toml", "deb-hw", "none"),
    ] {
        std::fs::write(
            d.join(file),
            format!(
                "# Made by `cargo xtask test` (qemu-svm-debian-image-moves-between-faces).\n\
                 [[vm]]\nname = \"{name}\"\npersonality = \"{face}\"\nmemory_mib = 512\nvcpus = 2\n\
                 cmdline = \"janus.check\"\n\
                 [[vm.disk]]\npath = \"debian.vhd\"\n"
            ),
        )?;
    }
    Ok(())
}

/// After the boots: the file system is clean and holds the marker each face's boot wrote.
pub fn verify_debian(faces: &[&str]) -> Result<()> {
    let d = out_dir().join("debian-boot");
    let raw = checked_raw(&d.join("debian.vhd"), &d.join("after.raw"))?;
    let listing = run(
        Command::new(e2fs("debugfs"))
            .arg("-R")
            .arg("ls -p /var/lib/janus")
            .arg(&raw),
        "debugfs ls",
    )?;
    for face in faces {
        if !listing.contains(&format!("/seen-{face}/")) {
            anyhow::bail!("the image holds no marker of the {face} boot: {listing}");
        }
    }
    std::fs::remove_file(&raw)?;
    Ok(())
}

/// The disk `vhd` holds (its chain read through) written out to `raw`, which `e2fsck -fn`
/// found clean.
fn checked_raw(vhd: &Path, raw: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_file(raw);
    let mut src = crate::vhd_cli::image::Source::open(vhd).map_err(anyhow::Error::msg)?;
    crate::vhd_cli::image::write_raw(&mut src, raw).map_err(anyhow::Error::msg)?;
    run(
        Command::new(e2fs("e2fsck")).arg("-fn").arg(raw),
        &format!("e2fsck -fn ({})", crate::util::shown(vhd)),
    )?;
    Ok(raw.to_path_buf())
}

/// The default demo's disks (manifests/default.toml), made as `cargo xtask run` makes them.
pub fn setup_demo() -> Result<()> {
    let text = std::fs::read_to_string(crate::util::root().join("manifests/default.toml"))?;
    crate::demo::prepare_for(&text)
}

/// After a demo run: each VM's disk holds a clean file system.
pub fn verify_demo() -> Result<()> {
    let d = out_dir().join("demo");
    for vm in ["debian-xen", "debian-hyperv"] {
        let raw = checked_raw(&d.join(format!("{vm}.vhd")), &d.join("check.raw"))?;
        std::fs::remove_file(&raw)?;
    }
    Ok(())
}
