//! `cargo xtask image debian`: a bootable Debian 12 (bookworm) VHD built from Debian's own
//! packages, for the guests of both faces.
//!
//! **What the image is.** One ext4 file system over the whole disk — no partition table; the
//! hypervisor's disk loader reads "a whole-disk filesystem" as it reads partitioned disks —
//! labelled `debian-root`, with the fixed UUID [`ROOT_UUID`], in a dynamic VHD (2 GiB by
//! default; the VHD stores only the blocks in use). Inside: mmdebstrap's `minbase` plus
//! Debian's cloud kernel (`linux-image-cloud-amd64`), `initramfs-tools`, systemd as init,
//! udev, dbus, e2fsprogs, login and passwd; no boot loader and no `/boot/grub/grub.cfg`.
//!
//! **How it boots.** The hypervisor boots Debian's links at the root of the file system,
//! `/vmlinuz` and `/initrd.img` (to `boot/vmlinuz-<abi>-cloud-amd64` and its initrd), with
//! `root=UUID=<ROOT_UUID> ro` and the face's console (`console=hvc0` on Xen, `console=ttyS0`
//! on Hyper-V). The initramfs carries and loads `xen-blkfront` (the Xen face's disk),
//! `hv_vmbus`, `hv_storvsc` and `sd_mod` (the Hyper-V face's) — they are listed in
//! `/etc/initramfs-tools/modules`; on a face without its device a module's init fails with
//! ENODEV and stays unloaded, without a message on the console (as a QEMU boot shows). The
//! initramfs checks the root (`fsck.ext4 -a`) before it mounts it; `/etc/fstab` mounts it by
//! UUID (`errors=remount-ro`).
//!
//! **Logging in.** A getty runs on `hvc0` (Xen) and on `ttyS0` (Hyper-V): a udev rule wants
//! `serial-getty@hvc0.service` / `serial-getty@ttyS0.service` when the device appears, so
//! neither face waits for the console it does not have (systemd's getty generator also
//! starts one on the kernel's `console=`). `root` has an empty password: type `root` at the
//! `janus-debian login:` prompt, no password. A test image, not one to put on a network.
//!
//! **How it is built.** `mmdebstrap --variant=minbase --include=…` into a directory (as
//! root `--mode=root`; as another user `--mode=unshare`, which needs `uidmap` and a
//! subordinate id range in `/etc/subuid` and `/etc/subgid`; fakechroot mode is not used: its
//! tree's owners live only in fakeroot's records, which `mke2fs -d` would have to read too).
//! Its customize hook ([`recipe::customize_script`]) writes the hostname, fstab, the getty
//! rule and the module list, empties root's password, and runs `update-initramfs -u -k all`.
//! Then
//! `mke2fs -t ext4 -d TREE` makes the file system in a sparse raw file without mounting
//! anything (in unshare mode inside mmdebstrap's user namespace, where the tree is root's;
//! e2fsprogs' default ext4 features, which diskboot's reader, `ext4-view`, reads),
//! `e2fsck -fn` and the other host checks ([`checks`]) read it, and the project's VHD writer
//! converts it; the VHD is written under a temporary name beside the output and renamed
//! into place only when it has passed its checks.
//!
//! **Caching.** Beside the image, `<image>.inputs` records every input (suite, mirror,
//! package list, mmdebstrap options, the hook script, mke2fs options, the size) and their
//! SHA-256; the image is rebuilt only when that changes, or with `--force`. A Debian
//! update alone does not rebuild it (`--force` does). `<image>.packages` lists what was
//! installed. Downloaded packages are kept in `target/janus/debian-cache` for the next
//! build; mmdebstrap's full output is in `target/janus/debian-build/mmdebstrap.log`.

mod checks;
mod progress;
mod recipe;

pub use recipe::ROOT_UUID;

use crate::prereq;
use crate::util::{have, out_dir, shown};
use crate::vhd_cli::image::{Source, TempOutput, compare, write_raw, write_vhd};
use anyhow::{Context, Result, bail};
use progress::Progress;
use recipe::Recipe;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// A bootable Debian 12 VHD (Debian's cloud kernel, systemd, a getty on hvc0 and ttyS0,
    /// root without a password) from Debian's packages with mmdebstrap. Rebuilt only when
    /// its inputs change.
    Debian(DebianArgs),
}

