//! The real Linux guest of the Xen and Hyper-V faces: Debian's current bookworm cloud
//! kernel and busybox-static, fetched with `apt-get download` into `target/linux/` (never
//! committed), the PVH-bootable ELF vmlinux extracted from the bzImage, and a busybox
//! initramfs whose /init reports JANUS-* lines on the console.
//!
//! ```text
//! target/linux/
//!   debs/<pkg>_<version>.deb                 apt-get download
//!   <kernel pkg>_<version>/{vmlinuz,vmlinux,config}   keyed by package version
//!   busybox-static_<version>/busybox
//!   vmlinux  bzImage  initramfs.cpio.gz      stable names, what the manifests point at
//!   current                                  the package versions behind the stable names
//! ```
//!
//! API: [`prepare`] → [`LinuxGuest`]; [`direct_boot`] boots it under QEMU without Janus;
//! [`parse_console`] (with [`LineClock`] / [`spawn_capture`]) reads any console that
//! carries init.sh's lines, including Janus's `[vm] `-prefixed COM1.

mod bzimage;
mod console;
mod direct;
mod fetch;
mod initramfs;

// The lead's runner and `bench boot` use these; not all are called inside xtask yet.
#[allow(unused_imports)]
pub use console::{
    CLOCK_TOLERANCE, Check, ClockSample, GuestReport, LineClock, MARKER, TimedLine,
    expected_checks, parse_console, rate_ratio,
};
#[allow(unused_imports)]
pub use direct::{BootReport, COMMON_CMDLINE, DirectBoot, Entry, direct_boot, spawn_capture};
pub use fetch::{Flavour, Package};

use crate::util::{root, shown};
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The prepared guest: files under `target/linux/` with stable names.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// ELF with the Xen PHYS32_ENTRY note (Xen face, PVH direct boot).
    pub vmlinux: PathBuf,
    /// Debian's bzImage as shipped (Hyper-V face, Linux boot protocol).
    pub bzimage: PathBuf,
    /// gzip newc cpio with busybox and init.sh.
    pub initramfs: PathBuf,
    /// "linux-image-6.1.0-56-cloud-amd64 6.1.192-2".
    pub version: String,
    pub kernel: Package,
    pub busybox: Package,
    /// How the bzImage's payload was compressed.
    pub compression: &'static str,
    pub pvh_entry: u64,
    /// Physical span of the vmlinux's PT_LOAD segments.
    pub span: Range<u64>,
}

/// `target/linux`.
pub fn cache_dir() -> PathBuf {
    root().join("target").join("linux")
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees
/// half a file; leaves an identical file alone.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", shown(&tmp)))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", shown(path)))
}

/// Makes `link` name the same file as `target` (a hard link, else a copy).
fn publish(target: &Path, link: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (std::fs::metadata(target), std::fs::metadata(link))
        && (a.dev(), a.ino()) == (b.dev(), b.ino())
    {
        return Ok(());
    }
    let tmp = link.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(target, &tmp)
        .or_else(|_| std::fs::copy(target, &tmp).map(|_| ()))
        .with_context(|| format!("cannot create {}", shown(link)))?;
    std::fs::rename(&tmp, link).with_context(|| format!("cannot create {}", shown(link)))
}

struct Kernel {
    vmlinuz: PathBuf,
    vmlinux: PathBuf,
    compression: &'static str,
    info: bzimage::Vmlinux,
}

