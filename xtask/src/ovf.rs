//! OVF (DMTF DSP0243, 1.x and 2.x): `cargo xtask run --manifest X.ovf` (or `X.ova`, the tar
//! form) runs a package's virtual systems, and `cargo xtask ovf export` writes any manifest
//! Janus reads (TOML, xl.cfg, OVF) as a package.
//!
//! A package runs as the TOML manifest of the same VMs: the descriptor is read ([`read`]) into
//! the manifest's own model (as `xlcfg` does for xl.cfg), its files checked against the
//! package's manifest of digests (`NAME.mf`, when there is one), and the result written as a
//! TOML manifest that `manifest::load` stages like any other. The package itself is never
//! written: each writable disk runs on a fresh differencing child of the package's image
//! (beside the staging directory, `target/janus/run.ovf/` by default), so its digests hold for
//! the next run; read-only disks are attached as they are. An `.ova` is unpacked there first.
//!
//! An export is self-contained: kernels, initrds and disks are copied into it, a differencing
//! chain flattened into one dynamic VHD (a child names its parent by path, which would point
//! outside the package, and few OVF readers know `ovf:parentRef`; a dynamic VHD stores only
//! the blocks that hold data). A disk file several VMs read is stored once.

mod package;
mod read;
mod write;

use crate::image::BuildOpts;
use crate::manifest::{DiskToml, Staged, VmToml};
use crate::util::{out_dir, root, shown};
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum Cmd {
    /// Write a manifest's VMs (TOML, xl.cfg or OVF) as an OVF 2.0 package: OUT/NAME.ovf, the
    /// VHD disks (chains flattened), kernels and initrds, and OUT/NAME.mf (SHA-256 digests).
    /// An OUT ending in .ova is written as one file (tar) instead.
    Export {
        /// The VMs to export; default: manifests/default.toml.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// A new (or empty) directory, or FILE.ova.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// The package's name (its descriptor NAME.ovf); default: the manifest's file name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        build: BuildOpts,
    },
}

pub fn run(cmd: Cmd) -> Result<bool> {
    match cmd {
        Cmd::Export {
            manifest,
            output,
            name,
            build,
        } => {
            let path = manifest.unwrap_or_else(|| root().join(crate::DEFAULT_MANIFEST));
            let staged =
                crate::stage_in(Some(path.clone()), &build, &out_dir().join("ovf-export"))?;
            let name = name.unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "janus".into())
            });
            export(&staged, &name, &output)?;
            Ok(true)
        }
    }
}

/// Whether `path` names an OVF descriptor (`.ovf`) or package (`.ova`).
pub fn is_package(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ovf") || e.eq_ignore_ascii_case("ova"))
}

/// The context for errors about the manifest an OVF became.
pub fn context(source: &Path) -> String {
    format!("OVF {}, as a Janus manifest", shown(source))
}

/// Marks a directory this module made, so that only such a directory is ever replaced.
const MARKER: &str = ".janus-ovf";

/// Empties (or makes) `dir`, if it is one xtask made or empty; refuses anything else.
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
        let ours = dir.starts_with(out_dir()) || dir.join(MARKER).exists();
        if !empty && !ours {
            bail!(
                "refusing to replace {}: it is not a directory xtask made",
                shown(dir)
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", shown(dir)))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", shown(dir)))?;
    std::fs::write(dir.join(MARKER), b"")?;
    Ok(())
}

/// Where a run staged in `stage` keeps what the package's translation needs.
fn work_dir(stage: &Path) -> PathBuf {
    let mut s = stage.as_os_str().to_owned();
    s.push(".ovf");
    PathBuf::from(s)
}

/// Translates the descriptor or package at `path` into a TOML manifest of the same VMs,
/// written (with the disks' children) beside `stage`; returns the manifest's path.
pub fn translate(path: &Path, stage: &Path) -> Result<PathBuf> {
    let work = work_dir(stage);
    let vms = load(path, &work)?;
    let text = to_toml(path, &vms)?;
    let out = work.join("manifest.toml");
    std::fs::write(&out, text).with_context(|| format!("cannot write {}", shown(&out)))?;
    Ok(out)
}

