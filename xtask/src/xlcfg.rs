//! Xen's `xl.cfg` for a PVH guest, as a manifest of one VM on the Xen face: the subset that
//! describes such a guest (`name`, `type = "pvh"`, `memory`, `vcpus`, `kernel`, `ramdisk`,
//! `cmdline`/`extra`/`root`, `disk`, `on_poweroff`/`on_reboot`/`on_crash`). Every other key is
//! named in an error, never ignored. Paths are relative to the file, as in a TOML manifest.

use crate::manifest::{DiskToml, VmToml};

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Num(u64),
    List(Vec<Value>),
}

struct Lexer<'a> {
    s: &'a [u8],
    at: usize,
    line: usize,
}

impl Lexer<'_> {
    /// Skips blanks, newlines and `#` comments.
    fn skip(&mut self) {
        while let Some(&c) = self.s.get(self.at) {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.at += 1;
                }
                b' ' | b'\t' | b'\r' => self.at += 1,
                b'#' => {
                    while self.s.get(self.at).is_some_and(|&c| c != b'\n') {
                        self.at += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.s.get(self.at).copied()
    }

    fn err(&self, what: &str) -> String {
        format!("line {}: {what}", self.line)
    }

    fn ident(&mut self) -> Result<String, String> {
        self.skip();
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.at += 1;
        }
        if start == self.at {
            return Err(self.err("a key was expected"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.err(&format!("'{}' was expected", c as char)))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => {
                self.at += 1;
                let start = self.at;
                while self.s.get(self.at).is_some_and(|&c| c != q && c != b'\n') {
                    self.at += 1;
                }
                if self.s.get(self.at) != Some(&q) {
                    return Err(self.err("unterminated string"));
                }
                let v = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
                self.at += 1;
                Ok(Value::Str(v))
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value()?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {}
                        _ => return Err(self.err("',' or ']' was expected")),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                let text = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
                text.parse()
                    .map(Value::Num)
                    .map_err(|_| self.err("number too large"))
            }
            _ => Err(self.err("a string, a number or a list was expected")),
        }
    }
}

fn string(key: &str, v: Value) -> Result<String, String> {
    match v {
        Value::Str(s) => Ok(s),
        _ => Err(format!("`{key}` must be a string")),
    }
}

fn number(key: &str, v: Value) -> Result<u64, String> {
    match v {
        Value::Num(n) => Ok(n),
        _ => Err(format!("`{key}` must be a number")),
    }
}

/// xl's `on_*` actions, as the manifest's policies.
fn action(key: &str, v: Value) -> Result<String, String> {
    let s = string(key, v)?;
    match s.as_str() {
        "destroy" => Ok("stop".into()),
        "restart" | "preserve" => Ok(s),
        other => Err(format!(
            "`{key} = \"{other}\"` is not supported (destroy, restart, preserve)"
        )),
    }
}

/// One `disk` entry in xl's key=value form: `format=vhd,vdev=xvdN,access=rw|ro,target=PATH`
/// (`target` last: the rest of the string is the path). Returns (vdev index, disk).
fn disk(spec: &str) -> Result<(u32, DiskToml), String> {
    let mut format = None;
    let mut vdev = None;
    let mut read_only = false;
    let mut target = None;
    let mut rest = spec;
    while !rest.is_empty() {
        let (item, tail) = match rest.split_once(',') {
            Some(_) if rest.starts_with("target=") => (rest, ""),
            Some((a, b)) => (a, b),
            None => (rest, ""),
        };
        rest = tail;
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!(
                "disk '{spec}': '{item}' is not key=value (the positional form is not supported)"
            ));
        };
        match k.trim() {
            "format" => format = Some(v.to_string()),
            "vdev" => vdev = Some(v.to_string()),
            "access" => {
                read_only = match v {
                    "rw" | "w" => false,
                    "ro" | "r" => true,
                    _ => return Err(format!("disk '{spec}': access={v} (rw or ro)")),
                }
            }
            "target" => target = Some(v.to_string()),
            other => return Err(format!("disk '{spec}': `{other}` is not supported")),
        }
    }
    if format.as_deref() != Some("vhd") {
        return Err(format!(
            "disk '{spec}': format={} — Janus disks are VHD (format=vhd)",
            format.as_deref().unwrap_or("(none)")
        ));
    }
    let index = vdev
        .as_deref()
        .and_then(|d| d.strip_prefix("xvd"))
        .filter(|l| l.len() == 1)
        .and_then(|l| l.bytes().next())
        .filter(u8::is_ascii_lowercase)
        .map(|b| u32::from(b - b'a'))
        .ok_or_else(|| format!("disk '{spec}': vdev must be xvda, xvdb, …"))?;
    let path = target.ok_or_else(|| format!("disk '{spec}': no target="))?;
    Ok((index, DiskToml { path, read_only }))
}