/// The kernel package's files, unpacked and extracted once per version.
fn kernel_files(pkg: &Package, dir: &Path) -> Result<Kernel> {
    let kdir = dir.join(pkg.key());
    let vmlinuz = kdir.join("vmlinuz");
    let vmlinux = kdir.join("vmlinux");
    let compression_file = kdir.join("compression");
    let modules = kdir.join("modules");
    // A directory copied for another list of modules is copied again.
    let modules_current = std::fs::read_to_string(modules.join(MODULES_LIST))
        .is_ok_and(|list| list == modules_list());
    if !vmlinux.is_file() || !modules_current {
        let deb = fetch::download(pkg, &dir.join("debs"))?;
        let unpacked = kdir.join("unpacked");
        fetch::unpack(&deb, &unpacked)?;
        copy_modules(&unpacked, &pkg.name, &modules)?;
        let src = fetch::find_one(&unpacked, "boot", "vmlinuz-")?;
        std::fs::copy(&src, &vmlinuz).with_context(|| format!("cannot copy {}", shown(&src)))?;
        if let Ok(config) = fetch::find_one(&unpacked, "boot", "config-") {
            let _ = std::fs::copy(config, kdir.join("config"));
        }
        std::fs::remove_dir_all(&unpacked)
            .with_context(|| format!("cannot remove {}", shown(&unpacked)))?;
        let (compression, elf) = extract_vmlinux(&vmlinuz)?;
        write_atomic(&compression_file, compression.as_bytes())?;
        write_atomic(&vmlinux, &elf)?;
        eprintln!(
            "xtask: extracted {} ({} bytes, {compression}) from {}",
            shown(&vmlinux),
            elf.len(),
            shown(&vmlinuz)
        );
    }
    let elf =
        std::fs::read(&vmlinux).with_context(|| format!("cannot read {}", shown(&vmlinux)))?;
    let info = bzimage::inspect_vmlinux(&elf)
        .with_context(|| format!("{}: not a PVH vmlinux", shown(&vmlinux)))?;
    let compression = match std::fs::read_to_string(&compression_file)
        .unwrap_or_default()
        .trim()
    {
        "gzip" => "gzip",
        "xz" => "xz",
        c if c.starts_with("lz4") => "lz4 (legacy frame)",
        _ => "unknown",
    };
    Ok(Kernel {
        vmlinuz,
        vmlinux,
        compression,
        info,
    })
}

/// bzImage file → (compression name, ELF vmlinux bytes), validated; errors name the file.
pub fn extract_vmlinux(bzimage_path: &Path) -> Result<(&'static str, Vec<u8>)> {
    let file = shown(bzimage_path);
    let image = std::fs::read(bzimage_path).with_context(|| format!("cannot read {file}"))?;
    let payload = bzimage::locate_payload(&image).with_context(|| file.clone())?;
    let (kind, elf) = bzimage::decompress(&image[payload.clone()])
        .with_context(|| format!("{file}: payload at {:#x}", payload.start))?;
    bzimage::inspect_vmlinux(&elf).with_context(|| format!("{file}: the decompressed payload"))?;
    Ok((kind.name(), elf))
}

fn busybox_file(pkg: &Package, dir: &Path) -> Result<PathBuf> {
    let bdir = dir.join(pkg.key());
    let busybox = bdir.join("busybox");
    if !busybox.is_file() {
        let deb = fetch::download(pkg, &dir.join("debs"))?;
        let unpacked = bdir.join("unpacked");
        fetch::unpack(&deb, &unpacked)?;
        let src = ["bin/busybox", "usr/bin/busybox"]
            .iter()
            .map(|p| unpacked.join(p))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("{}: no bin/busybox in the package", shown(&deb)))?;
        let bytes = std::fs::read(&src)?;
        if !bytes.starts_with(b"\x7fELF") {
            bail!("{}: not an ELF executable", shown(&src));
        }
        write_atomic(&busybox, &bytes)?;
        std::fs::remove_dir_all(&unpacked)
            .with_context(|| format!("cannot remove {}", shown(&unpacked)))?;
    }
    Ok(busybox)
}

/// The kernel release a `linux-image-<release>` package installs.
fn release(package: &str) -> &str {
    package.strip_prefix("linux-image-").unwrap_or(package)
}

/// The file in a kernel's `modules/` that names what it was copied for: [`modules_list`].
const MODULES_LIST: &str = "MODULES";

/// [`initramfs::MODULES`], one a line.
fn modules_list() -> String {
    initramfs::MODULES
        .iter()
        .map(|m| format!("{m}\n"))
        .collect()
}

/// Copies the modules the guest loads ([`initramfs::MODULES`]) out of the unpacked package
/// into `into`, with the list it copied for; a module the package builds in (or lacks) is
/// left out.
fn copy_modules(unpacked: &Path, package: &str, into: &Path) -> Result<()> {
    let tmp = into.with_extension("new");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", shown(&tmp)))?;
    let base = unpacked
        .join("lib/modules")
        .join(release(package))
        .join("kernel");
    for m in initramfs::MODULES {
        let src = base.join(m);
        if let (true, Some(name)) = (src.is_file(), Path::new(m).file_name()) {
            std::fs::copy(&src, tmp.join(name))
                .with_context(|| format!("cannot copy {}", shown(&src)))?;
        }
    }
    write_atomic(&tmp.join(MODULES_LIST), modules_list().as_bytes())?;
    let _ = std::fs::remove_dir_all(into);
    std::fs::rename(&tmp, into).with_context(|| format!("cannot create {}", shown(into)))
}