/// The descriptor's text: UTF-8, or UTF-16 with a byte-order mark.
fn decode(bytes: &[u8]) -> Result<String, String> {
    let utf16 = |be: bool| {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| {
                if be {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from_le_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|_| "not valid UTF-16".to_string())
    };
    match bytes {
        [0xef, 0xbb, 0xbf, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|_| "not valid UTF-8".into())
        }
        [0xff, 0xfe, ..] => utf16(false),
        [0xfe, 0xff, ..] => utf16(true),
        _ => String::from_utf8(bytes.to_vec()).map_err(|_| "not valid UTF-8".into()),
    }
}

/// Reads the package at `path` into manifest VMs whose paths are absolute; `work` (emptied
/// first) receives an `.ova`'s files and the disks' differencing children.
pub fn load(path: &Path, work: &Path) -> Result<Vec<VmToml>> {
    fresh_dir(work)?;
    let ova = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ova"));
    let descriptor = if ova {
        let unpacked = work.join("package");
        std::fs::create_dir_all(&unpacked)?;
        package::extract_ova(path, &unpacked)?
    } else {
        path.to_path_buf()
    };
    let label = if ova {
        format!(
            "{} (in {})",
            descriptor
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            shown(path)
        )
    } else {
        shown(path)
    };
    let dir = std::path::absolute(descriptor.parent().unwrap_or(Path::new(".")))?;
    let bytes =
        std::fs::read(&descriptor).with_context(|| format!("OVF {label}: cannot read it"))?;
    let text = decode(&bytes).map_err(|e| anyhow!("OVF {label}: {e}"))?;
    let d = read::parse(&text).map_err(|e| anyhow!("OVF {label}: {e}"))?;

    // The manifest of digests, when there is one, covers every file used.
    let mf = descriptor.with_extension("mf");
    let covered = if mf.exists() {
        Some(package::verify(&mf).with_context(|| format!("OVF {label}"))?)
    } else {
        None
    };
    let norm = |n: &str| n.trim_start_matches("./").replace('\\', "/");
    let cover = |name: &str, what: &str| -> Result<()> {
        match &covered {
            Some(c) if !c.iter().any(|n| norm(n) == norm(name)) => bail!(
                "OVF {label}: {} does not list {name} ({what}): every file of a package with a \
                 manifest must be in it",
                shown(&mf)
            ),
            _ => Ok(()),
        }
    };
    let own_name = descriptor
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    cover(&own_name, "the descriptor")?;
    println!(
        "xtask: ovf {label}: OVF {}.x, {} virtual system(s){}",
        d.version,
        d.systems.len(),
        if covered.is_some() {
            ", digests checked"
        } else {
            ", no manifest of digests"
        }
    );
    for n in &d.notes {
        println!("xtask: ovf {label}: {n}");
    }

    let files: BTreeMap<&str, &read::FileRef> =
        d.files.iter().map(|f| (f.href.as_str(), f)).collect();
    let mut vms = Vec::new();
    for (i, s) in d.systems.into_iter().enumerate() {
        let at = format!("OVF {label}: VirtualSystem '{}'", s.id);
        let mut vm = s.vm;
        // Checked (and, for the test guests, built) when the manifest is staged.
        let boot_file = |rel: &str, what: &str| -> Result<String> {
            cover(rel, what)?;
            Ok(dir.join(rel).to_string_lossy().into_owned())
        };
        if !vm.kernel.is_empty() {
            vm.kernel = boot_file(&vm.kernel, "janus:Boot kernel")?;
        }
        vm.initrd = vm
            .initrd
            .as_deref()
            .map(|r| boot_file(r, "janus:Boot initrd"))
            .transpose()?;
        for (j, disk) in s.disks.iter().enumerate() {
            let here = work
                .join("disks")
                .join(format!("vm{i}"))
                .join(format!("d{j}"));
            std::fs::create_dir_all(&here)?;
            let image = match &disk.href {
                Some(href) => {
                    let src = package::safe_join(&dir, href).map_err(|e| anyhow!("{at}: {e}"))?;
                    let f = files
                        .get(href.as_str())
                        .expect("a Disk's file is a References File");
                    let len = std::fs::metadata(&src)
                        .map_err(|e| {
                            anyhow!(
                                "{at}: {}: file '{href}' is missing from the package ({}: {e})",
                                f.at,
                                shown(&src)
                            )
                        })?
                        .len();
                    if let Some(size) = f.size.filter(|s| *s != len) {
                        bail!(
                            "{at}: {}: ovf:size says {size} bytes, {} has {len}",
                            f.at,
                            shown(&src)
                        );
                    }
                    cover(href, "a disk")?;
                    if !crate::vhd_cli::image::looks_like_vhd(&src).map_err(|e| anyhow!(e))? {
                        bail!(
                            "{at}: {}: file '{href}' is not a VHD image, though its ovf:format \
                             says VHD",
                            disk.at
                        );
                    }
                    if disk.read_only {
                        src
                    } else {
                        let name = src.file_name().unwrap_or_default();
                        let child = here.join(name);
                        vhd::fs::create_differencing(
                            &child,
                            &src,
                            None,
                            &vhd::fs::create_options(),
                        )
                        .map_err(|e| anyhow!("{at}: {}: {e}", disk.at))?;
                        child
                    }
                }
                None => {
                    let blank = here.join("blank.vhd");
                    let mut opts = vhd::fs::create_options();
                    opts.force_size = true;
                    vhd::fs::create(&blank, vhd::DiskType::Dynamic, disk.capacity, &opts)
                        .map_err(|e| anyhow!("{at}: {}: a blank disk: {e}", disk.at))?;
                    blank
                }
            };
            vm.disk.push(DiskToml {
                path: image.to_string_lossy().into_owned(),
                read_only: disk.read_only,
            });
        }
        vms.push(vm);
    }
    Ok(vms)
}

