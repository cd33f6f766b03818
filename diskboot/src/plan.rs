//! What to boot from a filesystem: the default entry of `/boot/grub/grub.cfg` (or
//! `/grub/grub.cfg` on a filesystem that is `/boot` itself), else Debian's `/vmlinuz` and
//! `/initrd.img` links with `root=UUID=<that filesystem> ro`; then the face's console unless
//! the arguments name one, then the manifest's `cmdline`.

use crate::grub;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The filesystem as the planner needs it; the caller's ext4 reader implements it.
pub trait FileSystem {
    /// The file at `path` (links followed), at most `max` bytes; `Ok(None)` when there is no
    /// such file.
    fn read(&mut self, path: &str, max: usize) -> Result<Option<Vec<u8>>, String>;
    /// Whether a regular file is at `path` (links followed).
    fn is_file(&mut self, path: &str) -> Result<bool, String>;
    /// The filesystem's UUID.
    fn uuid(&self) -> [u8; 16];
}

/// The console a face's Linux writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    Xen,
    HyperV,
    None,
}

impl Face {
    fn console(self) -> &'static str {
        match self {
            Face::Xen => "console=hvc0",
            Face::HyperV | Face::None => "console=ttyS0",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Paths inside the filesystem.
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: String,
    /// Where the choice came from, for the log.
    pub source: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Neither a grub.cfg nor Debian's links.
    NoKernel,
    Grub(grub::Error),
    /// grub.cfg names a file that is not there.
    Missing(String),
    /// The filesystem could not be read.
    Fs(String),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NoKernel => f.write_str(
                "no kernel found: neither /boot/grub/grub.cfg nor Debian's /vmlinuz link",
            ),
            Error::Grub(e) => write!(f, "{e}"),
            Error::Missing(p) => write!(f, "{p} (named by grub.cfg) is not on the disk"),
            Error::Fs(e) => write!(f, "the filesystem cannot be read: {e}"),
        }
    }
}

/// The largest configuration file read.
const CONFIG_MAX: usize = 1 << 20;

