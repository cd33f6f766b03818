//! What goes into the image, as data and text: the package set, mmdebstrap's options, the
//! customize hook, mke2fs's options, and the fingerprint over all of them that decides
//! whether a cached image is still current. Pure: no I/O, unit-tested.

use sha2::Digest;

/// Bumped when the build changes in a way the recorded inputs do not show.
pub const RECIPE_VERSION: u32 = 1;
/// Debian 12.
pub const SUITE: &str = "bookworm";
/// Essential + Priority: required + apt; everything else is named in [`PACKAGES`].
pub const VARIANT: &str = "minbase";
/// Installed on top of the variant (with their dependencies, without recommends).
pub const PACKAGES: &[&str] = &[
    // Debian's cloud kernel: xen-blkfront, hv_vmbus, hv_storvsc as modules.
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "systemd",
    "systemd-sysv",
    "udev",
    // The system bus: logind, and `poweroff`/`hostnamectl` as on any Debian with systemd.
    "dbus",
    "e2fsprogs",
    "login",
    "passwd",
];
/// Modules the initramfs carries and loads before it looks for the root: the Xen face's
/// disk, and the Hyper-V face's (VMBus, storvsc, SCSI disks).
pub const INITRD_MODULES: &[&str] = &["xen-blkfront", "hv_vmbus", "hv_storvsc", "sd_mod"];
/// The file system's UUID: fixed, so that `root=UUID=` is known before the image exists.
pub const ROOT_UUID: &str = "6a616e75-7364-4562-8961-6e2d726f6f74";
pub const LABEL: &str = "debian-root";
pub const HOSTNAME: &str = "janus-debian";
/// The udev rule that starts the console getties (see [`customize_script`]).
pub const GETTY_RULES: &str = "/etc/udev/rules.d/90-janus-console-getty.rules";
/// Documentation, manual pages and translations are left out of the image (copyright files
/// stay), as Debian's container images do; `dpkg` keeps leaving them out after the build.
const DPKG_OPTS: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
];
pub const DEFAULT_SIZE: &str = "2G";
/// initramfs-tools settings: the root's type, which the fsck hook cannot probe at build time
/// (the UUID's device does not exist there), so that the initramfs checks the root before
/// mounting it; gzip, which the image has (zstd, the default, it does not).
const INITRAMFS_CONF: &str = "FSTYPE=ext4\nCOMPRESS=gzip";

/// The inputs of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    /// A mirror URL instead of mmdebstrap's default for a stable suite (deb.debian.org's
    /// `bookworm`, `bookworm-updates` and `bookworm-security`).
    pub mirror: Option<String>,
    /// The file system's size in bytes.
    pub size: u64,
}

impl Recipe {
    /// mmdebstrap's options that shape the tree (not the machine-specific ones: mode,
    /// cache hooks, paths), then the suite, the target and the mirror.
    pub fn mmdebstrap_args(&self, target: &str) -> Vec<String> {
        let mut a = vec![
            format!("--variant={VARIANT}"),
            format!("--include={}", PACKAGES.join(",")),
            "--aptopt=Acquire::Languages \"none\"".to_string(),
        ];
        a.extend(DPKG_OPTS.iter().map(|o| format!("--dpkgopt={o}")));
        a.push(format!("--customize-hook={}", customize_script()));
        a.push(SUITE.into());
        a.push(target.into());
        a.extend(self.mirror.clone());
        a
    }

    /// mke2fs's options after `-d TREE` (the file comes last).
    pub fn mke2fs_args() -> Vec<String> {
        ["-q", "-F", "-t", "ext4", "-L", LABEL, "-U", ROOT_UUID]
            .map(String::from)
            .to_vec()
    }

