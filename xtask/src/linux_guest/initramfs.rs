//! The guest's initramfs: busybox-static, a few applet links, `/init` (init.sh beside this
//! file) and the mount points, as a gzip-compressed newc cpio. The newc records are written
//! by the `cpio` crate; the archive is deterministic (fixed inode numbers, mtime 0), so the
//! same busybox gives the same bytes.

use anyhow::{Context, Result};
use cpio::newc::{Builder, ModeFileType};
use std::io::Write;

/// The guest's /init.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// Applets reached through `/bin/<name> -> busybox` (the script's and a debugging shell's).
const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "cat",
    "dd",
    "dmesg",
    "echo",
    "findfs",
    "grep",
    "head",
    "insmod",
    "ls",
    "mkdir",
    "mount",
    "nproc",
    "poweroff",
    "printf",
    "reboot",
    "sed",
    "sha256sum",
    "sleep",
    "sync",
    "tr",
    "umount",
    "uname",
    "usleep",
    "yes",
];

/// `/sbin/poweroff`, the kernel's `poweroff_cmd`.
const ORDERLY_POWEROFF: &str = "#!/bin/busybox sh\nexec /bin/busybox kill -USR2 1\n";

/// Modules the guest loads from its kernel package (the disk drivers are not built in):
/// file names under the package's `lib/modules/<release>/kernel/`, in load order. Debian's
/// 6.1 kernels (cloud and generic) ship these as modules; the order follows each module's
/// `depends=` (what depmod writes into modules.dep, which the package leaves to its
/// post-install): hv_storvsc needs scsi_mod, hv_vmbus, scsi_transport_fc and scsi_common;
/// scsi_mod needs scsi_common; sd_mod and scsi_transport_fc need scsi_mod; hv_utils needs
/// hv_vmbus; hv_vmbus and xen-blkfront need none. init.sh's `disk_driver` loads them in this
/// order, and `janus.stay` loads hv_utils on Hyper-V.
pub const MODULES: &[&str] = &[
    // The Xen face's disk.
    "drivers/block/xen-blkfront.ko",
    // The Hyper-V face's: SCSI disks on storvsc over VMBus. The generic kernel's sd_mod
    // needs T10 protection information and its CRCs, which the cloud kernel builds in.
    "crypto/crct10dif_common.ko",
    "lib/crc-t10dif.ko",
    "lib/crc64.ko",
    "lib/crc64-rocksoft.ko",
    "block/t10-pi.ko",
    "drivers/scsi/scsi_common.ko",
    "drivers/scsi/scsi_mod.ko",
    "drivers/scsi/sd_mod.ko",
    "drivers/scsi/scsi_transport_fc.ko",
    "drivers/hv/hv_vmbus.ko",
    "drivers/scsi/hv_storvsc.ko",
    // The Hyper-V face's shutdown service (for `janus.stay`): hv_utils needs hv_vmbus.
    "drivers/hv/hv_utils.ko",
];

/// A kernel module for the archive: `lib/modules/<release>/<file name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub release: String,
    pub name: String,
    pub data: Vec<u8>,
}

/// Linux's character device numbers for /dev/console (5, 1), so the kernel can open the
/// initial console before /init mounts devtmpfs.
const CONSOLE_DEV: (u32, u32) = (5, 1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive, without a leading '/'.
    pub path: String,
    pub node: Node,
}

impl Entry {
    fn new(path: &str, node: Node) -> Self {
        Entry {
            path: path.to_string(),
            node,
        }
    }
}

/// The tree of the guest's root file system.
pub fn entries(busybox: &[u8], modules: &[Module]) -> Vec<Entry> {
    let mut v = vec![
        Entry::new("bin", Node::Dir),
        Entry::new(
            "bin/busybox",
            Node::File {
                data: busybox.to_vec(),
                executable: true,
            },
        ),
    ];
    v.extend(
        APPLETS
            .iter()
            .map(|a| Entry::new(&format!("bin/{a}"), Node::Symlink("busybox".into()))),
    );
    for dir in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "mnt",
        "lib",
        "lib/modules",
        "sbin",
    ] {
        v.push(Entry::new(dir, Node::Dir));
    }
    // What the kernel's orderly power-off (Xen's control/shutdown) runs: it signals /init,
    // which powers off. (busybox's own poweroff would look for a telinit that is not here.)
    v.push(Entry::new(
        "sbin/poweroff",
        Node::File {
            data: ORDERLY_POWEROFF.as_bytes().to_vec(),
            executable: true,
        },
    ));
    let mut releases: Vec<&str> = modules.iter().map(|m| m.release.as_str()).collect();
    releases.dedup();
    for r in releases {
        v.push(Entry::new(&format!("lib/modules/{r}"), Node::Dir));
    }
    for m in modules {
        v.push(Entry::new(
            &format!("lib/modules/{}/{}", m.release, m.name),
            Node::File {
                data: m.data.clone(),
                executable: false,
            },
        ));
    }
    v.push(Entry::new(
        "dev/console",
        Node::CharDev {
            major: CONSOLE_DEV.0,
            minor: CONSOLE_DEV.1,
        },
    ));
    v.push(Entry::new(
        "init",
        Node::File {
            data: INIT_SCRIPT.as_bytes().to_vec(),
            executable: true,
        },
    ));
    v
}

