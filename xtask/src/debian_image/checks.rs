//! Host checks of a built image: the file system (`e2fsck -fn`, its UUID and label), what the
//! hypervisor will boot (`/vmlinuz` and `/initrd.img` and their targets in `/boot`, read
//! with `debugfs`), that the initramfs carries the faces' disk modules (its cpio archives
//! listed here, gzip in-process, zstd and xz through their tools), the configuration
//! (fstab by UUID, the getty rule, root's empty password), and the VHD itself (the
//! project's checker, as `cargo xtask vhd check`).

use super::recipe::{self, INITRD_MODULES, LABEL, ROOT_UUID};
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

pub use crate::linux_disk_cases::e2fs;

/// Collects what passed and what failed; prints each as it comes.
#[derive(Default)]
pub struct Report {
    pub failed: Vec<String>,
}

impl Report {
    fn ok(&mut self, what: &str) {
        println!("  check: {what}: ok");
    }

    fn fail(&mut self, what: &str, why: &str) {
        println!("  check: {what}: FAILED: {why}");
        self.failed.push(format!("{what}: {why}"));
    }

    fn expect(&mut self, what: &str, r: Result<String, String>) {
        match r {
            Ok(detail) if detail.is_empty() => self.ok(what),
            Ok(detail) => println!("  check: {what}: ok ({detail})"),
            Err(why) => self.fail(what, &why),
        }
    }
}

fn indent(text: &str) {
    for l in text.lines() {
        println!("    | {l}");
    }
}

fn debugfs(raw: &Path, request: &str) -> Result<String> {
    let out = Command::new(e2fs("debugfs"))
        .arg("-R")
        .arg(request)
        .arg(raw)
        .output()
        .context("cannot run debugfs")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where a symlink points, from `debugfs -R "stat LINK"` (a fast link keeps its target in
/// the inode; a long one in a block, which `debugfs` prints after "Fast link dest" too).
pub fn link_target(stat: &str) -> Option<String> {
    if !stat.contains("Type: symlink") {
        return None;
    }
    let l = stat
        .lines()
        .find_map(|l| l.trim().strip_prefix("Fast link dest: "))?;
    Some(l.trim_matches('"').to_string())
}

/// The name and size of each regular file in `debugfs -R "ls -l DIR"` output.
pub fn listed_files(ls: &str) -> Vec<(String, u64)> {
    ls.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // inode mode (links) uid gid size date time name
            if w.len() < 9 || !w[1].starts_with("100") {
                return None;
            }
            Some((w[8..].join(" "), w[5].parse().ok()?))
        })
        .collect()
}