    /// Every input, as text: what the fingerprint covers and what is stored beside the
    /// image, so that two builds can be compared with `diff`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "janus debian image, recipe {RECIPE_VERSION}\n\
             suite: {SUITE}\n\
             mirror: {}\n\
             size: {}\n\
             mke2fs: {}\n\
             mmdebstrap:\n",
            self.mirror
                .as_deref()
                .unwrap_or("(mmdebstrap's default for the suite)"),
            self.size,
            Self::mke2fs_args().join(" "),
        );
        for a in self.mmdebstrap_args("TARGET") {
            s.push_str("  ");
            s.push_str(&a.replace('\n', "\n    "));
            s.push('\n');
        }
        s
    }

    /// SHA-256 of [`Recipe::describe`], in hex.
    pub fn fingerprint(&self) -> String {
        hex(&sha2::Sha256::digest(self.describe().as_bytes()))
    }

    /// The stamp stored beside the image: the fingerprint, then the inputs.
    pub fn stamp(&self) -> String {
        format!("sha256 {}\n{}", self.fingerprint(), self.describe())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint a stamp records (its first line), if it is one.
pub fn stamp_fingerprint(stamp: &str) -> Option<&str> {
    stamp
        .lines()
        .next()?
        .strip_prefix("sha256 ")
        .filter(|h| h.len() == 64)
}

/// The `/etc/fstab` line: the root file system by UUID, checked at boot, remounted
/// read-only on errors (Debian's installer writes the same).
pub fn fstab_line() -> String {
    format!("UUID={ROOT_UUID}\t/\text4\terrors=remount-ro\t0\t1")
}

/// The udev rule: a getty on the Xen console (`hvc0`) and one on the Hyper-V face's serial
/// port (`ttyS0`), each wanted when its device appears (the Xen face's VM has a serial port
/// too, but its console is hvc0: [`TTYS0_DROP_IN`] keeps a second login prompt off it). Enabling the two `serial-getty@`
/// units statically would make every boot wait 90 s for the device the other face lacks
/// (the unit binds to its device); a serial port that does not answer (`type` 0, unknown)
/// gets none.
pub fn getty_rules() -> String {
    "# Janus test image: a login prompt on the console of each face: hvc0 (Xen) and\n\
     # ttyS0 (Hyper-V), started when the device appears.\n\
     ACTION==\"add\", SUBSYSTEM==\"tty\", KERNEL==\"hvc0\", TAG+=\"systemd\", \
     ENV{SYSTEMD_WANTS}+=\"serial-getty@hvc0.service\"\n\
     ACTION==\"add\", SUBSYSTEM==\"tty\", KERNEL==\"ttyS0\", ATTR{type}!=\"0\", \
     TAG+=\"systemd\", ENV{SYSTEMD_WANTS}+=\"serial-getty@ttyS0.service\"\n"
        .to_string()
}

/// The initramfs's last udev step, in place of Debian's (a same-named script under
/// /etc/initramfs-tools wins): stop udev and wait until it has stopped before the root is
/// switched. `udevadm control --exit` returns before udev's workers are done, and one that
/// writes under /run after /run has moved puts files into the initramfs while `run-init`
/// deletes it, which then fails ("nuking initramfs contents: Directory not empty") and the
/// kernel panics; seen now and then on the Hyper-V face, whose disk appears late in the boot.
pub const UDEV_INIT_BOTTOM: &str = r#"#!/bin/sh
# Janus test image (see xtask's debian_image recipe): udev stops, and is waited for, before
# the switch to the real root.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
prereqs) prereqs; exit 0 ;;
esac
udevadm settle --timeout=10 || true
udevadm control --exit
tries=0
while [ "$tries" -lt 10 ]; do
    busy=
    for f in /proc/[0-9]*/comm; do
        name=
        { read -r name < "$f"; } 2>/dev/null
        case "$name" in systemd-udevd|"(udev-worker)") busy=1 ;; esac
    done
    [ -z "$busy" ] && break
    sleep 1
    tries=$((tries + 1))
done
mount -n -o move /dev "${rootmnt}/dev" || mount -n --move /dev "${rootmnt}/dev"
if command -v nuke >/dev/null; then nuke /dev; else rm -rf /dev; fi
ln -s "${rootmnt}/dev" /dev
"#;
pub const UDEV_INIT_BOTTOM_PATH: &str = "/etc/initramfs-tools/scripts/init-bottom/udev";

/// A drop-in for `serial-getty@ttyS0`: none under Xen, whose console is hvc0.
pub const TTYS0_DROP_IN: &str = "[Unit]\nConditionVirtualization=!xen\n";
pub const TTYS0_DROP_IN_PATH: &str = "/etc/systemd/system/serial-getty@ttyS0.service.d/janus.conf";

/// What the suite's Debian case runs once the system is up, when the kernel command line says
/// `janus.check` (otherwise nothing): the face systemd detects, the root device, whether the
/// system is healthy (`systemctl is-system-running`, or what failed), a marker of this boot's
/// face on the root file system beside those of earlier boots, then a power-off. Lines go to
/// the console as `JANUS-DEBIAN …`; the host checks the markers in the image afterwards.
pub const CHECK_SCRIPT: &str = r#"#!/bin/sh
grep -qw janus.check /proc/cmdline || exit 0
say() { echo "JANUS-DEBIAN $*" > /dev/console; }
face=$(systemd-detect-virt)
say "face $face"
say "root $(findmnt -no SOURCE /)"
state=$(systemctl is-system-running --wait)
if [ "$state" = running ]; then
    say "system running"
else
    say "system $state: $(systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '
' ' ')"
fi
mkdir -p /var/lib/janus
echo "$face" > "/var/lib/janus/seen-$face"
sync
say "seen $(ls /var/lib/janus | tr '
' ' ')"
systemctl poweroff
"#;

