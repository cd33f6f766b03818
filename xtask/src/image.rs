//! `cargo xtask build`: the two images (and the test guests) for x86_64-unknown-none.

use crate::prereq::{self, TARGET};
use crate::util::{out_dir, root, run, shown};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Debug, Default, clap::Args)]
pub struct BuildOpts {
    /// Optimised images.
    #[arg(long)]
    pub release: bool,
    /// Kernel features (xen, hyperv, vmx, svm). Naming neither vmx nor svm keeps both.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Start from no kernel features (then `--features` picks the personalities).
    #[arg(long)]
    pub no_default_features: bool,
}

pub struct Images {
    /// elf32-i386 multiboot image: QEMU `-kernel`, GRUB `multiboot`, iPXE `kernel`.
    pub boot: PathBuf,
    /// The kernel ELF (also the defmt table for decoding).
    pub kernel: PathBuf,
}

const KNOWN_FEATURES: &[&str] = &["xen", "hyperv", "vmx", "svm"];

impl BuildOpts {
    fn profile_dir(&self) -> &'static str {
        if self.release { "release" } else { "debug" }
    }

    fn kernel_features(&self) -> Result<Vec<String>> {
        for f in &self.features {
            if !KNOWN_FEATURES.contains(&f.as_str()) {
                bail!(
                    "unknown feature '{f}' (known: {})",
                    KNOWN_FEATURES.join(", ")
                );
            }
        }
        let mut features = self.features.clone();
        if self.no_default_features && !features.iter().any(|f| f == "vmx" || f == "svm") {
            features.extend(["vmx".into(), "svm".into()]);
        }
        Ok(features)
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub fn build(opts: &BuildOpts) -> Result<Images> {
    build_in(opts, &out_dir())
}

/// Builds the images into `out`: an image with other features goes to a folder of its own, so
/// that it never replaces the default image other runs use.
pub fn build_in(opts: &BuildOpts, out: &Path) -> Result<Images> {
    prereq::rust_target()?;
    prereq::tools(&[&prereq::OBJCOPY])?;
    let target_dir = root().join("target").join(TARGET).join(opts.profile_dir());
    let out = out.to_path_buf();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", shown(&out)))?;

    let mut boot = cargo();
    boot.args([
        "rustc",
        "-p",
        "boot",
        "--bin",
        "janus-boot",
        "--features",
        "loader",
        "--target",
        TARGET,
    ]);
    if opts.release {
        boot.arg("--release");
    }
    boot.args(["--", "-C", "relocation-model=static"]);
    run(&mut boot)?;

    let mut kernel = cargo();
    kernel.args([
        "build",
        "-p",
        "kernel",
        "--bin",
        "janus-kernel",
        "--target",
        TARGET,
    ]);
    if opts.release {
        kernel.arg("--release");
    }
    if opts.no_default_features {
        kernel.arg("--no-default-features");
    }
    let features = opts.kernel_features()?;
    if !features.is_empty() {
        kernel.args(["--features", &features.join(",")]);
    }
    // defmt drops everything below `error` unless told otherwise at build time.
    kernel.env(
        "DEFMT_LOG",
        std::env::var("DEFMT_LOG").unwrap_or_else(|_| "info".into()),
    );
    run(&mut kernel)?;

    let images = Images {
        boot: out.join("janus-boot"),
        kernel: out.join("janus-kernel"),
    };
    // QEMU's multiboot loader takes only 32-bit ELF; the 64-bit code inside is unchanged. A
    // release loader also sheds its symbols and debug information (its own messages need
    // neither): 3.3 MB become about 36 KiB, what a PXE or GRUB boot fetches.
    let mut objcopy = Command::new("objcopy");
    objcopy.args(["-O", "elf32-i386"]);
    if opts.release {
        objcopy.arg("--strip-all");
    }
    run(objcopy.arg(target_dir.join("janus-boot")).arg(&images.boot))?;
    std::fs::copy(target_dir.join("janus-kernel"), &images.kernel)
        .with_context(|| format!("cannot copy the kernel to {}", shown(&images.kernel)))?;
    check_kernel(&images.kernel)?;
    for (what, path) in [
        ("janus-boot", &images.boot),
        ("janus-kernel", &images.kernel),
    ] {
        let len = std::fs::metadata(path)?.len();
        println!("{what}: {} ({len} bytes)", shown(path));
    }
    Ok(images)
}

/// The loader refuses a kernel without hermit-entry's version note; catch that here, with a
/// file name, rather than on the serial console of a lab machine.
fn check_kernel(path: &PathBuf) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", shown(path)))?;
    let parsed = std::panic::catch_unwind(|| {
        hermit_entry::elf::KernelObject::parse(&bytes).map(|k| (k.start_addr(), k.mem_size()))
    });
    match parsed {
        Ok(Ok((None, _))) => Ok(()),
        Ok(Ok((Some(addr), _))) => {
            bail!("{}: linked at {addr:#x}, must be relocatable", shown(path))
        }
        Ok(Err(e)) => bail!("{}: {e}", shown(path)),
        Err(_) => bail!("{}: malformed ELF", shown(path)),
    }
}

/// Builds a test guest crate (a no_std ELF) and copies it to `target/janus/guests/NAME`.
pub fn build_guest(name: &str, release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", name, "--bin", name, "--target", TARGET]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    let src = root().join("target").join(TARGET).join(profile).join(name);
    let dir = out_dir().join("guests");
    std::fs::create_dir_all(&dir)?;
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).with_context(|| format!("cannot copy guest {name}"))?;
    if name == "probe" {
        probe_disk(&dir)?;
    }
    Ok(dst)
}

/// The disk `manifests/probe-hyperv.toml` gives the probe (offered on VMBus, attached
/// read-only, so it never changes): an empty 1 MiB dynamic VHD beside the probe, made by the
/// project's VHD writer when it is missing.
fn probe_disk(dir: &std::path::Path) -> Result<()> {
    let path = dir.join("probe-disk.vhd");
    if path.exists() {
        return Ok(());
    }
    let tmp = dir.join("probe-disk.vhd.part");
    let _ = std::fs::remove_file(&tmp);
    vhd::fs::create(
        &tmp,
        vhd::DiskType::Dynamic,
        1 << 20,
        &vhd::fs::create_options(),
    )
    .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot create {}", path.display()))
}
