//! The user's TOML manifest: parsed, checked with file/key/reason errors, its files staged as
//! boot modules, and encoded for the kernel.

use crate::util::shown;
use ::manifest::{self as km, Manifest, Personality, VmSpec};
use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    vm: Vec<VmToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VmToml {
    pub(crate) name: String,
    pub(crate) personality: String,
    pub(crate) memory_mib: u32,
    #[serde(default = "one")]
    pub(crate) vcpus: u8,
    /// Empty (absent): the VM boots what its first disk holds, found by the hypervisor.
    #[serde(default)]
    pub(crate) kernel: String,
    pub(crate) initrd: Option<String>,
    #[serde(default)]
    pub(crate) cmdline: String,
    pub(crate) on_poweroff: Option<String>,
    pub(crate) on_reboot: Option<String>,
    pub(crate) on_crash: Option<String>,
    #[serde(default)]
    pub(crate) disk: Vec<DiskToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiskToml {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) read_only: bool,
}

fn one() -> u8 {
    1
}

/// A checked manifest whose files are ready to become boot modules.
#[derive(Debug)]
pub struct Staged {
    /// (module file, module name) in boot order, the encoded manifest last.
    pub modules: Vec<(PathBuf, String)>,
    pub manifest: Manifest,
    pub guest_memory_mib: u64,
    pub max_vcpus: u8,
    /// The image files the VMs' disks live in, one NVMe namespace each.
    pub disks: crate::disks::DiskSet,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FileKind {
    Elf,
    BzImage,
    Other,
}

/// Only the magic numbers: the kernel validates the whole image when it loads it, with the
/// same `boot` parsers, and says why it refuses one.
fn file_kind(bytes: &[u8]) -> FileKind {
    use boot::guest::linux::{HEADER_MAGIC, SETUP_HEADER_OFFSET, SetupHeader};
    let header = SETUP_HEADER_OFFSET + core::mem::offset_of!(SetupHeader, header);
    if bytes.starts_with(b"\x7fELF") {
        FileKind::Elf
    } else if bytes.get(header..header + HEADER_MAGIC.len()) == Some(&HEADER_MAGIC[..]) {
        FileKind::BzImage
    } else {
        FileKind::Other
    }
}

/// Reads and checks `path`, and stages its files into `stage_dir` (emptied first).
pub fn load(path: &Path, stage_dir: &Path) -> Result<Staged> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("manifest {}: cannot read", shown(path)))?;
    let base = path.parent().unwrap_or(Path::new("."));
    // Xen's own xl.cfg (a PVH guest) is one VM on the Xen face.
    let parsed: FileToml = if path.extension().is_some_and(|e| e == "cfg") {
        FileToml {
            vm: vec![
                crate::xlcfg::parse(&text).map_err(|e| anyhow!("xl.cfg {}: {e}", shown(path)))?,
            ],
        }
    } else {
        toml::from_str(&text).map_err(|e| anyhow!("manifest {}: {e}", shown(path)))?
    };
    check(path, base, parsed, stage_dir)
}

/// Marks a directory xtask staged, so that only such a directory is ever replaced.
const STAGE_MARKER: &str = ".janus-stage";