/// Writes `entries` as a newc archive with its trailer.
pub fn newc(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (kind, perm, body): (ModeFileType, u32, &[u8]) = match &e.node {
            Node::Dir => (ModeFileType::Directory, 0o755, &[]),
            Node::File { data, executable } => (
                ModeFileType::Regular,
                if *executable { 0o755 } else { 0o644 },
                data,
            ),
            Node::Symlink(target) => (ModeFileType::Symlink, 0o777, target.as_bytes()),
            Node::CharDev { .. } => (ModeFileType::Char, 0o600, &[]),
        };
        let size = u32::try_from(body.len())
            .with_context(|| format!("initramfs: {} is larger than 4 GiB", e.path))?;
        let mut b = Builder::new(&e.path)
            .ino(i as u32 + 1)
            .mode(perm)
            .set_mode_file_type(kind)
            .nlink(if matches!(e.node, Node::Dir) { 2 } else { 1 });
        if let Node::CharDev { major, minor } = e.node {
            b = b.rdev_major(major).rdev_minor(minor);
        }
        let mut w = b.write(&mut out, size);
        w.write_all(body)
            .with_context(|| format!("initramfs: writing {}", e.path))?;
        w.finish()
            .with_context(|| format!("initramfs: finishing {}", e.path))?;
    }
    cpio::newc::trailer(&mut out).context("initramfs: trailer")?;
    Ok(out)
}