/// The VMs as a TOML manifest.
fn to_toml(source: &Path, vms: &[VmToml]) -> Result<String> {
    use toml::{Table, Value};
    let mut all = Vec::new();
    for vm in vms {
        let mut t = Table::new();
        t.insert("name".into(), vm.name.clone().into());
        t.insert("personality".into(), vm.personality.clone().into());
        t.insert("memory_mib".into(), i64::from(vm.memory_mib).into());
        t.insert("vcpus".into(), i64::from(vm.vcpus).into());
        if !vm.kernel.is_empty() {
            t.insert("kernel".into(), vm.kernel.clone().into());
        }
        if let Some(i) = &vm.initrd {
            t.insert("initrd".into(), i.clone().into());
        }
        t.insert("cmdline".into(), vm.cmdline.clone().into());
        for (k, v) in [
            ("on_poweroff", &vm.on_poweroff),
            ("on_reboot", &vm.on_reboot),
            ("on_crash", &vm.on_crash),
        ] {
            if let Some(v) = v {
                t.insert(k.into(), v.clone().into());
            }
        }
        if !vm.disk.is_empty() {
            let disks = vm
                .disk
                .iter()
                .map(|d| {
                    let mut dt = Table::new();
                    dt.insert("path".into(), d.path.clone().into());
                    dt.insert("read_only".into(), d.read_only.into());
                    Value::Table(dt)
                })
                .collect();
            t.insert("disk".into(), Value::Array(disks));
        }
        all.push(Value::Table(t));
    }
    let mut root = Table::new();
    root.insert("vm".into(), Value::Array(all));
    let body = toml::to_string(&root).context("cannot write the manifest")?;
    Ok(format!(
        "# The VMs of {} (OVF) as a Janus manifest; written by xtask for each run.\n\n{body}",
        shown(source)
    ))
}

/// A package file name: `preferred`, or if another file has it, `fallback`, numbered if need be.
fn unique(taken: &mut Vec<String>, preferred: &str, fallback: &str) -> String {
    let mut name = if taken.iter().any(|t| t == preferred) {
        fallback.to_string()
    } else {
        preferred.to_string()
    };
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{n}-{fallback}");
        n += 1;
    }
    taken.push(name.clone());
    name
}

/// Letters, digits, `.`, `-` and `_` only.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `staged` as the package `NAME` in `out` (a directory, or a file ending `.ova`).
pub fn export(staged: &Staged, name: &str, out: &Path) -> Result<()> {
    let name = clean(name);
    let ova = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ova"));
    if !ova && out.exists() && std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "{} exists and is not an empty directory: export into a new one",
            shown(out)
        );
    }
    // Everything is written beside `out` first and moved into place once complete.
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let dir = PathBuf::from(partial);
    fresh_dir(&dir)?;
    let r = write_package(staged, &name, &dir);
    let r = r.and_then(|names| {
        if ova {
            let tmp = dir.join(format!("{name}.ova"));
            package::write_ova(&tmp, &dir, &names)?;
            std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", shown(out)))?;
            std::fs::remove_dir_all(&dir)?;
        } else {
            std::fs::remove_file(dir.join(MARKER))?;
            if out.exists() {
                std::fs::remove_dir(out)?;
            }
            std::fs::rename(&dir, out).with_context(|| format!("cannot write {}", shown(out)))?;
        }
        Ok(names)
    });
    let names = match r {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let shown_at = if ova {
        shown(out)
    } else {
        shown(&out.join(format!("{name}.ovf")))
    };
    println!(
        "ovf: {shown_at}: {} VM(s), {} file(s) with SHA-256 digests in {name}.mf",
        staged.manifest.vms.len(),
        names.len() - 2
    );
    Ok(())
}