/// Removes `dir` if it is one xtask made (or empty); refuses anything else.
fn clear_stage(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    // xtask's own `target/janus` is always its to replace; elsewhere (a `JANUS_STAGE`
    // pointing at someone's files) only what it marked as staged.
    let ours = dir.starts_with(crate::util::out_dir()) || dir.join(STAGE_MARKER).exists();
    if !empty && !ours {
        bail!(
            "refusing to replace {}: it is not a Janus staging directory",
            shown(dir)
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", shown(dir)))
}

/// Checks the manifest and stages its files. They are staged next to `stage_dir` first and
/// moved into place only when everything checked out, so a bad manifest never leaves a
/// half-staged directory behind.
fn check(path: &Path, base: &Path, parsed: FileToml, stage_dir: &Path) -> Result<Staged> {
    let partial = stage_dir.with_extension("partial");
    clear_stage(&partial)?;
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", shown(&partial)))?;
    std::fs::write(partial.join(STAGE_MARKER), b"")?;
    let staged = stage_into(path, base, parsed, &partial);
    let mut staged = match staged {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    clear_stage(stage_dir)?;
    std::fs::rename(&partial, stage_dir)
        .with_context(|| format!("cannot move the staged files to {}", shown(stage_dir)))?;
    for (file, name) in &mut staged.modules {
        *file = stage_dir.join(name.as_str());
    }
    Ok(staged)
}

fn stage_into(path: &Path, base: &Path, parsed: FileToml, stage_dir: &Path) -> Result<Staged> {
    let file = shown(path);
    if parsed.vm.is_empty() {
        bail!("manifest {file}: {}", km::Rule::NoVms.describe());
    }
    if parsed.vm.len() > km::MAX_VMS {
        bail!(
            "manifest {file}: {} VMs, at most {} are supported",
            parsed.vm.len(),
            km::MAX_VMS
        );
    }

    let mut staged_by_source: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut modules = Vec::new();
    let mut manifest = Manifest::default();
    let mut guest_memory_mib = 0;
    let mut max_vcpus = 1;
    let mut disks = crate::disks::DiskSet::default();
    for (i, vm) in parsed.vm.iter().enumerate() {
        let at = format!("manifest {file}: vm[{i}] '{}'", vm.name);
        let bad = |key: &str, why: &str| anyhow!("{at}: key `{key}`: {why}");
        if vm.name.is_empty() || vm.name.len() > km::MAX_NAME - 1 {
            return Err(bad(
                "name",
                &format!("must be 1 to {} characters", km::MAX_NAME - 1),
            ));
        }
        if !vm
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad("name", "may hold only letters, digits, '-' and '_'"));
        }
        let personality = Personality::parse(&vm.personality)
            .ok_or_else(|| bad("personality", "must be one of xen, hyperv, none"))?;
        let mut policies = km::Policies::default();
        for (key, given, slot, allowed) in [
            (
                "on_poweroff",
                &vm.on_poweroff,
                &mut policies.on_poweroff,
                "stop, restart",
            ),
            (
                "on_reboot",
                &vm.on_reboot,
                &mut policies.on_reboot,
                "stop, restart",
            ),
            (
                "on_crash",
                &vm.on_crash,
                &mut policies.on_crash,
                "stop, restart, preserve",
            ),
        ] {
            if let Some(g) = given {
                *slot = km::OnEnd::parse(g)
                    .filter(|p| allowed.contains(p.as_str()))
                    .ok_or_else(|| bad(key, &format!("must be one of {allowed}")))?;
            }
        }
        if vm.cmdline.len() > km::MAX_CMDLINE {
            return Err(bad(
                "cmdline",
                &format!("longer than {} bytes", km::MAX_CMDLINE),
            ));
        }
        let mut stage = |key: &str, rel: &str, kinds: &[FileKind]| -> Result<String> {
            let src = base.join(rel);
            let bytes = std::fs::read(&src)
                .map_err(|e| bad(key, &format!("cannot read {}: {e}", shown(&src))))?;
            if bytes.is_empty() {
                return Err(bad(key, &format!("{} is empty", shown(&src))));
            }
            if !kinds.is_empty() && !kinds.contains(&file_kind(&bytes)) {
                return Err(bad(
                    key,
                    &format!("{} is neither an ELF nor a Linux bzImage", shown(&src)),
                ));
            }
            let canon = src.canonicalize().unwrap_or(src.clone());
            if let Some(name) = staged_by_source.get(&canon) {
                return Ok(name.clone());
            }
            let name = module_name(i, key, &src);
            let dst = stage_dir.join(&name);
            std::fs::hard_link(&canon, &dst)
                .or_else(|_| std::fs::copy(&canon, &dst).map(|_| ()))
                .with_context(|| format!("cannot stage {}", shown(&src)))?;
            staged_by_source.insert(canon, name.clone());
            modules.push((dst, name.clone()));
            Ok(name)
        };
        if vm.kernel.is_empty() && vm.initrd.is_some() {
            return Err(bad(
                "initrd",
                "given without `kernel`: a VM that boots from its disk takes its initrd from there",
            ));
        }
        let kernel = if vm.kernel.is_empty() {
            String::new()
        } else {
            stage("kernel", &vm.kernel, &[FileKind::Elf, FileKind::BzImage])?
        };
        let initrd = vm
            .initrd
            .as_deref()
            .map(|p| stage("initrd", p, &[]))
            .transpose()?;
        let spec = VmSpec {
            name: vm
                .name
                .as_str()
                .try_into()
                .map_err(|_| bad("name", "too long"))?,
            personality,
            memory_mib: vm.memory_mib,
            vcpus: vm.vcpus,
            kernel: kernel
                .as_str()
                .try_into()
                .map_err(|_| bad("kernel", "staged name too long"))?,
            initrd: initrd
                .map(|n| {
                    n.as_str()
                        .try_into()
                        .map_err(|_| bad("initrd", "staged name too long"))
                })
                .transpose()?,
            cmdline: vm
                .cmdline
                .as_str()
                .try_into()
                .map_err(|_| bad("cmdline", "too long"))?,
            policies,
            disks: Default::default(),
        };
        if vm.disk.len() > km::MAX_DISKS {
            return Err(bad(
                "disk",
                &format!("{} disks, at most {}", vm.disk.len(), km::MAX_DISKS),
            ));
        }
        let mut spec = spec;
        for (j, d) in vm.disk.iter().enumerate() {
            let disk = disks
                .add(&base.join(&d.path), d.read_only)
                .map_err(|e| bad(&format!("disk[{j}].path"), &format!("{e:#}")))?;
            let _ = spec.disks.push(disk);
        }
        if let Err(rule) = spec.check() {
            let key = match rule {
                km::Rule::MemoryRange => "memory_mib",
                km::Rule::VcpuRange => "vcpus",
                km::Rule::EmptyKernel => "kernel",
                km::Rule::TooManyXenDisks => "disk",
                _ => "name",
            };
            return Err(bad(
                key,
                rule.describe().split(": ").last().unwrap_or("invalid"),
            ));
        }
        if manifest.vms.iter().any(|other| other.name == spec.name) {
            return Err(bad("name", km::Rule::DuplicateName.describe()));
        }
        guest_memory_mib += u64::from(spec.memory_mib);
        max_vcpus = max_vcpus.max(spec.vcpus);
        manifest
            .vms
            .push(spec)
            .map_err(|_| anyhow!("{at}: too many VMs"))?;
    }

    let mut buf = vec![0u8; km::MAX_ENCODED];
    let encoded = manifest
        .encode(&mut buf)
        .map_err(|e| anyhow!("manifest {file}: cannot encode: {e}"))?;
    let bin = stage_dir.join(km::MODULE_NAME);
    std::fs::write(&bin, encoded).with_context(|| format!("cannot write {}", shown(&bin)))?;
    modules.push((bin, km::MODULE_NAME.to_string()));
    Ok(Staged {
        modules,
        manifest,
        guest_memory_mib,
        max_vcpus,
        disks,
    })
}

/// What `load` would stage for a manifest, worked out from its text alone (no file is read):
/// for documentation generated from a manifest whose guests are not built.
pub struct Plan {
    /// Module names in boot order, the encoded manifest last.
    pub modules: Vec<String>,
    pub guest_memory_mib: u64,
    pub max_vcpus: u8,
}

pub fn plan(text: &str) -> Result<Plan> {
    let parsed: FileToml = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
    let mut modules: Vec<String> = Vec::new();
    let mut sources: Vec<&str> = Vec::new();
    for (i, vm) in parsed.vm.iter().enumerate() {
        let kernel = (!vm.kernel.is_empty()).then_some(&vm.kernel);
        for (key, rel) in [("kernel", kernel), ("initrd", vm.initrd.as_ref())] {
            if let Some(rel) = rel
                && !sources.contains(&rel.as_str())
            {
                sources.push(rel);
                modules.push(module_name(i, key, Path::new(rel)));
            }
        }
    }
    modules.push(km::MODULE_NAME.to_string());
    Ok(Plan {
        modules,
        guest_memory_mib: parsed.vm.iter().map(|v| u64::from(v.memory_mib)).sum(),
        max_vcpus: parsed.vm.iter().map(|v| v.vcpus).max().unwrap_or(1),
    })
}

/// A module name every loader passes through intact: `vmI-KEY-basename`, restricted to
/// [A-Za-z0-9._-] and to the kernel's name bound.
fn module_name(vm: usize, key: &str, src: &Path) -> String {
    let base = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("vm{vm}-{key}-{clean}");
    name.truncate(km::MAX_FILE);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xl_cfg_twin_describes_the_same_vm() {
        let dir = crate::util::root().join("manifests");
        let toml_text = std::fs::read_to_string(dir.join("xen-linux.toml")).unwrap();
        let cfg_text = std::fs::read_to_string(dir.join("xen-linux.cfg")).unwrap();
        let t: FileToml = toml::from_str(&toml_text).unwrap();
        let c = crate::xlcfg::parse(&cfg_text).unwrap();
        let t = &t.vm[0];
        assert_eq!(
            (&t.name, &t.personality, t.memory_mib, t.vcpus),
            (&c.name, &c.personality, c.memory_mib, c.vcpus)
        );
        assert_eq!(
            (&t.kernel, &t.initrd, &t.cmdline),
            (&c.kernel, &c.initrd, &c.cmdline)
        );
        assert_eq!(c.disk.len(), t.disk.len());
    }

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("janus-xtask-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("guest.elf"), b"\x7fELF\x02\x01\x01rest").unwrap();
            std::fs::write(dir.join("initrd.cpio"), b"070701").unwrap();
            std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
            Self(dir)
        }

        fn manifest(&self, body: &str) -> Result<Staged> {
            let m = self.0.join("m.toml");
            std::fs::write(&m, body).unwrap();
            load(&m, &self.0.join("stage"))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const GOOD: &str = r#"
[[vm]]
name = "xen-a"
personality = "xen"
memory_mib = 256
vcpus = 2
kernel = "guest.elf"
initrd = "initrd.cpio"
cmdline = "console=hvc0"
on_poweroff = "restart"
on_reboot = "stop"
on_crash = "preserve"

[[vm]]
name = "hv-b"
personality = "hyperv"
memory_mib = 128
kernel = "guest.elf"
"#;

    #[test]
    fn stages_files_once_and_round_trips_through_the_kernel_decoder() {
        let s = Scratch::new("good");
        let staged = s.manifest(GOOD).unwrap();
        let names: Vec<_> = staged.modules.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "vm0-kernel-guest.elf",
                "vm0-initrd-initrd.cpio",
                "manifest.bin"
            ]
        );
        assert_eq!(staged.guest_memory_mib, 384);
        assert_eq!(staged.max_vcpus, 2);
        let bytes = std::fs::read(&staged.modules[2].0).unwrap();
        let decoded = Manifest::decode(&bytes).unwrap();
        assert_eq!(decoded, staged.manifest);
        assert_eq!(decoded.vms[1].vcpus, 1);
        assert_eq!(decoded.vms[1].kernel.as_str(), "vm0-kernel-guest.elf");
        assert_eq!(decoded.vms[1].personality, Personality::HyperV);
        let p = decoded.vms[0].policies;
        assert_eq!(
            (p.on_poweroff, p.on_reboot, p.on_crash),
            (km::OnEnd::Restart, km::OnEnd::Stop, km::OnEnd::Preserve)
        );
        assert_eq!(decoded.vms[1].policies, km::Policies::default());
    }

    fn error_of(body: &str) -> String {
        let s = Scratch::new("bad");
        format!("{:#}", s.manifest(body).unwrap_err())
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_reason() {
        let base = "[[vm]]\nname = \"a\"\npersonality = \"xen\"\nmemory_mib = 64\nkernel = \"guest.elf\"\n";
        let cases: &[(&str, &[&str])] = &[
            ("", &["m.toml", "no [[vm]]"]),
            (
                &base.replace("64", "0"),
                &["vm[0] 'a'", "`memory_mib`", "between 1 and 3072"],
            ),
            (
                &format!("{base}vcpus = 9\n"),
                &["`vcpus`", "between 1 and 8"],
            ),
            (
                &base.replace("xen", "kvm"),
                &["`personality`", "xen, hyperv, none"],
            ),
            (
                &base.replace("guest.elf", "missing.elf"),
                &["`kernel`", "cannot read", "missing.elf"],
            ),
            (
                &base.replace("guest.elf", "notes.txt"),
                &["`kernel`", "neither an ELF nor a Linux bzImage"],
            ),
            (
                &base.replace("\"a\"", "\"a b\""),
                &["`name`", "letters, digits"],
            ),
            (
                &format!("{base}memroy = 1\n"),
                &["m.toml", "unknown field `memroy`"],
            ),
            (
                &base.replace("kernel = \"guest.elf\"\n", ""),
                &["vm[0] 'a'", "`kernel`", "a disk to boot from"],
            ),
            (
                &base.replace("kernel = \"guest.elf\"\n", "initrd = \"guest.elf\"\n"),
                &["`initrd`", "without `kernel`"],
            ),
            (
                &format!("{base}{base}"),
                &["vm[1] 'a'", "`name`", "used by another VM"],
            ),
            (&base.replace("64", "-1"), &["m.toml", "memory_mib"]),
            (
                &format!("{base}on_reboot = \"preserve\"\n"),
                &["vm[0] 'a'", "`on_reboot`", "one of stop, restart"],
            ),
            (
                &format!("{base}on_crash = \"coredump\"\n"),
                &["`on_crash`", "stop, restart, preserve"],
            ),
            ("[[vm]\n", &["m.toml"]),
        ];
        for (body, wants) in cases {
            let e = error_of(body);
            for w in *wants {
                assert!(
                    e.contains(w),
                    "error {e:?} lacks {w:?} for manifest:\n{body}"
                );
            }
        }
    }

    #[test]
    fn staging_replaces_only_its_own_directories_and_never_half() {
        let s = Scratch::new("stage");
        let good = s.manifest(GOOD).unwrap();
        assert!(
            good.modules
                .iter()
                .all(|(f, _)| f.exists() && f.starts_with(s.0.join("stage")))
        );
        // A bad manifest leaves the previous staging as it was and no partial directory.
        let bad =
            "[[vm]]\nname = \"a\"\npersonality = \"xen\"\nmemory_mib = 0\nkernel = \"guest.elf\"\n";
        assert!(s.manifest(bad).is_err());
        assert!(good.modules.iter().all(|(f, _)| f.exists()));
        assert!(!s.0.join("stage.partial").exists());
        // A directory that xtask did not make is never replaced.
        let foreign = s.0.join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("precious"), b"keep").unwrap();
        std::fs::write(s.0.join("m.toml"), GOOD).unwrap();
        let e = load(&s.0.join("m.toml"), &foreign).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a Janus staging directory"),
            "{e:#}"
        );
        assert!(foreign.join("precious").exists());
    }

    #[test]
    fn module_names_survive_every_loader() {
        let n = module_name(3, "kernel", Path::new("dir/vmlinuz 6.1,x"));
        assert_eq!(n, "vm3-kernel-vmlinuz_6.1_x");
        let long = module_name(0, "initrd", Path::new(&"x".repeat(200)));
        assert_eq!(long.len(), km::MAX_FILE);
    }
}