/// The modules of every prepared kernel flavour, for the shared initramfs.
fn initramfs_modules(dir: &Path) -> Result<Vec<initramfs::Module>> {
    let mut out = Vec::new();
    for f in [Flavour::Cloud, Flavour::Generic] {
        let Some((k, _)) = read_current(dir, f) else {
            continue;
        };
        let mdir = dir.join(k.key()).join("modules");
        for m in initramfs::MODULES {
            let Some(name) = Path::new(m).file_name() else {
                continue;
            };
            let path = mdir.join(name);
            if path.is_file() {
                out.push(initramfs::Module {
                    release: release(&k.name).to_string(),
                    name: name.to_string_lossy().into_owned(),
                    data: std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", shown(&path)))?,
                });
            }
        }
    }
    Ok(out)
}

/// The stable names of a flavour's files: (vmlinux, bzImage, the record of its packages).
fn stable_names(flavour: Flavour) -> [&'static str; 3] {
    match flavour {
        Flavour::Cloud => ["vmlinux", "bzImage", "current"],
        Flavour::Generic => ["vmlinux-generic", "bzImage-generic", "current-generic"],
    }
}

/// Reads `target/linux/current` (or the flavour's): the packages behind the stable names,
/// for offline reuse.
fn read_current(dir: &Path, flavour: Flavour) -> Option<(Package, Package)> {
    let text = std::fs::read_to_string(dir.join(stable_names(flavour)[2])).ok()?;
    let mut pkgs = text.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        Some(Package {
            name: w.next()?.to_string(),
            version: w.next()?.to_string(),
        })
    });
    Some((pkgs.next()?, pkgs.next()?))
}

fn resolve_packages(dir: &Path, flavour: Flavour) -> Result<(Package, Package)> {
    let resolved = fetch::resolve(flavour.meta(), Some(flavour))
        .and_then(|k| Ok((k, fetch::resolve(fetch::BUSYBOX, None)?)));
    match resolved {
        Ok(p) => Ok(p),
        Err(e) => match read_current(dir, flavour) {
            Some((k, b)) if dir.join(k.key()).join("vmlinux").is_file() => {
                eprintln!(
                    "xtask: warning: {e:#}; reusing the cached {} {}",
                    k.name, k.version
                );
                Ok((k, b))
            }
            _ => Err(e),
        },
    }
}

/// Fetches (or reuses) the cloud kernel and busybox, extracts vmlinux, builds the
/// initramfs, and publishes them under their stable names.
pub fn prepare() -> Result<LinuxGuest> {
    prepare_flavour(Flavour::Cloud)
}

/// The flavours whose stable names `manifest_text` mentions.
fn flavours_named(manifest_text: &str) -> Vec<Flavour> {
    let named = |name: &str| {
        manifest_text
            .match_indices(&format!("target/linux/{name}"))
            // "vmlinux" must not match "vmlinux-generic".
            .any(|(i, m)| !manifest_text[i + m.len()..].starts_with('-'))
    };
    [Flavour::Cloud, Flavour::Generic]
        .into_iter()
        .filter(|f| {
            let [vmlinux, bzimage, _] = stable_names(*f);
            named(vmlinux) || named(bzimage)
        })
        .collect()
}

/// Prepares each flavour `manifest_text` names.
pub fn prepare_for(manifest_text: &str) -> Result<()> {
    let flavours = flavours_named(manifest_text);
    for &f in &flavours {
        prepare_flavour(f)?;
    }
    // A manifest with its own kernel may still use the initramfs.
    if flavours.is_empty() && manifest_text.contains("target/linux/") {
        prepare()?;
    }
    Ok(())
}