/// The gzip-compressed initramfs for `busybox` (the static binary's bytes) with `modules`
/// (for every kernel the initramfs may boot with; /init loads those of the running one).
pub fn build(busybox: &[u8], modules: &[Module]) -> Result<Vec<u8>> {
    let archive = newc(&entries(busybox, modules))?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(&archive)?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// (name, mode, (rdev major, minor), data) of one record.
    type Record = (String, u32, (u32, u32), Vec<u8>);

    /// An independent newc reader for the tests.
    fn parse_newc(mut b: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        let total = b.len();
        loop {
            assert_eq!((total - b.len()) % 4, 0, "record not 4-aligned");
            assert_eq!(&b[..6], b"070701", "bad magic");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name_end = 110 + namesize as usize;
            assert_eq!(b[name_end - 1], 0, "name not NUL-terminated");
            let name = String::from_utf8(b[110..name_end - 1].to_vec()).unwrap();
            let data_at = name_end.next_multiple_of(4);
            let data = b[data_at..data_at + size as usize].to_vec();
            b = &b[(data_at + size as usize).next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, (rmaj, rmin), data));
        }
    }

    #[test]
    fn the_archive_reads_back_entry_by_entry() {
        let busybox = b"\x7fELF pretend busybox of odd length".to_vec();
        let module = |name: &str, data: &[u8]| Module {
            release: "6.1.0-1-cloud-amd64".into(),
            name: name.into(),
            data: data.to_vec(),
        };
        let modules = [
            module("xen-blkfront.ko", b"\x7fELF module"),
            module("hv_vmbus.ko", b"\x7fELF vmbus"),
            module("hv_storvsc.ko", b"\x7fELF storvsc"),
        ];
        let parsed = parse_newc(&newc(&entries(&busybox, &modules)).unwrap());
        let get = |name: &str| {
            parsed
                .iter()
                .find(|e| e.0 == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let bb = get("bin/busybox");
        assert_eq!((bb.1, &bb.3), (0o100755, &busybox));
        let init = get("init");
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.3, INIT_SCRIPT.as_bytes());
        let console = get("dev/console");
        assert_eq!((console.1, console.2), (0o020600, (5, 1)));
        for a in APPLETS {
            let link = get(&format!("bin/{a}"));
            assert_eq!((link.1, link.3.as_slice()), (0o120777, &b"busybox"[..]));
        }
        for d in ["bin", "dev", "proc", "sys"] {
            assert_eq!(get(d).1, 0o040755);
        }
        // Parents come before children, so the kernel can create every path.
        let pos = |n: &str| parsed.iter().position(|e| e.0 == n).unwrap();
        assert!(pos("bin") < pos("bin/busybox") && pos("dev") < pos("dev/console"));
        let p = get("sbin/poweroff");
        assert_eq!(
            (p.1, p.3.as_slice()),
            (0o100755, ORDERLY_POWEROFF.as_bytes())
        );
        let m = "lib/modules/6.1.0-1-cloud-amd64/xen-blkfront.ko";
        assert_eq!(
            (get(m).1, get(m).3.as_slice()),
            (0o100644, &b"\x7fELF module"[..])
        );
        assert!(
            pos("lib/modules") < pos("lib/modules/6.1.0-1-cloud-amd64")
                && pos("lib/modules/6.1.0-1-cloud-amd64") < pos(m)
        );
        for (name, data) in [("hv_vmbus", "vmbus"), ("hv_storvsc", "storvsc")] {
            let e = get(&format!("lib/modules/6.1.0-1-cloud-amd64/{name}.ko"));
            assert_eq!(
                (e.1, e.3.as_slice()),
                (0o100644, format!("\x7fELF {data}").as_bytes())
            );
        }
        // One directory per release, however many modules it holds.
        let dirs = parsed
            .iter()
            .filter(|e| e.0 == "lib/modules/6.1.0-1-cloud-amd64")
            .count();
        assert_eq!(dirs, 1);
    }

    #[test]
    fn the_gzip_image_is_deterministic_and_holds_the_archive() {
        let a = build(b"bb", &[]).unwrap();
        assert_eq!(a, build(b"bb", &[]).unwrap());
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(a.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, newc(&entries(b"bb", &[])).unwrap());
    }

    #[test]
    fn the_init_script_prints_the_contract() {
        assert!(INIT_SCRIPT.starts_with("#!/bin/busybox sh\n"));
        let first_cmd = INIT_SCRIPT
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert_eq!(first_cmd, "echo JANUS-GUEST-MARKER");
        for needle in [
            "JANUS-CHECK $name $status",
            "JANUS-CLOCK %s %d.%09d",
            "JANUS-GUEST-DONE ok",
            "Booting kernel on Xen PVH",
            "Hypervisor detected: Microsoft Hyper-V",
            "hyperv_clocksource_tsc_page",
            "Hyper-V clockevent",
            "poweroff -f",
            "check disk-driver FAIL \"$driver: $out\"",
            "check disk-mount ok \"$label $dev\"",
            "check disk-move ok \"$label step $step $dev",
            "expect disk-move-read",
        ] {
            assert!(INIT_SCRIPT.contains(needle), "{needle}");
        }
    }

    /// Every `janus.WORD=` the script reads is described in its header.
    #[test]
    fn the_init_script_documents_its_words() {
        let header: String = INIT_SCRIPT
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let words: Vec<&str> = INIT_SCRIPT
            .lines()
            .filter_map(|l| l.trim().strip_prefix("janus."))
            .filter_map(|l| l.split_once("=*)").map(|(w, _)| w))
            .collect();
        assert!(
            words.contains(&"diskmove") && words.contains(&"disk"),
            "{words:?}"
        );
        for w in words {
            assert!(
                header.contains(&format!("#   janus.{w}=")),
                "janus.{w}= undocumented"
            );
        }
    }

    /// Each module with what it needs (its `depends=` in Debian's 6.1 packages, what depmod
    /// puts in modules.dep).
    const DEPENDS: &[(&str, &[&str])] = &[
        ("xen-blkfront", &[]),
        ("crct10dif_common", &[]),
        ("crc-t10dif", &["crct10dif_common"]),
        ("crc64", &[]),
        ("crc64-rocksoft", &["crc64"]),
        ("t10-pi", &["crc-t10dif", "crc64-rocksoft"]),
        ("scsi_common", &[]),
        ("scsi_mod", &["scsi_common"]),
        // The generic kernel's; the cloud kernel's needs only scsi_mod.
        ("sd_mod", &["scsi_mod", "t10-pi"]),
        ("scsi_transport_fc", &["scsi_mod"]),
        ("hv_vmbus", &[]),
        (
            "hv_storvsc",
            &["scsi_mod", "hv_vmbus", "scsi_transport_fc", "scsi_common"],
        ),
        ("hv_utils", &["hv_vmbus"]),
    ];

    fn module_name(path: &str) -> &str {
        let file = path.rsplit('/').next().unwrap();
        file.strip_suffix(".ko").unwrap()
    }

    #[test]
    fn every_module_comes_after_what_it_needs() {
        let names: Vec<&str> = MODULES.iter().map(|m| module_name(m)).collect();
        assert_eq!(names.len(), DEPENDS.len());
        for (i, name) in names.iter().enumerate() {
            let (_, needs) = DEPENDS
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name}: no DEPENDS entry"));
            for need in *needs {
                assert!(names[..i].contains(need), "{name} needs {need} before it");
            }
        }
        // The Hyper-V face's disk needs all of them but xen-blkfront.
        for m in [
            "hv_vmbus",
            "hv_storvsc",
            "scsi_mod",
            "sd_mod",
            "scsi_transport_fc",
        ] {
            assert!(names.contains(&m), "{m}");
        }
    }

    /// What `disk_driver` loads on `face`, from init.sh's own line.
    fn init_drivers(face: &str) -> Vec<&'static str> {
        let line = INIT_SCRIPT
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{face}) drivers=\"")))
            .unwrap_or_else(|| panic!("no drivers for {face} in init.sh"));
        line.split('"').next().unwrap().split_whitespace().collect()
    }

    #[test]
    fn init_loads_each_faces_modules_in_the_order_they_need() {
        let names: Vec<&str> = MODULES.iter().map(|m| module_name(m)).collect();
        assert_eq!(init_drivers("xen"), ["xen-blkfront"]);
        let hyperv = init_drivers("hyperv");
        assert_eq!(
            hyperv,
            [
                "crct10dif_common",
                "crc-t10dif",
                "crc64",
                "crc64-rocksoft",
                "t10-pi",
                "scsi_common",
                "scsi_mod",
                "sd_mod",
                "scsi_transport_fc",
                "hv_vmbus",
                "hv_storvsc"
            ]
        );
        for (i, d) in hyperv.iter().enumerate() {
            assert!(names.contains(d), "{d} is not in the initramfs");
            let (_, needs) = DEPENDS.iter().find(|(n, _)| n == d).unwrap();
            for need in *needs {
                assert!(hyperv[..i].contains(need), "{d} loads before {need}");
            }
        }
    }

    /// `depends=` of a module file's .modinfo.
    fn modinfo_depends(ko: &[u8]) -> Option<Vec<String>> {
        let at = ko.windows(9).position(|w| w == b"\0depends=")? + 9;
        let end = ko[at..].iter().position(|&b| b == 0)? + at;
        let list = std::str::from_utf8(&ko[at..end]).ok()?;
        Some(
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// The table above against the modules of the kernels `cargo xtask linux-guest prepare`
    /// cached, when there are some.
    #[test]
    fn the_cached_kernels_modules_need_what_the_table_says() {
        let dir = super::super::cache_dir();
        let mut checked = 0;
        for f in [super::super::Flavour::Cloud, super::super::Flavour::Generic] {
            let Some((k, _)) = super::super::read_current(&dir, f) else {
                continue;
            };
            let mdir = dir.join(k.key()).join("modules");
            for (name, needs) in DEPENDS {
                let Ok(ko) = std::fs::read(mdir.join(format!("{name}.ko"))) else {
                    continue;
                };
                // What the package's module needs must be loaded before it; a kernel that
                // builds a dependency in needs less than the table says.
                let got = modinfo_depends(&ko).unwrap_or_else(|| panic!("{name}: no depends="));
                for dep in &got {
                    assert!(
                        needs.contains(&dep.as_str()),
                        "{} {name} needs {dep}, which the table does not load before it",
                        k.name
                    );
                }
                checked += 1;
            }
        }
        if checked == 0 {
            eprintln!("no cached kernel modules: depends= not checked");
        }
    }

    /// The script parses with the host's busybox, when there is one.
    #[test]
    fn the_init_script_is_valid_ash() {
        let Ok(out) = std::process::Command::new("busybox")
            .args(["sh", "-n", "-c", INIT_SCRIPT])
            .output()
        else {
            eprintln!("no busybox on this host: syntax not checked");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
