//! Debian packages through apt: resolve the current versions, `apt-get download` them into
//! the cache, unpack with `dpkg-deb -x`. Nothing else is fetched.

use crate::util::{describe, shown};
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

pub const BUSYBOX: &str = "busybox-static";

/// A Debian amd64 kernel flavour: `cloud` (the test guest: small, no machine check, few
/// drivers) or the generic one a distribution installs (machine check, the full config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Cloud,
    Generic,
}

impl Flavour {
    /// The metapackage that depends on the flavour's current versioned package.
    pub fn meta(self) -> &'static str {
        match self {
            Flavour::Cloud => "linux-image-cloud-amd64",
            Flavour::Generic => "linux-image-amd64",
        }
    }

    /// Whether `package` is this flavour's versioned kernel: `linux-image-6.1.0-57-amd64`
    /// is generic, `...-cloud-amd64` cloud, and `-rt-` or `-dbg` neither.
    pub fn names(self, package: &str) -> bool {
        let Some(mid) = package
            .strip_prefix("linux-image-")
            .and_then(|p| p.strip_suffix("-amd64"))
        else {
            return false;
        };
        let abi = match self {
            Flavour::Cloud => mid.strip_suffix("-cloud"),
            Flavour::Generic => Some(mid),
        };
        abi.is_some_and(|a| {
            a.starts_with(|c: char| c.is_ascii_digit())
                && a.chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
}

impl Package {
    /// A file-name-safe key, `name_version` (an epoch's ':' becomes '%3a', as in .deb names).
    pub fn key(&self) -> String {
        format!("{}_{}", self.name, self.version.replace(':', "%3a"))
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed with {}: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first `Depends:` of `apt-cache depends` output that names a versioned kernel package
/// of `flavour`.
pub fn kernel_dependency(depends_output: &str, flavour: Flavour) -> Option<String> {
    depends_output.lines().find_map(|l| {
        let dep = l
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?
            .trim();
        flavour.names(dep).then(|| dep.to_string())
    })
}

/// The `Candidate:` of `apt-cache policy` output, unless it is "(none)".
pub fn candidate(policy_output: &str) -> Option<String> {
    policy_output.lines().find_map(|l| {
        let v = l.trim().strip_prefix("Candidate:")?.trim();
        (!v.is_empty() && v != "(none)").then(|| v.to_string())
    })
}

fn lookup(meta_or_name: &str, kernel: Option<Flavour>) -> Result<Option<Package>> {
    let name = if let Some(flavour) = kernel {
        let deps =
            output(Command::new("apt-cache").args(["depends", meta_or_name])).unwrap_or_default();
        match kernel_dependency(&deps, flavour) {
            Some(n) => n,
            None => return Ok(None),
        }
    } else {
        meta_or_name.to_string()
    };
    let policy = output(Command::new("apt-cache").args(["policy", &name]))?;
    Ok(candidate(&policy).map(|version| Package { name, version }))
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Resolves a package (or, with `kernel`, that flavour's metapackage's versioned dependency);
/// runs `apt-get update` once when the lookup finds nothing.
pub fn resolve(name: &str, kernel: Option<Flavour>) -> Result<Package> {
    if let Some(p) = lookup(name, kernel)? {
        return Ok(p);
    }
    if !APT_UPDATED.swap(true, Ordering::Relaxed) {
        eprintln!("xtask: apt knows no {name}; running apt-get update");
        let mut cmd = Command::new("apt-get");
        cmd.args(["update", "-q"]);
        let status = cmd
            .status()
            .with_context(|| format!("cannot start {}", describe(&cmd)))?;
        if !status.success() {
            bail!(
                "apt-get update failed ({status}); as root (or with sudo) it refreshes the \
                 package lists that resolving {name} needs"
            );
        }
        if let Some(p) = lookup(name, kernel)? {
            return Ok(p);
        }
    }
    Err(anyhow!(
        "apt has no candidate for {name}{}: is a Debian bookworm (or newer) source configured?",
        match kernel {
            Some(Flavour::Cloud) => " (or its linux-image-*-cloud-amd64 dependency)",
            Some(Flavour::Generic) => " (or its linux-image-*-amd64 dependency)",
            None => "",
        }
    ))
}

/// `apt-get download name=version` into `debs/`, unless that .deb is there already.
pub fn download(pkg: &Package, debs: &Path) -> Result<PathBuf> {
    let deb = debs.join(format!("{}.deb", pkg.key()));
    if deb.is_file() {
        return Ok(deb);
    }
    let tmp = debs.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", shown(&tmp)))?;
    eprintln!("xtask: apt-get download {}={}", pkg.name, pkg.version);
    let mut cmd = Command::new("apt-get");
    cmd.args(["download", "-q"]);
    if is_root() {
        // As root, apt would hand the download to its unprivileged _apt user, which cannot
        // write into the work tree, and falls back with a warning; say so up front.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd.arg(format!("{}={}", pkg.name, pkg.version))
        .current_dir(&tmp);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", describe(&cmd)))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!("{} failed with {status}", describe(&cmd));
    }
    let got: Vec<PathBuf> = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let [one] = got.as_slice() else {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "apt-get download {} left {} .deb files, expected one",
            pkg.name,
            got.len()
        );
    };
    std::fs::rename(one, &deb).with_context(|| format!("cannot move to {}", shown(&deb)))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(deb)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `dpkg-deb -x` into a fresh directory `into` (removed first).
pub fn unpack(deb: &Path, into: &Path) -> Result<()> {
    if into.exists() {
        std::fs::remove_dir_all(into).with_context(|| format!("cannot empty {}", shown(into)))?;
    }
    std::fs::create_dir_all(into)?;
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-x").arg(deb).arg(into);
    output(&mut cmd).with_context(|| format!("unpacking {}", shown(deb)))?;
    Ok(())
}

/// The one file under `dir/sub` whose name starts with `prefix`.
pub fn find_one(dir: &Path, sub: &str, prefix: &str) -> Result<PathBuf> {
    let d = dir.join(sub);
    let found: Vec<PathBuf> = std::fs::read_dir(&d)
        .with_context(|| format!("{}: no {sub}/ in the package", shown(dir)))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{}: expected one {prefix}* file, found {}",
            shown(&d),
            found.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_cache_output_is_read() {
        let deps = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            kernel_dependency(deps, Flavour::Cloud).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(kernel_dependency(deps, Flavour::Generic), None);
        let deps = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            kernel_dependency(deps, Flavour::Generic).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(kernel_dependency(deps, Flavour::Cloud), None);
        assert!(!Flavour::Generic.names("linux-image-6.1.0-57-rt-amd64"));
        assert!(!Flavour::Generic.names("linux-image-amd64"));
        assert!(!Flavour::Cloud.names("linux-image-cloud-amd64"));
        assert_eq!(
            kernel_dependency("linux-image-cloud-amd64\n", Flavour::Cloud),
            None
        );
        assert_eq!(
            kernel_dependency("x\n  Depends: initramfs-tools\n", Flavour::Cloud),
            None
        );
        let policy = "busybox-static:\n  Installed: (none)\n  Candidate: 1:1.35.0-4+deb12u1+b1\n";
        assert_eq!(candidate(policy).as_deref(), Some("1:1.35.0-4+deb12u1+b1"));
        assert_eq!(candidate("x:\n  Candidate: (none)\n"), None);
        let p = Package {
            name: "busybox-static".into(),
            version: "1:1.35.0-4".into(),
        };
        assert_eq!(p.key(), "busybox-static_1%3a1.35.0-4");
    }
}