/// The checks on the raw file system. `work` holds a scratch copy of the initramfs.
pub fn filesystem(raw: &Path, work: &Path, r: &mut Report) -> Result<()> {
    let fsck = Command::new(e2fs("e2fsck"))
        .arg("-fn")
        .arg(raw)
        .output()
        .context("cannot run e2fsck")?;
    println!("  e2fsck -fn {}:", raw.display());
    indent(&String::from_utf8_lossy(&fsck.stdout));
    indent(&String::from_utf8_lossy(&fsck.stderr));
    if fsck.status.success() {
        r.ok("e2fsck -fn: the file system is clean");
    } else {
        r.fail("e2fsck -fn", &format!("exit status {}", fsck.status));
    }

    let head = Command::new(e2fs("dumpe2fs"))
        .arg("-h")
        .arg(raw)
        .output()
        .context("cannot run dumpe2fs")?;
    let head = String::from_utf8_lossy(&head.stdout).into_owned();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (uuid, label) = (field("Filesystem UUID:"), field("Filesystem volume name:"));
    r.expect(
        "file system UUID and label",
        if uuid == ROOT_UUID && label == LABEL {
            Ok(format!("UUID {uuid}, label {label}"))
        } else {
            Err(format!(
                "UUID {uuid:?} label {label:?}, want {ROOT_UUID} {LABEL}"
            ))
        },
    );

    let ls = debugfs(raw, "ls -l /boot")?;
    println!("  debugfs -R \"ls -l /boot\":");
    indent(ls.trim_end());
    let boot = listed_files(&ls);
    let mut initrd = None;
    for link in ["/vmlinuz", "/initrd.img"] {
        let stat = debugfs(raw, &format!("stat {link}"))?;
        println!("  debugfs -R \"stat {link}\":");
        indent(
            &stat
                .lines()
                .filter(|l| l.contains("Type:") || l.contains("link dest"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let check = match link_target(&stat) {
            None => Err(format!("{link} is missing or not a symlink")),
            Some(t) => {
                let name = t.trim_start_matches('/').trim_start_matches("boot/");
                match boot.iter().find(|(n, _)| n == name) {
                    Some((_, size)) if *size > 0 => {
                        if link == "/initrd.img" {
                            initrd = Some(format!("/boot/{name}"));
                        }
                        Ok(format!("-> {t}, {size} bytes"))
                    }
                    _ => Err(format!("{link} -> {t}, which /boot does not hold")),
                }
            }
        };
        r.expect(link, check);
    }

    let fstab = debugfs(raw, "cat /etc/fstab")?;
    r.expect(
        "/etc/fstab mounts the root by UUID",
        if fstab.lines().any(|l| l.trim() == recipe::fstab_line()) {
            Ok(recipe::fstab_line().replace('\t', " "))
        } else {
            Err(format!("no line '{}' in {fstab:?}", recipe::fstab_line()))
        },
    );
    // Files the customize hook writes whole: each must hold exactly what the recipe says.
    let written = [
        (
            "getty rule for hvc0 and ttyS0",
            recipe::GETTY_RULES,
            recipe::getty_rules(),
        ),
        (
            "the initramfs waits for udev to stop",
            recipe::UDEV_INIT_BOTTOM_PATH,
            recipe::UDEV_INIT_BOTTOM.to_string(),
        ),
        (
            "no ttyS0 getty under Xen",
            recipe::TTYS0_DROP_IN_PATH,
            recipe::TTYS0_DROP_IN.to_string(),
        ),
    ];
    for (what, path, want) in written {
        let got = debugfs(raw, &format!("cat {path}"))?;
        r.expect(
            what,
            if got == want {
                Ok(path.into())
            } else {
                Err(format!("{path} is {got:?}"))
            },
        );
    }
    let shadow = debugfs(raw, "cat /etc/shadow")?;
    r.expect(
        "root logs in without a password",
        if shadow.lines().any(|l| l.starts_with("root::")) {
            Ok(String::new())
        } else {
            Err("root's password in /etc/shadow is not empty".into())
        },
    );

    if let Some(initrd) = initrd {
        let copy = work.join("initrd.check");
        let _ = std::fs::remove_file(&copy);
        debugfs(raw, &format!("dump {initrd} {}", copy.display()))?;
        let bytes = std::fs::read(&copy);
        let _ = std::fs::remove_file(&copy);
        let bytes = bytes.map_err(|e| format!("cannot dump {initrd}: {e}"));
        r.expect(
            &format!("{initrd} carries and loads the disk modules"),
            bytes.clone().and_then(|b| initrd_modules(&b)),
        );
        r.expect(
            &format!("{initrd} waits for udev to stop"),
            bytes.and_then(|b| initrd_udev_wait(&b)),
        );
    }
    Ok(())
}

/// Whether the initramfs runs the image's own last udev step ([`recipe::UDEV_INIT_BOTTOM`]).
pub fn initrd_udev_wait(initrd: &[u8]) -> Result<String, String> {
    let files = initrd_files(initrd)?;
    let script = files
        .iter()
        .find(|(n, _)| n.trim_start_matches("./") == "scripts/init-bottom/udev")
        .ok_or("no scripts/init-bottom/udev")?;
    if script.1 == recipe::UDEV_INIT_BOTTOM.as_bytes() {
        Ok("scripts/init-bottom/udev".into())
    } else {
        Err("scripts/init-bottom/udev is Debian's, not the image's".into())
    }
}

/// What an initramfs holds of [`INITRD_MODULES`]: each must be there as a `.ko` file and
/// named in `conf/modules` (the list initramfs-tools loads before it looks for the root).
pub fn initrd_modules(initrd: &[u8]) -> Result<String, String> {
    let files = initrd_files(initrd)?;
    let mut found = Vec::new();
    for m in INITRD_MODULES {
        let want = m.replace('-', "_");
        let path = files.iter().find(|(n, _)| {
            let base = n.rsplit('/').next().unwrap_or(n);
            base.split_once(".ko")
                .is_some_and(|(stem, _)| stem.replace('-', "_") == want)
        });
        match path {
            Some((p, _)) => found.push(p.rsplit('/').next().unwrap_or(p).to_string()),
            None => return Err(format!("no {m}.ko among its {} files", files.len())),
        }
    }
    let conf = files
        .iter()
        .find(|(n, _)| n.trim_start_matches("./") == "conf/modules")
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .ok_or("no conf/modules")?;
    for m in INITRD_MODULES {
        if !conf.lines().any(|l| l.split_whitespace().next() == Some(m)) {
            return Err(format!("conf/modules does not load {m}"));
        }
    }
    Ok(format!(
        "{} files; {}; all in conf/modules",
        files.len(),
        found.join(", ")
    ))
}

/// Every file of an initramfs: its uncompressed cpio archives (early microcode), then the
/// compressed rest, as the kernel reads it.
pub fn initrd_files(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    let mut pos = 0;
    loop {
        while pos < data.len() && data[pos] == 0 {
            pos += 1;
        }
        if pos >= data.len() {
            return Ok(files);
        }
        let rest = &data[pos..];
        if rest.starts_with(b"0707") {
            pos += cpio_archive(rest, &mut files)?;
            continue;
        }
        let unpacked = decompress(rest)?;
        let mut p = 0;
        while p < unpacked.len() {
            if unpacked[p] == 0 {
                p += 1;
                continue;
            }
            p += cpio_archive(&unpacked[p..], &mut files)?;
        }
        return Ok(files);
    }
}

fn decompress(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))?;
        Ok(out)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        crate::prereq::tools(&[&crate::prereq::ZSTD]).map_err(|e| e.to_string())?;
        through("zstd", data)
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        crate::prereq::tools(&[&crate::prereq::XZ]).map_err(|e| e.to_string())?;
        through("xz", data)
    } else {
        Err(format!(
            "unknown compression (magic {:02x?})",
            &data[..data.len().min(6)]
        ))
    }
}