#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct DebianArgs {
    /// Where to write the image; default target/janus/debian.vhd.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The file system's size, K/M/G/T (powers of 1024). The dynamic VHD stores only the
    /// blocks in use.
    #[arg(long, default_value = recipe::DEFAULT_SIZE)]
    pub size: String,
    /// A Debian mirror URL (its `bookworm` suite only) instead of deb.debian.org's
    /// bookworm, bookworm-updates and bookworm-security.
    #[arg(long)]
    pub mirror: Option<String>,
    /// Build even when the image is up to date.
    #[arg(long)]
    pub force: bool,
    /// Only check an existing image (file system, kernel, initramfs, VHD); build nothing.
    #[arg(long, conflicts_with_all = ["force", "mirror", "size"])]
    pub check: bool,
}

/// `cargo xtask image …`.
pub fn run(cmd: Cmd) -> Result<bool> {
    match cmd {
        Cmd::Debian(args) => debian(&args),
    }
}

/// Builds the default image unless it is up to date (what the suite's Debian case needs).
pub fn ensure_default() -> Result<PathBuf> {
    let args = DebianArgs {
        output: None,
        size: recipe::DEFAULT_SIZE.to_string(),
        mirror: None,
        force: false,
        check: false,
    };
    if !debian(&args)? {
        anyhow::bail!("the Debian image could not be built");
    }
    Ok(default_output())
}

/// The image `cargo xtask image debian` writes by default.
pub fn default_output() -> PathBuf {
    out_dir().join("debian.vhd")
}

fn debian(args: &DebianArgs) -> Result<bool> {
    let out = args.output.clone().unwrap_or_else(default_output);
    if args.check {
        return check(&out);
    }
    let recipe = Recipe {
        mirror: args.mirror.clone(),
        size: recipe::parse_size(&args.size).map_err(anyhow::Error::msg)?,
    };
    let stamp = beside(&out, "inputs");
    let fingerprint = recipe.fingerprint();
    if out.is_file() {
        let recorded = std::fs::read_to_string(&stamp).unwrap_or_default();
        match recipe::stamp_fingerprint(&recorded) {
            Some(f) if f == fingerprint && !args.force => {
                println!(
                    "debian: {} is up to date (inputs {}); --force rebuilds it, --check checks it",
                    shown(&out),
                    &fingerprint[..12]
                );
                return Ok(true);
            }
            Some(f) if f == fingerprint => println!("debian: rebuilding (--force)"),
            _ => println!(
                "debian: the inputs changed since {} was built (see {}): rebuilding",
                shown(&out),
                shown(&stamp)
            ),
        }
    }
    build(&recipe, &out)
}

/// `out` with `.ext` added: `debian.vhd.inputs`.
fn beside(out: &Path, ext: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// How mmdebstrap gets root's powers in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Running as root: chroot and mount directly.
    Root,
    /// Another user: a user namespace with the subordinate ids of /etc/subuid.
    Unshare,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::Unshare => "unshare",
        }
    }

    /// `program` as root of the tree: directly as root, or inside mmdebstrap's user
    /// namespace, where the tree's files are root's.
    fn command(self, program: &Path) -> Command {
        match self {
            Mode::Root => Command::new(program),
            Mode::Unshare => {
                let mut c = Command::new("mmdebstrap");
                c.arg("--unshare-helper").arg(program);
                c
            }
        }
    }

    fn pick() -> Result<Mode> {
        if prereq::is_root() {
            return Ok(Mode::Root);
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "$USER".into());
        let mut lacks = Vec::new();
        if !have("newuidmap") || !have("newgidmap") {
            lacks.push("newuidmap and newgidmap (sudo apt-get install uidmap)".to_string());
        }
        let has_range = |file: &str| {
            std::fs::read_to_string(file).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.split(':').next() == Some(user.as_str()))
            })
        };
        if !has_range("/etc/subuid") || !has_range("/etc/subgid") {
            lacks.push(format!(
                "a subordinate id range for {user} in /etc/subuid and /etc/subgid \
                 (sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user})"
            ));
        }
        let userns = Command::new("unshare")
            .args(["--user", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !userns {
            lacks.push(
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 \
                 and user.max_user_namespaces > 0)"
                    .to_string(),
            );
        }
        if lacks.is_empty() {
            return Ok(Mode::Unshare);
        }
        bail!(
            "building the Debian image needs root, or mmdebstrap's unshare mode, which lacks: {}",
            lacks.join("; ")
        )
    }
}