/// [`prepare`] for either kernel flavour; both share the initramfs.
pub fn prepare_flavour(flavour: Flavour) -> Result<LinuxGuest> {
    let dir = cache_dir();
    std::fs::create_dir_all(dir.join("debs"))
        .with_context(|| format!("cannot create {}", shown(&dir)))?;
    let (kpkg, bpkg) = resolve_packages(&dir, flavour)?;
    let kernel = kernel_files(&kpkg, &dir)?;
    let busybox = busybox_file(&bpkg, &dir)?;
    let bb = std::fs::read(&busybox).with_context(|| format!("cannot read {}", shown(&busybox)))?;
    let [vmlinux_name, bzimage_name, current] = stable_names(flavour);
    let vmlinux = dir.join(vmlinux_name);
    let bzimage = dir.join(bzimage_name);
    publish(&kernel.vmlinux, &vmlinux)?;
    publish(&kernel.vmlinuz, &bzimage)?;
    write_atomic(
        &dir.join(current),
        format!(
            "{} {}\n{} {}\n",
            kpkg.name, kpkg.version, bpkg.name, bpkg.version
        )
        .as_bytes(),
    )?;
    // After `current`: the initramfs carries the modules of every prepared kernel.
    let initramfs = dir.join("initramfs.cpio.gz");
    write_atomic(
        &initramfs,
        &initramfs::build(&bb, &initramfs_modules(&dir)?)?,
    )?;
    Ok(LinuxGuest {
        vmlinux,
        bzimage,
        initramfs,
        version: format!("{} {}", kpkg.name, kpkg.version),
        kernel: kpkg,
        busybox: bpkg,
        compression: kernel.compression,
        pvh_entry: kernel.info.pvh_entry,
        span: kernel.info.span,
    })
}

#[derive(Subcommand)]
pub enum Sub {
    /// Fetch (or reuse) the kernel and busybox; write target/linux/{vmlinux,bzImage,initramfs.cpio.gz}.
    Prepare,
    /// Boot the guest under QEMU TCG without Janus and check what its console says.
    Boot {
        #[arg(long, default_value_t = 2)]
        vcpus: u8,
        #[arg(long, default_value_t = 512)]
        memory: u32,
        /// Seconds before a boot counts as failed.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
        /// Boots in a row (the median time to the marker is printed).
        #[arg(long, default_value_t = 1)]
        runs: u32,
        #[arg(long, value_enum, default_value = "pvh")]
        entry: Entry,
        /// Seconds between the two clock samples.
        #[arg(long, default_value_t = 5)]
        clockwait: u32,
        /// Copy the guest console to stdout.
        #[arg(long)]
        echo: bool,
    },
}

fn print_guest(g: &LinuxGuest) {
    println!(
        "linux-guest: kernel {} ({}), cached in {}",
        g.version,
        g.compression,
        shown(&cache_dir().join(g.kernel.key()))
    );
    println!(
        "linux-guest: busybox {} {}",
        g.busybox.name, g.busybox.version
    );
    println!(
        "linux-guest: vmlinux {} (PVH entry {:#x}, loads {:#x}..{:#x} = {} MiB span)",
        shown(&g.vmlinux),
        g.pvh_entry,
        g.span.start,
        g.span.end,
        (g.span.end - g.span.start).div_ceil(1 << 20)
    );
    println!("linux-guest: bzImage {}", shown(&g.bzimage));
    println!("linux-guest: initramfs {}", shown(&g.initramfs));
}