/// Writes the package's files into `dir`; returns their names, descriptor and manifest first.
fn write_package(staged: &Staged, name: &str, dir: &Path) -> Result<Vec<String>> {
    let modules: BTreeMap<&str, &Path> = staged
        .modules
        .iter()
        .map(|(p, n)| (n.as_str(), p.as_path()))
        .collect();
    let mut taken = vec![format!("{name}.ovf"), format!("{name}.mf")];
    let mut files: Vec<write::File> = Vec::new();
    let mut disks: Vec<write::Disk> = Vec::new();
    // Source (module name or image path) → href, so a file shared by VMs is stored once.
    let mut by_source: BTreeMap<String, String> = BTreeMap::new();
    let mut vms = Vec::new();
    for spec in &staged.manifest.vms {
        // A boot file, by its staged module name `vmI-KEY-base`: stored as `base`.
        let mut boot = |module: &str, key: &str| -> Result<String> {
            if let Some(h) = by_source.get(module) {
                return Ok(h.clone());
            }
            let src = modules
                .get(module)
                .ok_or_else(|| anyhow!("module {module} was not staged"))?;
            let base = module
                .split_once(&format!("-{key}-"))
                .map_or(module, |(_, b)| b);
            let href = unique(&mut taken, base, module);
            std::fs::copy(src, dir.join(&href))
                .with_context(|| format!("cannot copy {}", shown(src)))?;
            files.push(write::File {
                id: format!("file{}", files.len() + 1),
                size: std::fs::metadata(dir.join(&href))?.len(),
                href: href.clone(),
            });
            by_source.insert(module.to_string(), href.clone());
            Ok(href)
        };
        // A VM that boots from its disk has no kernel to store.
        let kernel = if spec.kernel.is_empty() {
            String::new()
        } else {
            boot(spec.kernel.as_str(), "kernel")?
        };
        let initrd = spec
            .initrd
            .as_ref()
            .map(|i| boot(i.as_str(), "initrd"))
            .transpose()?;
        let mut vm_disks = Vec::new();
        for d in &spec.disks {
            let top = &staged
                .disks
                .files
                .get(d.nsid as usize - 1)
                .ok_or_else(|| anyhow!("disk {} has no image file", d.name))?
                .path;
            let key = top.to_string_lossy().into_owned();
            let disk_id = match by_source.get(&key) {
                Some(href) => disks
                    .iter()
                    .find(|x| files.iter().any(|f| f.id == x.file_id && &f.href == href))
                    .map(|x| x.id.clone())
                    .expect("a stored image has a Disk"),
                None => {
                    let base = top
                        .file_name()
                        .map(|n| clean(&n.to_string_lossy()))
                        .unwrap_or_else(|| "disk.vhd".into());
                    let href = unique(&mut taken, &base, &format!("{}-{base}", spec.name));
                    let dst = dir.join(&href);
                    let capacity = if d.parents.is_empty() {
                        std::fs::copy(top, &dst)
                            .with_context(|| format!("cannot copy {}", shown(top)))?;
                        vhd::fs::open(&dst, vhd::OpenOptions::read_only())
                            .map_err(|e| anyhow!("{e}"))?
                            .size()
                    } else {
                        // A chain becomes one dynamic image of the same size and data.
                        let mut src = crate::vhd_cli::image::Source::open(top)
                            .map_err(|e| anyhow!("{}: {e}", shown(top)))?;
                        let size = src.size();
                        crate::vhd_cli::image::write_vhd(
                            &mut src,
                            &dst,
                            vhd::DiskType::Dynamic,
                            size,
                            true,
                        )
                        .map_err(|e| anyhow!("cannot flatten {}: {e}", shown(top)))?;
                        size
                    };
                    let file_id = format!("file{}", files.len() + 1);
                    files.push(write::File {
                        id: file_id.clone(),
                        size: std::fs::metadata(&dst)?.len(),
                        href: href.clone(),
                    });
                    let id = format!("disk{}", disks.len() + 1);
                    disks.push(write::Disk {
                        id: id.clone(),
                        file_id,
                        capacity,
                    });
                    by_source.insert(key, href);
                    id
                }
            };
            vm_disks.push((disk_id, d.read_only));
        }
        let p = spec.policies;
        vms.push(write::Vm {
            name: spec.name.to_string(),
            personality: spec.personality.as_str(),
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            kernel,
            initrd,
            cmdline: spec.cmdline.to_string(),
            on: [
                p.on_poweroff.as_str(),
                p.on_reboot.as_str(),
                p.on_crash.as_str(),
            ],
            disks: vm_disks,
        });
    }
    let pkg = write::Package {
        name: name.to_string(),
        files,
        disks,
        vms,
    };
    let ovf = format!("{name}.ovf");
    std::fs::write(dir.join(&ovf), write::descriptor(&pkg))?;
    let mut names = vec![ovf];
    names.extend(pkg.files.iter().map(|f| f.href.clone()));
    let mf = package::write_mf(dir, &names)?;
    std::fs::write(dir.join(format!("{name}.mf")), mf)?;
    names.insert(1, format!("{name}.mf"));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use vhd::DiskType;

    fn scratch(tag: &str) -> PathBuf {
        let d = out_dir().join("test-ovf").join(tag);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const ELF: &[u8] = b"\x7fELF\x02\x01\x01rest of a kernel";

    fn put(dir: &Path, rel: &str, bytes: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn vhd(dir: &Path, rel: &str, size: u64, fill: Option<(u64, u8)>) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        vhd::fs::create(&p, DiskType::Dynamic, size, &vhd::fs::create_options()).unwrap();
        if let Some((off, b)) = fill {
            let mut v = vhd::fs::open(&p, vhd::OpenOptions::read_write()).unwrap();
            v.write_at(off, &[b; 4096]).unwrap();
            v.flush().unwrap();
        }
        p
    }

    fn data(name: &str, into: &Path) -> PathBuf {
        let src = root().join("xtask/tests/ovf").join(name);
        let dst = into.join(name);
        std::fs::copy(src, &dst).unwrap();
        dst
    }

    /// `translate`, then `manifest::load`, as `cargo xtask run` does.
    fn run_load(package: &Path, stage: &Path) -> Result<Staged> {
        let m = translate(package, stage)?;
        manifest::load(&m, stage).with_context(|| context(package))
    }

    #[test]
    fn the_hand_written_packages_stage_like_a_manifest() {
        let d = scratch("hand");
        data("xenserver-pv.ovf", &d);
        put(&d, "boot/vmlinux", ELF);
        put(&d, "boot/initrd.cpio", b"070701");
        let root_vhd = vhd(&d, "root.vhd", 16 << 20, Some((0, 1)));
        vhd(&d, "data.vhd", 8 << 20, None);
        let before = std::fs::read(&root_vhd).unwrap();
        let s = run_load(&d.join("xenserver-pv.ovf"), &d.join("stage-x")).unwrap();
        let vm = &s.manifest.vms[0];
        assert_eq!(vm.name.as_str(), "web-server");
        assert_eq!(vm.personality.as_str(), "xen");
        assert_eq!((vm.memory_mib, vm.vcpus), (64, 2));
        assert_eq!(vm.disks.len(), 2);
        assert_eq!(vm.disks[0].name.as_str(), "root.vhd");
        // Each writable disk is a child of the package's image, which is only read.
        assert_eq!(vm.disks[0].parents.len(), 1);
        let parent = &s.disks.files[vm.disks[0].parents[0] as usize - 1];
        assert_eq!(parent.path, root_vhd.canonicalize().unwrap());
        assert!(!parent.writable);
        assert!(s.disks.files[vm.disks[0].nsid as usize - 1].writable);
        assert_eq!(std::fs::read(&root_vhd).unwrap(), before);

        data("hyperv-scvmm.ovf", &d);
        put(&d, "kernel/bzImage", ELF);
        vhd(&d, "Virtual Hard Disks/os.vhd", 16 << 20, None);
        let shared = vhd(&d, "Virtual Hard Disks/shared.vhd", 8 << 20, None);
        let s = run_load(&d.join("hyperv-scvmm.ovf"), &d.join("stage-h")).unwrap();
        let vm = &s.manifest.vms[0];
        assert_eq!(vm.personality.as_str(), "hyperv");
        assert_eq!((vm.memory_mib, vm.vcpus), (2048, 4));
        assert_eq!(vm.policies.on_crash, ::manifest::OnEnd::Preserve);
        let disks: Vec<_> = vm
            .disks
            .iter()
            .map(|x| (x.name.as_str(), x.read_only, x.parents.len()))
            .collect();
        assert_eq!(
            disks,
            [
                ("os.vhd", false, 1),
                ("shared.vhd", true, 0),
                ("blank.vhd", false, 0)
            ]
        );
        assert_eq!(
            s.disks.files[vm.disks[1].nsid as usize - 1].path,
            shared.canonicalize().unwrap()
        );
    }

    /// What a VM is, for comparing two stagings of it: its settings, and the bytes of its
    /// boot files and of each disk's data (chains read through).
    fn same(a: &Staged, b: &Staged) {
        assert_eq!(a.manifest.vms.len(), b.manifest.vms.len());
        let file = |s: &Staged, module: &str| {
            let p = &s.modules.iter().find(|(_, n)| n == module).unwrap().0;
            std::fs::read(p).unwrap()
        };
        for (x, y) in a.manifest.vms.iter().zip(&b.manifest.vms) {
            assert_eq!(
                (
                    &x.name,
                    x.personality,
                    x.memory_mib,
                    x.vcpus,
                    &x.cmdline,
                    x.policies
                ),
                (
                    &y.name,
                    y.personality,
                    y.memory_mib,
                    y.vcpus,
                    &y.cmdline,
                    y.policies
                )
            );
            assert_eq!(file(a, &x.kernel), file(b, &y.kernel));
            assert_eq!(
                x.initrd.as_ref().map(|i| file(a, i)),
                y.initrd.as_ref().map(|i| file(b, i))
            );
            assert_eq!(x.disks.len(), y.disks.len());
            for (dx, dy) in x.disks.iter().zip(&y.disks) {
                assert_eq!(dx.read_only, dy.read_only);
                let px = &a.disks.files[dx.nsid as usize - 1].path;
                let py = &b.disks.files[dy.nsid as usize - 1].path;
                assert_eq!(
                    crate::vhd_cli::image::compare(px, py),
                    Ok(None),
                    "{} and {} hold different data",
                    px.display(),
                    py.display()
                );
            }
        }
    }

    /// Two VMs: a chain, a plain disk, and the chain's base read-only by the other VM.
    const PAIR: &str = r#"
[[vm]]
name = "xen-a"
personality = "xen"
memory_mib = 64
vcpus = 2
kernel = "boot/guest.elf"
initrd = "initrd.cpio"
cmdline = "console=hvc0 msg=\"a & b\" <x> it's"
on_poweroff = "restart"
on_crash = "preserve"
disk = [ { path = "child.vhd" }, { path = "data.vhd" } ]

[[vm]]
name = "hv-b"
personality = "hyperv"
memory_mib = 32
kernel = "boot/guest.elf"
disk = [ { path = "base.vhd", read_only = true } ]
"#;

    fn pair(d: &Path) -> PathBuf {
        put(d, "boot/guest.elf", ELF);
        put(d, "initrd.cpio", b"070701 initrd");
        let base = vhd(d, "base.vhd", 8 << 20, Some((0, 0xaa)));
        let child = d.join("child.vhd");
        vhd::fs::create_differencing(&child, &base, None, &vhd::fs::create_options()).unwrap();
        let mut v = vhd::fs::open(&child, vhd::OpenOptions::read_write()).unwrap();
        v.write_at(1 << 20, &[0x55; 4096]).unwrap();
        v.flush().unwrap();
        drop(v);
        vhd(d, "data.vhd", 4 << 20, Some((8192, 7)));
        let m = d.join("pair.toml");
        std::fs::write(&m, PAIR).unwrap();
        m
    }

    #[test]
    fn an_export_imports_back_to_the_same_vms() {
        let d = scratch("round");
        let m = pair(&d);
        let original = manifest::load(&m, &d.join("stage-0")).unwrap();
        let out = d.join("out");
        export(&original, "pair", &out).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "base.vhd",
                "child.vhd",
                "data.vhd",
                "guest.elf",
                "initrd.cpio",
                "pair.mf",
                "pair.ovf"
            ]
        );
        // The chain is flattened: the package's child has no parent.
        let layer =
            vhd::fs::open_layer(&out.join("child.vhd"), vhd::OpenOptions::read_only()).unwrap();
        assert_eq!(layer.disk_type(), DiskType::Dynamic);
        let mf = std::fs::read_to_string(out.join("pair.mf")).unwrap();
        assert!(mf.starts_with("SHA256(pair.ovf)= "), "{mf}");
        assert_eq!(mf.lines().count(), 6);

        let back = run_load(&out.join("pair.ovf"), &d.join("stage-1")).unwrap();
        same(&original, &back);
        // And again: the package was not changed by being run.
        let again = run_load(&out.join("pair.ovf"), &d.join("stage-1")).unwrap();
        same(&original, &again);

        // The one-file form.
        let ova = d.join("pair.ova");
        export(&original, "pair", &ova).unwrap();
        let from_ova = run_load(&ova, &d.join("stage-2")).unwrap();
        same(&original, &from_ova);
        // An export of an import is the same package again.
        let out2 = d.join("out2");
        export(&again, "pair", &out2).unwrap();
        let twice = run_load(&out2.join("pair.ovf"), &d.join("stage-3")).unwrap();
        same(&original, &twice);

        // A directory with something in it is never written into.
        let e = export(&original, "pair", &out).unwrap_err();
        assert!(format!("{e:#}").contains("not an empty directory"), "{e:#}");
    }

    #[test]
    fn a_package_that_changed_is_refused_naming_the_file() {
        let d = scratch("tamper");
        let m = pair(&d);
        let original = manifest::load(&m, &d.join("stage-0")).unwrap();
        let out = d.join("out");
        export(&original, "pair", &out).unwrap();
        let stage = d.join("stage-1");
        let err = || format!("{:#}", run_load(&out.join("pair.ovf"), &stage).unwrap_err());

        // A disk's byte.
        let disk = out.join("data.vhd");
        let good = std::fs::read(&disk).unwrap();
        let mut bad = good.clone();
        bad[2048] ^= 1;
        std::fs::write(&disk, &bad).unwrap();
        let e = err();
        assert!(
            e.contains("SHA256 of data.vhd") && e.contains("pair.mf") && e.contains("line "),
            "{e}"
        );
        std::fs::write(&disk, &good).unwrap();

        // The descriptor.
        let desc = out.join("pair.ovf");
        let text = std::fs::read_to_string(&desc).unwrap();
        std::fs::write(&desc, text.replace(">64<", ">96<")).unwrap();
        assert!(err().contains("SHA256 of pair.ovf"));
        std::fs::write(&desc, &text).unwrap();

        // A file the manifest leaves out.
        let mf = out.join("pair.mf");
        let lines = std::fs::read_to_string(&mf).unwrap();
        let fewer: String = lines
            .lines()
            .filter(|l| !l.contains("initrd.cpio"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&mf, fewer).unwrap();
        let e = err();
        assert!(e.contains("does not list initrd.cpio"), "{e}");

        // Without a manifest, a file of another size than References says.
        std::fs::remove_file(&mf).unwrap();
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 512]);
        std::fs::write(&disk, &longer).unwrap();
        let e = err();
        assert!(e.contains("ovf:size") && e.contains("data.vhd"), "{e}");
        // Or a file that is not a VHD.
        std::fs::write(&disk, vec![0u8; good.len()]).unwrap();
        let e = err();
        assert!(
            e.contains("data.vhd") && e.contains("not a VHD image"),
            "{e}"
        );
        // Or no file at all.
        std::fs::remove_file(&disk).unwrap();
        let e = err();
        assert!(e.contains("data.vhd") && e.contains("missing"), "{e}");
    }

    #[test]
    fn descriptors_in_utf16_and_with_a_bom_are_read() {
        let text = "<a>é</a>";
        let mut le = vec![0xff, 0xfe];
        le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let mut be = vec![0xfe, 0xff];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        let mut bom = vec![0xef, 0xbb, 0xbf];
        bom.extend(text.as_bytes());
        for b in [le, be, bom, text.as_bytes().to_vec()] {
            assert_eq!(decode(&b).unwrap(), text);
        }
        assert!(decode(&[0xc3, 0x28]).is_err());
    }
}