/// Where mmdebstrap's mounts would be, had an interrupted run left one under `tree`.
fn mounts_under(tree: &Path) -> Option<String> {
    let tree = std::fs::canonicalize(tree).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .find(|m| Path::new(m).starts_with(&tree))
}

/// Removes a tree mmdebstrap made (never through a mount left inside it).
fn remove_tree(tree: &Path, mode: Mode) -> Result<()> {
    if tree.symlink_metadata().is_err() {
        return Ok(());
    }
    if let Some(m) = mounts_under(tree) {
        bail!(
            "{m} is still mounted (left by an interrupted build): unmount it with \
             `umount -R {}` and run again",
            tree.display()
        );
    }
    if mode == Mode::Unshare {
        // The tree's files belong to the namespace's ids; only its root can remove them.
        let _ = mode
            .command(Path::new("/usr/bin/find"))
            .arg(tree)
            .args(["-mindepth", "1", "-delete"])
            .status();
    }
    std::fs::remove_dir_all(tree).with_context(|| format!("cannot remove {}", tree.display()))
}

/// The scratch files of a build, removed however it ends.
struct Scratch {
    tree: PathBuf,
    raw: PathBuf,
    mode: Mode,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.tree, self.mode) {
            eprintln!("debian: {e:#}");
        }
        let _ = std::fs::remove_file(&self.raw);
    }
}