/// `tool -dc` over `data`.
fn through(tool: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = feeder.join();
    if !out.status.success() {
        return Err(format!(
            "{tool} -dc failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// One newc ("070701"/"070702") archive at the start of `data`, up to and with its trailer:
/// its files (name, contents) appended to `files`; the bytes it took.
pub fn cpio_archive(data: &[u8], files: &mut Vec<(String, Vec<u8>)>) -> Result<usize, String> {
    let hex = |at: usize| -> Result<usize, String> {
        let field = data.get(at..at + 8).ok_or("cpio: truncated header")?;
        let s = std::str::from_utf8(field).map_err(|_| "cpio: bad header")?;
        usize::from_str_radix(s, 16).map_err(|_| format!("cpio: bad header field {s:?}"))
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut pos = 0;
    loop {
        let magic = data.get(pos..pos + 6).ok_or("cpio: truncated")?;
        if magic != b"070701" && magic != b"070702" {
            return Err(format!("cpio: no newc header at byte {pos}"));
        }
        let mode = hex(pos + 14)?;
        let size = hex(pos + 54)?;
        let namesize = hex(pos + 94)?;
        let name_at = pos + 110;
        let name = data
            .get(name_at..name_at + namesize.saturating_sub(1))
            .ok_or("cpio: truncated name")?;
        let name = String::from_utf8_lossy(name).into_owned();
        let data_at = align(name_at + namesize);
        let body = data
            .get(data_at..data_at + size)
            .ok_or_else(|| format!("cpio: {name}: truncated"))?;
        pos = align(data_at + size);
        if name == "TRAILER!!!" {
            return Ok(pos);
        }
        if mode & 0o170000 == 0o100000 {
            files.push((name, body.to_vec()));
        }
    }
}

/// The project's VHD check (`cargo xtask vhd check`): the footers, the block table and the
/// bitmaps. Prints the allocation.
pub fn vhd(path: &Path, r: &mut Report) -> Result<()> {
    let what = "VHD structure (cargo xtask vhd check)";
    let mut v = match vhd::fs::open(path, vhd::OpenOptions::read_only()) {
        Ok(v) => v,
        Err(e) => {
            r.fail(what, &format!("unusable: {e}"));
            return Ok(());
        }
    };
    let kind = format!("{:?}", v.layers_mut()[0].disk_type());
    let size = v.size();
    let report = match v.layers_mut()[0].check() {
        Ok(rep) => rep,
        Err(e) => bail!("vhd check: {}: {e}", path.display()),
    };
    for f in &report.findings {
        println!(
            "    | {}: {f}",
            if f.is_damage() { "ERROR" } else { "note" }
        );
    }
    let detail = format!(
        "{kind}, {size} bytes, {}/{} blocks allocated",
        report.allocated_blocks, report.total_blocks
    );
    if report.is_clean() {
        r.expect(what, Ok(detail));
    } else {
        r.fail(what, &format!("damaged: {detail}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpio::newc::{Builder, ModeFileType};

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (name, body)) in files.iter().enumerate() {
            let mut w = Builder::new(name)
                .ino(i as u32 + 1)
                .mode(0o644)
                .set_mode_file_type(ModeFileType::Regular)
                .write(&mut out, body.len() as u32);
            w.write_all(body).unwrap();
            w.finish().unwrap();
        }
        let _ = Builder::new("sbin")
            .mode(0o755)
            .set_mode_file_type(ModeFileType::Directory)
            .write(&mut out, 0)
            .finish()
            .unwrap();
        cpio::newc::trailer(&mut out).unwrap();
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn an_initramfs_is_its_early_archive_and_its_compressed_rest() {
        let early = archive(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        let conf = b"# comment\nxen-blkfront\nhv_vmbus\nhv_storvsc\nsd_mod\n";
        let main = archive(&[
            ("conf/modules", conf),
            (
                "usr/lib/modules/6.1/kernel/drivers/block/xen-blkfront.ko",
                b"x",
            ),
            ("usr/lib/modules/6.1/kernel/drivers/hv/hv_vmbus.ko", b"v"),
            (
                "usr/lib/modules/6.1/kernel/drivers/scsi/hv_storvsc.ko",
                b"s",
            ),
            ("usr/lib/modules/6.1/kernel/drivers/scsi/sd_mod.ko", b"d"),
        ]);
        let mut initrd = early.clone();
        initrd.extend([0u8; 512]);
        initrd.extend(gzip(&main));
        let files = initrd_files(&initrd).unwrap();
        assert_eq!(files.len(), 6);
        assert_eq!(files[0].0, "kernel/x86/microcode/GenuineIntel.bin");
        assert_eq!(files[1], ("conf/modules".to_string(), conf.to_vec()));
        let ok = initrd_modules(&initrd).unwrap();
        assert!(
            ok.contains("xen-blkfront.ko, hv_vmbus.ko, hv_storvsc.ko, sd_mod.ko"),
            "{ok}"
        );

        // A module missing, or present but not loaded, is named.
        let partial = gzip(&archive(&[
            ("conf/modules", conf),
            ("lib/modules/6.1/hv_vmbus.ko", b"v"),
        ]));
        let e = initrd_modules(&partial).unwrap_err();
        assert!(e.contains("xen-blkfront"), "{e}");
        let unlisted = gzip(&archive(&[
            ("conf/modules", b"hv_vmbus\n"),
            ("a/xen-blkfront.ko", b"x"),
            ("a/hv_vmbus.ko", b"v"),
            ("a/hv_storvsc.ko", b"s"),
            ("a/sd_mod.ko", b"d"),
        ]));
        let e = initrd_modules(&unlisted).unwrap_err();
        assert!(e.contains("conf/modules does not load xen-blkfront"), "{e}");
        assert!(
            initrd_files(b"BZh91AY&SY")
                .unwrap_err()
                .contains("unknown compression")
        );
        assert!(initrd_files(&early[..early.len() - 20]).is_err());
    }

    #[test]
    fn debugfs_output_gives_links_and_files() {
        let stat = "Inode: 11563   Type: symlink    Mode:  0777   Flags: 0x0\n\
                    Fast link dest: \"boot/vmlinuz-6.1.0-57-cloud-amd64\"\n";
        assert_eq!(
            link_target(stat).as_deref(),
            Some("boot/vmlinuz-6.1.0-57-cloud-amd64")
        );
        assert_eq!(link_target("Inode: 12  Type: regular\n"), None);
        assert_eq!(
            link_target("/vmlinuz: File not found by ext2_lookup\n"),
            None
        );
        let ls = "     13   40755 (2)      0      0    4096  4-Dec-2026 00:47 .\n\
                  \x20    16  100644 (1)      0      0   15312622  4-Dec-2026 00:47 initrd.img-6.1.0-57-cloud-amd64\n\
                  \x20    17  100644 (1)      0      0   14190528 26-Nov-2026 17:12 vmlinuz-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            listed_files(ls),
            [
                ("initrd.img-6.1.0-57-cloud-amd64".to_string(), 15312622),
                ("vmlinuz-6.1.0-57-cloud-amd64".to_string(), 14190528)
            ]
        );
    }
}