/// `cargo xtask linux-guest …`
pub fn run(cmd: Sub) -> Result<bool> {
    let guest = prepare()?;
    print_guest(&guest);
    let Sub::Boot {
        vcpus,
        memory,
        timeout,
        runs,
        entry,
        clockwait,
        echo,
    } = cmd
    else {
        return Ok(true);
    };
    let opts = DirectBoot {
        entry,
        clockwait_s: clockwait,
        echo,
        ..DirectBoot::pvh(vcpus, memory, Duration::from_secs(timeout))
    };
    println!(
        "linux-guest: direct boot ({entry:?}), -smp {vcpus} -m {memory}, cmdline \"{}\"",
        opts.cmdline()
    );
    let mut markers = Vec::new();
    let mut all_ok = true;
    for run in 1..=runs.max(1) {
        let r = direct_boot(&guest, &opts)?;
        for c in &r.guest.checks {
            println!(
                "linux-guest: [{run}] JANUS-CHECK {} {} {}",
                c.name,
                if c.ok { "ok" } else { "FAIL" },
                c.detail
            );
        }
        for l in r.lines.iter().filter(|l| l.text.contains("JANUS-INFO")) {
            println!("linux-guest: [{run}] {}", l.text.trim());
        }
        let marker = r.time_to_marker();
        let fmt =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.3} s", d.as_secs_f64()));
        println!(
            "linux-guest: [{run}] marker after {}, done after {}, QEMU exit after {:.3} s, clock ratio {}",
            fmt(marker),
            fmt(r.guest.done.map(|d| d.1)),
            r.wall.as_secs_f64(),
            r.clock_ratio().map_or("-".into(), |x| format!("{x:.5}"))
        );
        let problems = r.problems();
        if problems.is_empty() {
            println!("linux-guest: [{run}] passed");
        } else {
            all_ok = false;
            for p in &problems {
                println!("linux-guest: [{run}] FAILED: {p}");
            }
            if !echo {
                println!("linux-guest: [{run}] console:");
                for l in &r.lines {
                    println!("  {:>8.3} {}", l.at.as_secs_f64(), l.text);
                }
            }
        }
        markers.extend(marker);
    }
    if runs > 1 && !markers.is_empty() {
        markers.sort();
        let median = markers[markers.len() / 2];
        println!(
            "linux-guest: median time to marker {:.3} s over {} runs (min {:.3}, max {:.3})",
            median.as_secs_f64(),
            markers.len(),
            markers[0].as_secs_f64(),
            markers[markers.len() - 1].as_secs_f64()
        );
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two manifests the faces boot must agree with this module: files under the
    /// stable names, the face and vCPU count on the command line, the common options.
    #[test]
    fn the_face_manifests_match_the_guest() {
        for (file, face, kernel, console) in [
            (
                "xen-linux.toml",
                "xen",
                "../target/linux/vmlinux",
                "console=hvc0",
            ),
            (
                "hyperv-linux.toml",
                "hyperv",
                "../target/linux/bzImage",
                "console=ttyS0",
            ),
            (
                "xen-linux-generic.toml",
                "xen",
                "../target/linux/vmlinux-generic",
                "console=hvc0",
            ),
            (
                "hyperv-linux-generic.toml",
                "hyperv",
                "../target/linux/bzImage-generic",
                "console=ttyS0",
            ),
        ] {
            let path = root().join("manifests").join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let doc: toml::Table = toml::from_str(&text).unwrap();
            let vm = doc["vm"].as_array().unwrap()[0].as_table().unwrap();
            assert_eq!(vm["personality"].as_str(), Some(face), "{file}");
            assert_eq!(vm["kernel"].as_str(), Some(kernel), "{file}");
            assert_eq!(
                vm["initrd"].as_str(),
                Some("../target/linux/initramfs.cpio.gz"),
                "{file}"
            );
            let vcpus = vm["vcpus"].as_integer().unwrap();
            let cmdline = vm["cmdline"].as_str().unwrap();
            for want in [
                console.to_string(),
                format!("janus.face={face}"),
                format!("janus.vcpus={vcpus}"),
                COMMON_CMDLINE.to_string(),
            ] {
                assert!(cmdline.contains(&want), "{file}: cmdline lacks {want}");
            }
        }
    }

    #[test]
    fn manifests_name_the_flavours_they_boot() {
        let read = |f: &str| std::fs::read_to_string(root().join("manifests").join(f)).unwrap();
        assert_eq!(
            flavours_named(&read("linux-both-faces.toml")),
            [Flavour::Cloud]
        );
        assert_eq!(
            flavours_named(&read("xen-linux-generic.toml")),
            [Flavour::Generic]
        );
        assert_eq!(
            flavours_named(&read("hyperv-linux-generic.toml")),
            [Flavour::Generic]
        );
        assert!(flavours_named("initrd = \"target/linux/initramfs.cpio.gz\"").is_empty());
    }

    #[test]
    fn extraction_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("janus-lg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bogus = dir.join("vmlinuz-bogus");
        std::fs::write(&bogus, vec![0u8; 4096]).unwrap();
        let e = format!("{:#}", extract_vmlinux(&bogus).unwrap_err());
        assert!(e.contains("vmlinuz-bogus") && e.contains("bzImage"), "{e}");
        let e = format!("{:#}", extract_vmlinux(&dir.join("absent")).unwrap_err());
        assert!(e.contains("absent"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