/// Its unit: a simple service (started, not awaited), so that waiting for the system to be
/// running inside it cannot wait on itself.
pub const CHECK_UNIT: &str = "[Unit]\nDescription=Janus boot check (janus.check on the kernel command line)\n\
After=multi-user.target\n\n[Service]\nType=simple\nExecStart=/usr/local/sbin/janus-check\n\n\
[Install]\nWantedBy=multi-user.target\n";

/// The customize hook: run by mmdebstrap on the host (`sh`, the tree in `$1`) after every
/// package is installed; commands for the system itself run in it with `chroot "$1"`.
pub fn customize_script() -> String {
    let modules = INITRD_MODULES.join("\n");
    format!(
        r#"set -eu
root="$1"
echo "janus: configuring the image"
echo {HOSTNAME} > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
printf '%s\n' '{fstab}' > "$root/etc/fstab"
echo "janus: root logs in without a password"
chroot "$root" passwd --delete root
mkdir -p "$root/etc/udev/rules.d"
cat > "$root{GETTY_RULES}" <<'EOF'
{rules}EOF
mkdir -p "$(dirname "$root{TTYS0_DROP_IN_PATH}")"
printf '{ttys0}' > "$root{TTYS0_DROP_IN_PATH}"
ln -sf /dev/null "$root/etc/systemd/system/systemd-firstboot.service"
echo "janus: the boot check (janus.check)"
mkdir -p "$root/usr/local/sbin"
cat > "$root/usr/local/sbin/janus-check" <<'EOF'
{check}EOF
chmod 755 "$root/usr/local/sbin/janus-check"
printf '{unit}' > "$root/etc/systemd/system/janus-check.service"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/janus-check.service "$root/etc/systemd/system/multi-user.target.wants/janus-check.service"
echo "janus: the initramfs loads {mods}"
mkdir -p "$root/etc/initramfs-tools/conf.d"
printf '%s\n' '{initramfs_conf}' > "$root/etc/initramfs-tools/conf.d/janus"
cat >> "$root/etc/initramfs-tools/modules" <<'EOF'
{modules}
EOF
mkdir -p "$(dirname "$root{UDEV_INIT_BOTTOM_PATH}")"
cat > "$root{UDEV_INIT_BOTTOM_PATH}" <<'EOF'
{udev_bottom}EOF
chmod 755 "$root{UDEV_INIT_BOTTOM_PATH}"
chroot "$root" update-initramfs -u -k all
test -L "$root/vmlinuz" && test -L "$root/initrd.img"
echo "janus: configured"
"#,
        fstab = fstab_line(),
        rules = getty_rules(),
        ttys0 = TTYS0_DROP_IN,
        udev_bottom = UDEV_INIT_BOTTOM,
        check = CHECK_SCRIPT,
        unit = CHECK_UNIT,
        mods = INITRD_MODULES.join(", "),
        initramfs_conf = INITRAMFS_CONF,
    )
}

/// A size with an optional K/M/G/T suffix (powers of 1024, `iB` allowed), in bytes: a whole
/// number of 512-byte sectors, at most 2040 GiB (the VHD format's limit).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bytes = crate::vhd_cli::size::parse(s)?;
    if !bytes.is_multiple_of(512) {
        return Err(format!(
            "size '{s}': not a whole number of 512-byte sectors"
        ));
    }
    if bytes > 2040u64 << 30 {
        return Err(format!("size '{s}': a VHD holds at most 2040 GiB"));
    }
    if bytes < 64 << 20 {
        return Err(format!("size '{s}': too small for a Debian system"));
    }
    Ok(bytes)
}