/// The build directory (creating target/janus too), held by this build alone: a second
/// build waits for the first.
fn lock_work() -> Result<(PathBuf, std::fs::File)> {
    let work = out_dir().join("debian-build");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", shown(&work)))?;
    let lock = std::fs::File::create(work.join("lock"))?;
    if lock.try_lock().is_err() {
        println!("debian: waiting for another image build to finish");
        lock.lock()?;
    }
    Ok((work, lock))
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

fn build(recipe: &Recipe, out: &Path) -> Result<bool> {
    let p = Progress::new();
    prereq::tools(&[&prereq::MMDEBSTRAP, &prereq::E2FSPROGS])?;
    let mode = Mode::pick()?;
    let (work, _lock) = lock_work()?;
    let scratch = Scratch {
        tree: work.join("tree"),
        raw: work.join("root.ext4"),
        mode,
    };
    remove_tree(&scratch.tree, mode)?;
    let _ = std::fs::remove_file(&scratch.raw);
    let log = work.join("mmdebstrap.log");
    let mirror = recipe.mirror.as_deref().unwrap_or("deb.debian.org");
    p.say(&format!(
        "building {}: Debian {} from {mirror}, a {} ext4 file system, mmdebstrap --mode={}",
        shown(out),
        recipe::SUITE,
        human(recipe.size),
        mode.name()
    ));

    p.say(&format!(
        "fetching and installing packages (log: {})",
        shown(&log)
    ));
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(format!("--mode={}", mode.name()))
        .args(["--verbose", "--format=directory"]);
    let cache = out_dir().join("debian-cache");
    let cache_str = cache.to_string_lossy().into_owned();
    let cached =
        !cache_str.contains(char::is_whitespace) && std::fs::create_dir_all(&cache).is_ok();
    if cached {
        cmd.args([
            "--skip=essential/unlink".to_string(),
            "--setup-hook=mkdir -p \"$1/var/cache/apt/archives\"".to_string(),
            format!("--setup-hook=sync-in {cache_str} /var/cache/apt/archives/"),
            format!("--customize-hook=sync-out /var/cache/apt/archives {cache_str}"),
        ]);
    }
    cmd.args(recipe.mmdebstrap_args(&scratch.tree.to_string_lossy()));
    progress::stream(&mut cmd, &log, &p, mirror)?;

    let installed = installed(&scratch.tree)?;
    let kernel = installed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|n| {
            n.starts_with("linux-image-") && n.chars().nth(12).is_some_and(|c| c.is_ascii_digit())
        })
        .unwrap_or("(none)")
        .trim_start_matches("linux-image-")
        .to_string();
    p.say(&format!(
        "installed {} packages; kernel {kernel}",
        installed.lines().count()
    ));
    if cached {
        prune_cache(&cache, &installed);
    }

    p.say(&format!(
        "making the ext4 file system ({}, UUID {ROOT_UUID}) from the tree",
        human(recipe.size)
    ));
    make_fs(&scratch, recipe.size)?;
    remove_tree(&scratch.tree, mode)?;

    p.say("checking the file system");
    let mut report = checks::Report::default();
    checks::filesystem(&scratch.raw, &work, &mut report)?;
    if !report.failed.is_empty() {
        bail!(
            "the new file system fails its checks: {}",
            report.failed.join("; ")
        );
    }

    p.say("converting to a dynamic VHD");
    let tmp = TempOutput::new(out).map_err(anyhow::Error::msg)?;
    let mut src = Source::open(&scratch.raw).map_err(anyhow::Error::msg)?;
    write_vhd(
        &mut src,
        tmp.path(),
        vhd::DiskType::Dynamic,
        recipe.size,
        true,
    )
    .map_err(anyhow::Error::msg)?;
    drop(src);

    p.say("checking the VHD");
    checks::vhd(tmp.path(), &mut report)?;
    match compare(tmp.path(), &scratch.raw).map_err(anyhow::Error::msg)? {
        None => println!("  check: the VHD holds the file system byte for byte: ok"),
        Some(off) => report.failed.push(format!(
            "the VHD differs from the file system at byte {off}"
        )),
    }
    if !report.failed.is_empty() {
        bail!("the new VHD fails its checks: {}", report.failed.join("; "));
    }

    let stamp = beside(out, "inputs");
    let _ = std::fs::remove_file(&stamp);
    tmp.commit().map_err(anyhow::Error::msg)?;
    write_beside(&stamp, &recipe.stamp())?;
    write_beside(&beside(out, "packages"), &installed)?;
    let on_disk = std::fs::metadata(out)?.len();
    p.say(&format!(
        "done: {} ({} virtual, {} on disk), kernel {kernel}",
        shown(out),
        human(recipe.size),
        human(on_disk)
    ));
    println!(
        "debian: boots /vmlinuz + /initrd.img with root=UUID={ROOT_UUID} ro; \
         log in as root (no password) on hvc0 (Xen) or ttyS0 (Hyper-V)"
    );
    Ok(true)
}