pub fn uuid_string(u: &[u8; 16]) -> String {
    let h =
        |r: core::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

fn text(b: Option<Vec<u8>>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Decides what `fs` boots on `face`, with the manifest's `extra` arguments last.
pub fn plan(fs: &mut dyn FileSystem, face: Face, extra: &str) -> Result<Plan, Error> {
    let mut found = None;
    for (cfg, env) in [
        ("/boot/grub/grub.cfg", "/boot/grub/grubenv"),
        ("/grub/grub.cfg", "/grub/grubenv"),
    ] {
        if let Some(c) = text(fs.read(cfg, CONFIG_MAX).map_err(Error::Fs)?) {
            let e = text(fs.read(env, CONFIG_MAX).map_err(Error::Fs)?);
            let entry = grub::default_entry(&c, e.as_deref()).map_err(Error::Grub)?;
            found = Some((entry, "grub.cfg"));
            break;
        }
    }
    let (kernel, initrd, args, source) = match found {
        Some((e, source)) => {
            // GRUB paths may name a device first, `(hd0,gpt2)/boot/...`: the planner reads
            // the one filesystem it was given.
            let strip = |p: &str| match p.find(')') {
                Some(i) if p.starts_with('(') => p[i + 1..].to_string(),
                _ => p.to_string(),
            };
            (
                strip(&e.kernel),
                e.initrd.map(|i| strip(&i)),
                e.args,
                source,
            )
        }
        None => {
            let kernel = ["/vmlinuz", "/boot/vmlinuz"]
                .into_iter()
                .find_map(|p| match fs.is_file(p) {
                    Ok(true) => Some(Ok(p)),
                    Ok(false) => None,
                    Err(e) => Some(Err(Error::Fs(e))),
                })
                .ok_or(Error::NoKernel)??;
            let initrd = ["/initrd.img", "/boot/initrd.img"]
                .into_iter()
                .find(|p| fs.is_file(p).unwrap_or(false));
            let args = format!("root=UUID={} ro", uuid_string(&fs.uuid()));
            (
                kernel.to_string(),
                initrd.map(String::from),
                args,
                "Debian's /vmlinuz link",
            )
        }
    };
    for p in core::iter::once(&kernel).chain(initrd.as_ref()) {
        if !fs.is_file(p).map_err(Error::Fs)? {
            return Err(Error::Missing(p.clone()));
        }
    }
    let mut cmdline: Vec<&str> = args.split_whitespace().collect();
    let has_console = cmdline
        .iter()
        .chain(extra.split_whitespace().collect::<Vec<_>>().iter())
        .any(|w| w.starts_with("console="));
    if !has_console {
        cmdline.push(face.console());
    }
    cmdline.extend(extra.split_whitespace());
    Ok(Plan {
        kernel,
        initrd,
        cmdline: cmdline.join(" "),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    struct Tree {
        files: BTreeMap<&'static str, Vec<u8>>,
        broken: bool,
    }

    impl FileSystem for Tree {
        fn read(&mut self, path: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
            if self.broken {
                return Err("bad inode 12".into());
            }
            Ok(self.files.get(path).map(|b| b[..b.len().min(max)].to_vec()))
        }
        fn is_file(&mut self, path: &str) -> Result<bool, String> {
            Ok(self.files.contains_key(path))
        }
        fn uuid(&self) -> [u8; 16] {
            [
                0x8d, 0x2c, 0x4f, 0x0e, 0x12, 0x34, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 1, 2, 3,
            ]
        }
    }

    fn debian_links() -> Tree {
        let mut files = BTreeMap::new();
        files.insert("/vmlinuz", vec![1]);
        files.insert("/initrd.img", vec![2]);
        Tree {
            files,
            broken: false,
        }
    }

    #[test]
    fn debian_links_boot_the_root_by_uuid_on_the_faces_console() {
        let p = plan(&mut debian_links(), Face::Xen, "quiet").unwrap();
        assert_eq!(p.kernel, "/vmlinuz");
        assert_eq!(p.initrd.as_deref(), Some("/initrd.img"));
        assert_eq!(
            p.cmdline,
            "root=UUID=8d2c4f0e-1234-4567-89ab-cdef00010203 ro console=hvc0 quiet"
        );
        let p = plan(&mut debian_links(), Face::HyperV, "console=tty1").unwrap();
        assert!(p.cmdline.ends_with("ro console=tty1"), "{}", p.cmdline);
    }

    #[test]
    fn grub_wins_and_its_files_must_exist() {
        let mut t = debian_links();
        t.files.insert(
            "/boot/grub/grub.cfg",
            b"menuentry 'D' {\n linux (hd0,gpt2)/boot/vmlinuz-6.1 root=/dev/sda2 ro console=ttyS0\n initrd /boot/initrd.img-6.1\n}\n".to_vec(),
        );
        assert_eq!(
            plan(&mut t, Face::Xen, ""),
            Err(Error::Missing("/boot/vmlinuz-6.1".into()))
        );
        t.files.insert("/boot/vmlinuz-6.1", vec![1]);
        t.files.insert("/boot/initrd.img-6.1", vec![2]);
        let p = plan(&mut t, Face::Xen, "").unwrap();
        assert_eq!(p.kernel, "/boot/vmlinuz-6.1");
        assert_eq!(p.cmdline, "root=/dev/sda2 ro console=ttyS0");
        assert_eq!(p.source, "grub.cfg");
    }

    #[test]
    fn nothing_to_boot_is_named() {
        let mut t = Tree {
            files: BTreeMap::new(),
            broken: false,
        };
        assert_eq!(plan(&mut t, Face::Xen, ""), Err(Error::NoKernel));
        t.broken = true;
        assert!(matches!(plan(&mut t, Face::Xen, ""), Err(Error::Fs(_))));
        let mut t = debian_links();
        t.files.insert("/boot/grub/grub.cfg", b"set x=1\n".to_vec());
        assert_eq!(
            plan(&mut t, Face::Xen, ""),
            Err(Error::Grub(grub::Error::NoEntries))
        );
    }
}