/// The entries of `cache` to remove: `.deb` files that no installed package (`name version
/// arch` lines, as `dpkg-query -W -f '${Package} ${Version} ${Architecture}\n'` prints them)
/// names, which an older build downloaded and nothing uses any more, and apt's `lock` and
/// `partial/`, which come out with the packages and which another user could not read.
pub fn stale_cache_entries(installed: &str, cache: &[String]) -> Vec<String> {
    let keep: std::collections::HashSet<String> = installed
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (p, v, a) = (w.next()?, w.next()?, w.next()?);
            Some(format!("{p}_{}_{a}.deb", v.replace(':', "%3a")))
        })
        .collect();
    cache
        .iter()
        .filter(|f| !keep.contains(*f))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe {
            mirror: None,
            size: 2 << 30,
        }
    }

    #[test]
    fn the_fingerprint_follows_every_input() {
        let base = recipe();
        let fp = base.fingerprint();
        assert_eq!(fp.len(), 64);
        assert_eq!(fp, recipe().fingerprint(), "deterministic");
        let bigger = Recipe {
            size: 3 << 30,
            ..recipe()
        };
        let mirrored = Recipe {
            mirror: Some("http://mirror.example/debian".into()),
            ..recipe()
        };
        assert_ne!(fp, bigger.fingerprint());
        assert_ne!(fp, mirrored.fingerprint());
        assert_ne!(bigger.fingerprint(), mirrored.fingerprint());
        // The inputs text names what changed, and carries the packages and the hook.
        let d = base.describe();
        assert!(d.contains("size: 2147483648"), "{d}");
        assert!(d.contains("linux-image-cloud-amd64"), "{d}");
        assert!(d.contains("update-initramfs -u -k all"), "{d}");
        assert!(d.contains(&format!("-U {ROOT_UUID}")), "{d}");
        assert!(
            mirrored
                .describe()
                .contains("mirror: http://mirror.example/debian")
        );
    }

    #[test]
    fn a_stamp_gives_back_its_fingerprint() {
        let r = recipe();
        assert_eq!(
            stamp_fingerprint(&r.stamp()),
            Some(r.fingerprint().as_str())
        );
        assert_eq!(stamp_fingerprint(""), None);
        assert_eq!(stamp_fingerprint("sha256 abc\n"), None);
        assert_eq!(stamp_fingerprint("garbage\n"), None);
    }

    #[test]
    fn the_hook_roots_by_uuid_and_starts_both_getties() {
        let s = customize_script();
        assert!(s.starts_with("set -eu\n"));
        let fstab = fstab_line();
        assert_eq!(
            fstab,
            "UUID=6a616e75-7364-4562-8961-6e2d726f6f74\t/\text4\terrors=remount-ro\t0\t1"
        );
        assert!(
            s.contains(&format!("'{fstab}' > \"$root/etc/fstab\"")),
            "{s}"
        );
        let rules = getty_rules();
        assert!(rules.contains("KERNEL==\"hvc0\""));
        assert!(rules.contains("SYSTEMD_WANTS}+=\"serial-getty@hvc0.service\""));
        assert!(rules.contains("KERNEL==\"ttyS0\", ATTR{type}!=\"0\""));
        assert!(rules.contains("SYSTEMD_WANTS}+=\"serial-getty@ttyS0.service\""));
        // Every rule is one line (udev has no continuation without a backslash).
        assert_eq!(rules.lines().filter(|l| l.starts_with("ACTION")).count(), 2);
        assert!(s.contains(&format!(
            "cat > \"$root{GETTY_RULES}\" <<'EOF'\n{rules}EOF\n"
        )));
        assert!(s.contains("chroot \"$root\" passwd --delete root"));
        assert!(s.contains(&format!("echo {HOSTNAME} > \"$root/etc/hostname\"")));
        assert!(
            s.contains("'FSTYPE=ext4\nCOMPRESS=gzip' > \"$root/etc/initramfs-tools/conf.d/janus\"")
        );
        // The modules are listed before the initramfs is made again.
        let listed = s
            .find("xen-blkfront\nhv_vmbus\nhv_storvsc\nsd_mod\nEOF")
            .unwrap();
        assert!(s.find("update-initramfs").unwrap() > listed);
    }

    #[test]
    fn mmdebstrap_gets_the_package_list_and_the_hook() {
        let a = recipe().mmdebstrap_args("/t");
        assert!(a.contains(&"--variant=minbase".to_string()));
        let inc = a.iter().find(|x| x.starts_with("--include=")).unwrap();
        for p in [
            "linux-image-cloud-amd64",
            "systemd",
            "systemd-sysv",
            "udev",
            "initramfs-tools",
            "login",
            "passwd",
        ] {
            assert!(inc.split([',', '=']).any(|w| w == p), "{p} in {inc}");
        }
        assert!(a.contains(&format!("--customize-hook={}", customize_script())));
        assert_eq!(&a[a.len() - 2..], ["bookworm", "/t"]);
        let m = Recipe {
            mirror: Some("http://m/debian".into()),
            ..recipe()
        }
        .mmdebstrap_args("/t");
        assert_eq!(&m[m.len() - 3..], ["bookworm", "/t", "http://m/debian"]);
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1536M"), Ok(1536 << 20));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("131072K"), Ok(128 << 20));
        for bad in ["", "G", "2Q", "-1G", "1.5G", "1000001", "3000G", "1M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_installed_packages_stay_in_the_cache() {
        let installed = "systemd 252.39-1~deb12u2 amd64\nlibc6 2.36-9+deb12u13 amd64\n\
                         base-passwd 1:3.6.1 amd64\n";
        let cache: Vec<String> = [
            "systemd_252.39-1~deb12u2_amd64.deb",
            "systemd_252.38-1~deb12u1_amd64.deb",
            "libc6_2.36-9+deb12u13_amd64.deb",
            "base-passwd_1%3a3.6.1_amd64.deb",
            "lock",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            stale_cache_entries(installed, &cache),
            ["systemd_252.38-1~deb12u1_amd64.deb", "lock"]
        );
    }
}