/// `name version arch` of every package installed in `tree`, by the host's dpkg-query.
fn installed(tree: &Path) -> Result<String> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            tree.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version} ${Architecture}\\n"])
        .output()
        .context("cannot run dpkg-query")?;
    if !out.status.success() {
        bail!(
            "dpkg-query in the new tree failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drops what the cache should not keep (see [`recipe::stale_cache_entries`]).
fn prune_cache(cache: &Path, installed: &str) {
    let Ok(dir) = std::fs::read_dir(cache) else {
        return;
    };
    let names: Vec<String> = dir
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    for f in recipe::stale_cache_entries(installed, &names) {
        let p = cache.join(f);
        let _ = if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
    }
}

/// `mke2fs -d` from the tree into a sparse raw file of `size` bytes.
fn make_fs(s: &Scratch, size: u64) -> Result<()> {
    let f = std::fs::File::create(&s.raw)
        .with_context(|| format!("cannot create {}", shown(&s.raw)))?;
    f.set_len(size)?;
    if s.mode == Mode::Unshare {
        // The namespace's root is not this user: let it write the file.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o666))?;
    }
    drop(f);
    let out = s
        .mode
        .command(&checks::e2fs("mke2fs"))
        .arg("-d")
        .arg(&s.tree)
        .args(Recipe::mke2fs_args())
        .arg(&s.raw)
        .output()
        .context("cannot run mke2fs")?;
    if !out.status.success() {
        let why = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let hint = if why.contains("Could not allocate") || why.contains("No space") {
            format!(
                " (the tree, about {}, does not fit in {}: give a larger --size)",
                human(tree_bytes(&s.tree)),
                human(size)
            )
        } else {
            String::new()
        };
        bail!("mke2fs -d failed{hint}: {}", why.trim());
    }
    Ok(())
}

/// The bytes of the files under `dir` (what this user can see of them).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Writes `path` through a temporary name.
fn write_beside(path: &Path, text: &str) -> Result<()> {
    let tmp = beside(path, "tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// `--check`: the checks of a fresh build, on an existing image.
fn check(out: &Path) -> Result<bool> {
    if !out.is_file() {
        bail!(
            "{}: no such image (build it with `cargo xtask image debian`)",
            shown(out)
        );
    }
    let p = Progress::new();
    prereq::tools(&[&prereq::E2FSPROGS])?;
    let (work, _lock) = lock_work()?;
    if let Some(f) = std::fs::read_to_string(beside(out, "inputs"))
        .ok()
        .as_deref()
        .and_then(recipe::stamp_fingerprint)
    {
        p.say(&format!("checking {} (inputs {})", shown(out), &f[..12]));
    } else {
        p.say(&format!(
            "checking {} (no record of its inputs)",
            shown(out)
        ));
    }
    let mut report = checks::Report::default();
    checks::vhd(out, &mut report)?;
    let raw = work.join("check.raw");
    let _ = std::fs::remove_file(&raw);
    p.say("reading the file system out of the VHD");
    let r = Source::open(out)
        .and_then(|mut src| write_raw(&mut src, &raw))
        .map_err(anyhow::Error::msg);
    let r = r.and_then(|()| {
        p.say("checking the file system");
        checks::filesystem(&raw, &work, &mut report)
    });
    let _ = std::fs::remove_file(&raw);
    r?;
    if report.failed.is_empty() {
        p.say("all checks passed");
        Ok(true)
    } else {
        p.say(&format!(
            "{} check(s) FAILED: {}",
            report.failed.len(),
            report.failed.join("; ")
        ));
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<DebianArgs, clap::Error> {
        let argv = ["cargo xtask", "image", "debian"]
            .into_iter()
            .chain(args.iter().copied());
        let cli = crate::Cli::try_parse_from(argv)?;
        match cli.cmd {
            crate::Cmd::Image {
                what: Cmd::Debian(a),
            } => Ok(a),
            _ => panic!("not image debian"),
        }
    }

    #[test]
    fn the_verb_takes_output_size_force_and_check() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            a,
            DebianArgs {
                output: None,
                size: "2G".into(),
                mirror: None,
                force: false,
                check: false,
            }
        );
        let a = parse(&["-o", "/tmp/x.vhd", "--size", "3G", "--force"]).unwrap();
        assert_eq!(a.output.as_deref(), Some(Path::new("/tmp/x.vhd")));
        assert_eq!((a.size.as_str(), a.force), ("3G", true));
        let a = parse(&["--output", "y.vhd", "--check"]).unwrap();
        assert!(a.check && a.output.is_some());
        let a = parse(&["--mirror", "http://m/debian"]).unwrap();
        assert_eq!(a.mirror.as_deref(), Some("http://m/debian"));
        assert!(parse(&["--check", "--force"]).is_err());
        assert!(parse(&["--check", "--size", "3G"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["extra"]).is_err());
    }

    #[test]
    fn records_sit_beside_the_image() {
        assert_eq!(
            beside(Path::new("target/janus/debian.vhd"), "inputs"),
            Path::new("target/janus/debian.vhd.inputs")
        );
        assert_eq!(default_output(), out_dir().join("debian.vhd"));
        assert_eq!(human(2 << 30), "2 GiB");
        assert_eq!(human(1536 << 20), "1536 MiB");
    }

    #[test]
    fn a_bad_size_is_refused_before_anything_runs() {
        let a = parse(&["--size", "12Q", "-o", "/nonexistent/dir/x.vhd"]).unwrap();
        let e = debian(&a).unwrap_err().to_string();
        assert!(e.contains("12Q"), "{e}");
    }
}