/// Parses `text` into the one VM it describes.
pub fn parse(text: &str) -> Result<VmToml, String> {
    let mut lx = Lexer {
        s: text.as_bytes(),
        at: 0,
        line: 1,
    };
    let mut name = None;
    let mut memory = None;
    let mut vcpus = 1u64;
    let mut kernel = None;
    let mut bootloader = false;
    let mut ramdisk = None;
    let (mut cmdline, mut extra, mut root) = (None, None, None);
    let (mut on_poweroff, mut on_reboot, mut on_crash) = (None, None, None);
    let mut disks: Vec<(u32, DiskToml)> = Vec::new();
    let mut pvh = false;
    while lx.peek().is_some() {
        let key = lx.ident()?;
        lx.expect(b'=')?;
        let v = lx.value()?;
        if lx.peek() == Some(b';') {
            lx.at += 1;
        }
        match key.as_str() {
            "name" => name = Some(string(&key, v)?),
            "type" => {
                let t = string(&key, v)?;
                if t != "pvh" {
                    return Err(format!(
                        "type = \"{t}\": only PVH guests (type = \"pvh\") run on the Xen face"
                    ));
                }
                pvh = true;
            }
            "memory" => memory = Some(number(&key, v)?),
            "vcpus" => vcpus = number(&key, v)?,
            "kernel" => kernel = Some(string(&key, v)?),
            // What `xl` runs to find the kernel on the disk; Janus finds it itself, the same
            // way (grub.cfg, else Debian's /vmlinuz).
            "bootloader" => {
                let b = string(&key, v)?;
                if b != "pygrub" && !b.ends_with("/pygrub") {
                    return Err(format!(
                        "bootloader = \"{b}\": only pygrub (Janus boots the disk itself)"
                    ));
                }
                bootloader = true;
            }
            "ramdisk" => ramdisk = Some(string(&key, v)?),
            "cmdline" => cmdline = Some(string(&key, v)?),
            "extra" => extra = Some(string(&key, v)?),
            "root" => root = Some(string(&key, v)?),
            "on_poweroff" => on_poweroff = Some(action(&key, v)?),
            "on_reboot" => on_reboot = Some(action(&key, v)?),
            "on_crash" => on_crash = Some(action(&key, v)?),
            "disk" => {
                let Value::List(items) = v else {
                    return Err("`disk` must be a list of strings".into());
                };
                for item in items {
                    disks.push(disk(&string("disk", item)?)?);
                }
            }
            other => {
                return Err(format!(
                    "`{other}` is not supported in Janus's xl.cfg subset"
                ));
            }
        }
    }
    if !pvh {
        return Err("no type = \"pvh\": Janus runs PVH guests from xl.cfg".into());
    }
    if cmdline.is_some() && (extra.is_some() || root.is_some()) {
        return Err("`cmdline` replaces `extra` and `root`; give one or the other".into());
    }
    disks.sort_by_key(|(i, _)| *i);
    let disks_empty = disks.is_empty();
    for (want, (got, _)) in disks.iter().enumerate() {
        if *got != want as u32 {
            return Err(format!(
                "disk vdevs must be xvda, xvdb, … without gaps (xvd{} is missing)",
                (b'a' + want as u8) as char
            ));
        }
    }
    let cmdline = cmdline.unwrap_or_else(|| {
        let root = root.map(|r| format!("root={r}"));
        [root, extra]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    });
    Ok(VmToml {
        name: name.ok_or("no `name`")?,
        personality: "xen".into(),
        memory_mib: u32::try_from(memory.ok_or("no `memory`")?)
            .map_err(|_| "`memory` is too large".to_string())?,
        vcpus: u8::try_from(vcpus).map_err(|_| "`vcpus` is too large".to_string())?,
        kernel: match (kernel, bootloader) {
            (Some(_), true) => return Err("`kernel` and `bootloader` both given".into()),
            (Some(k), false) => k,
            (None, true) if disks_empty => {
                return Err("`bootloader = \"pygrub\"` needs a disk to boot from".into());
            }
            (None, true) => String::new(),
            (None, false) => {
                return Err("no `kernel` (or `bootloader = \"pygrub\"` to boot the disk)".into());
            }
        },
        initrd: ramdisk,
        cmdline,
        on_poweroff,
        on_reboot,
        on_crash,
        disk: disks.into_iter().map(|(_, d)| d).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: &str = r#"
# A PVH guest, as xl would take it.
name = "web"
type = "pvh"
memory = 256
vcpus = 2
kernel = "vmlinux"
ramdisk = 'initrd.gz'
root = "/dev/xvda1 ro"
extra = "console=hvc0 quiet"
on_crash = "preserve"
disk = [ 'format=vhd,vdev=xvdb,access=ro,target=base.vhd',
         "format=vhd,vdev=xvda,access=rw,target=disks/a,b.vhd", ]
"#;

    #[test]
    fn a_pvh_guest_becomes_one_xen_vm() {
        let v = parse(GUEST).unwrap();
        assert_eq!(v.name, "web");
        assert_eq!(v.personality, "xen");
        assert_eq!((v.memory_mib, v.vcpus), (256, 2));
        assert_eq!(v.kernel, "vmlinux");
        assert_eq!(v.initrd.as_deref(), Some("initrd.gz"));
        assert_eq!(v.cmdline, "root=/dev/xvda1 ro console=hvc0 quiet");
        assert_eq!(v.on_crash.as_deref(), Some("preserve"));
        assert_eq!(v.disk.len(), 2);
        assert_eq!(
            (v.disk[0].path.as_str(), v.disk[0].read_only),
            ("disks/a,b.vhd", false),
            "ordered by vdev; target takes the rest of the string"
        );
        assert_eq!(
            (v.disk[1].path.as_str(), v.disk[1].read_only),
            ("base.vhd", true)
        );
    }

    #[test]
    fn pygrub_boots_the_disk() {
        let no_kernel = GUEST
            .replace("kernel = \"vmlinux\"\n", "")
            .replace("ramdisk = 'initrd.gz'\n", "");
        let v = parse(&format!("{no_kernel}bootloader = \"pygrub\"\n")).unwrap();
        assert_eq!(v.kernel, "");
        let v = parse(&format!(
            "{no_kernel}bootloader = \"/usr/lib/xen/bin/pygrub\"\n"
        ))
        .unwrap();
        assert_eq!(v.kernel, "");
        assert!(parse(&no_kernel).unwrap_err().contains("pygrub"));
        assert!(
            parse(&format!("{GUEST}bootloader = \"pygrub\"\n"))
                .unwrap_err()
                .contains("both")
        );
        assert!(
            parse(&format!("{no_kernel}bootloader = \"pvgrub\"\n"))
                .unwrap_err()
                .contains("only pygrub")
        );
    }

    #[test]
    fn what_is_not_supported_is_named() {
        let with = |extra: &str| parse(&format!("{GUEST}\n{extra}\n")).unwrap_err();
        assert!(with("maxvcpus = 4").contains("`maxvcpus` is not supported"));
        assert!(with("vif = [ 'bridge=xenbr0' ]").contains("`vif`"));
        assert!(with("cmdline = \"x\"").contains("`cmdline` replaces"));
        assert!(with("on_reboot = \"rename-restart\"").contains("rename-restart"));
        assert!(
            parse("name = \"x\"\ntype = \"hvm\"")
                .unwrap_err()
                .contains("only PVH")
        );
        assert!(
            parse("name = \"x\"\nmemory = 1\nkernel = \"k\"")
                .unwrap_err()
                .contains("pvh")
        );
        let d = |spec: &str| {
            parse(&format!(
                "name=\"x\"\ntype=\"pvh\"\nmemory=1\nkernel=\"k\"\ndisk=['{spec}']"
            ))
            .unwrap_err()
        };
        assert!(d("format=qcow2,vdev=xvda,target=x").contains("format=qcow2"));
        assert!(d("/img.vhd,vhd,xvda,rw").contains("positional"));
        assert!(d("format=vhd,vdev=hda,target=x").contains("vdev"));
        assert!(d("format=vhd,vdev=xvdb,target=x").contains("xvda is missing"));
        assert!(d("format=vhd,vdev=xvda,script=block,target=x").contains("`script`"));
        assert!(
            parse("name = \"x")
                .unwrap_err()
                .contains("line 1: unterminated")
        );
        assert!(
            parse("name \"x\"")
                .unwrap_err()
                .contains("'=' was expected")
        );
    }
}
