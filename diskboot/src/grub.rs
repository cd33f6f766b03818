//! The default entry of a `grub.cfg`: its `linux` line (kernel and arguments) and its
//! `initrd`.
//!
//! Only what boot configurations that distributions generate use: `set` of variables,
//! `menuentry` and `submenu` blocks, `default` as an index, a title, an id, `saved` (from
//! `grubenv`) or a `N>M` path into a submenu, quoting and comments. `if`/`function` blocks are
//! skipped as a whole (Debian's put no entries in them); a variable that is not set expands to
//! nothing, as in GRUB.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// What the default entry boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub title: String,
    pub kernel: String,
    pub args: String,
    pub initrd: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No `menuentry` at all.
    NoEntries,
    /// `default` names an entry that is not there.
    NoSuchDefault(String),
    /// The default entry has no `linux` line.
    NoKernel(String),
    /// Blocks that do not close.
    Unbalanced,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NoEntries => f.write_str("grub.cfg has no menuentry"),
            Error::NoSuchDefault(d) => write!(f, "grub.cfg's default '{d}' names no entry"),
            Error::NoKernel(t) => write!(f, "grub.cfg's entry '{t}' has no linux line"),
            Error::Unbalanced => f.write_str("grub.cfg's braces do not balance"),
        }
    }
}

/// The words of one command, quotes removed, `$var`/`${var}` expanded.
fn words(line: &str, vars: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '#') if !any => break,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(core::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            (_, '$') => {
                let braced = chars.peek() == Some(&'{');
                if braced {
                    chars.next();
                }
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if braced && n == '}' {
                        chars.next();
                        break;
                    }
                    if !(braced || n.is_ascii_alphanumeric() || n == '_') {
                        break;
                    }
                    name.push(n);
                    chars.next();
                }
                if let Some((_, v)) = vars.iter().rev().find(|(k, _)| *k == name) {
                    cur.push_str(v);
                }
                any = true;
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[derive(Debug)]
struct Menu {
    title: String,
    id: Option<String>,
    body: Vec<String>,
    /// For a submenu: its entries.
    children: Vec<Menu>,
    submenu: bool,
}

/// Splits `lines` into top-level commands and menus; `vars` collects top-level `set`s.
fn parse_block(
    lines: &mut core::iter::Peekable<impl Iterator<Item = String>>,
    vars: &mut Vec<(String, String)>,
    nested: bool,
) -> Result<Vec<Menu>, Error> {
    let mut menus = Vec::new();
    while let Some(raw) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "}" {
            return if nested {
                Ok(menus)
            } else {
                Err(Error::Unbalanced)
            };
        }
        let w = words(line, vars);
        let Some(cmd) = w.first() else { continue };
        match cmd.as_str() {
            "menuentry" | "submenu" => {
                let submenu = cmd == "submenu";
                let title = w.get(1).cloned().unwrap_or_default();
                let id = w
                    .iter()
                    .position(|x| x == "--id" || x.starts_with("$menuentry_id_option"))
                    .and_then(|i| w.get(i + 1).cloned())
                    .or_else(|| {
                        // `$menuentry_id_option` expands to `--id` in GRUB; unset here, it
                        // leaves the id as the word after the title's options.
                        w.iter().rev().find(|x| x.starts_with("gnulinux-")).cloned()
                    });
                if !line.ends_with('{') {
                    return Err(Error::Unbalanced);
                }
                if submenu {
                    let children = parse_block(lines, vars, true)?;
                    menus.push(Menu {
                        title,
                        id,
                        body: Vec::new(),
                        children,
                        submenu,
                    });
                } else {
                    let mut body = Vec::new();
                    let mut depth = 1;
                    for l in lines.by_ref() {
                        let t = l.trim();
                        if t.ends_with('{') {
                            depth += 1;
                        }
                        if t == "}" || t.starts_with('}') {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        body.push(t.to_string());
                    }
                    if depth != 0 {
                        return Err(Error::Unbalanced);
                    }
                    menus.push(Menu {
                        title,
                        id,
                        body,
                        children: Vec::new(),
                        submenu,
                    });
                }
            }
            "set" => {
                if let Some((k, v)) = w.get(1).and_then(|a| a.split_once('=')) {
                    vars.push((k.to_string(), v.to_string()));
                }
            }
            "if" | "function" | "for" | "while" => {
                // Skipped whole: generated configurations keep entries out of them.
                let mut depth = 1;
                for l in lines.by_ref() {
                    let t = l.trim();
                    let first = t.split_whitespace().next().unwrap_or("");
                    if matches!(first, "if" | "for" | "while") || t.ends_with('{') {
                        depth += 1;
                    }
                    if matches!(first, "fi" | "done") || t == "}" {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if nested {
        Err(Error::Unbalanced)
    } else {
        Ok(menus)
    }
}

fn pick<'a>(menus: &'a [Menu], spec: &str) -> Option<&'a Menu> {
    let (head, rest) = match spec.split_once('>') {
        Some((h, r)) => (h, Some(r)),
        None => (spec, None),
    };
    let found = match head.parse::<usize>() {
        Ok(i) => menus.get(i),
        Err(_) => menus
            .iter()
            .find(|m| m.title == head || m.id.as_deref() == Some(head)),
    }?;
    match rest {
        Some(r) if found.submenu => pick(&found.children, r),
        Some(_) => None,
        None if found.submenu => found.children.first(),
        None => Some(found),
    }
}

/// The default entry of `cfg`; `grubenv` is `/boot/grub/grubenv` if there is one (for
/// `default=saved`).
pub fn default_entry(cfg: &str, grubenv: Option<&str>) -> Result<Entry, Error> {
    let mut vars: Vec<(String, String)> = Vec::new();
    if let Some(env) = grubenv {
        for l in env.lines() {
            if let Some((k, v)) = l.split_once('=')
                && !l.starts_with('#')
            {
                vars.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    let mut lines = cfg.lines().map(String::from).peekable();
    let menus = parse_block(&mut lines, &mut vars, false)?;
    if menus.is_empty() {
        return Err(Error::NoEntries);
    }
    let get = |k: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let mut spec = get("default").unwrap_or_else(|| "0".into());
    if spec == "saved" || spec.is_empty() {
        spec = get("saved_entry")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "0".into());
    }
    let menu = pick(&menus, &spec).ok_or(Error::NoSuchDefault(spec))?;
    // The entry's own `set`s apply to its lines.
    let mut scoped = vars.clone();
    let mut kernel = None;
    let mut initrd = None;
    for l in &menu.body {
        let w = words(l, &scoped);
        match w.first().map(String::as_str) {
            Some("set") => {
                if let Some((k, v)) = w.get(1).and_then(|a| a.split_once('=')) {
                    scoped.push((k.to_string(), v.to_string()));
                }
            }
            Some("linux" | "linux16" | "linuxefi") if w.len() > 1 => {
                kernel = Some((w[1].clone(), w[2..].join(" ")));
            }
            Some("initrd" | "initrd16" | "initrdefi") if w.len() > 1 => {
                // Several initrds (microcode first) are concatenated by GRUB; the last is the
                // system's own, which is what Janus loads.
                initrd = w.last().cloned();
            }
            _ => {}
        }
    }
    let (kernel, args) = kernel.ok_or_else(|| Error::NoKernel(menu.title.clone()))?;
    Ok(Entry {
        title: menu.title.clone(),
        kernel,
        args,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of what Debian 12's update-grub writes.
    const DEBIAN: &str = r#"
#
# DO NOT EDIT THIS FILE
#
### BEGIN /etc/grub.d/00_header ###
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi

function savedefault {
  if [ -z "${boot_once}" ]; then
    saved_entry="${chosen}"
    save_env saved_entry
  fi
}
set default="0"
set timeout=5
### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-8d2c4f0e' {
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_msdos
	insmod ext2
	search --no-floppy --fs-uuid --set=root 8d2c4f0e
	echo	'Loading Linux 6.1.0-28-cloud-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-28-cloud-amd64 root=UUID=8d2c4f0e ro  console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-28-cloud-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-8d2c4f0e' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-28-cloud-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-28-cloud-amd64-advanced-8d2c4f0e' {
		linux	/boot/vmlinuz-6.1.0-28-cloud-amd64 root=UUID=8d2c4f0e ro
		initrd	/boot/initrd.img-6.1.0-28-cloud-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-27-cloud-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-27-cloud-amd64-advanced-8d2c4f0e' {
		linux	/boot/vmlinuz-6.1.0-27-cloud-amd64 root=UUID=8d2c4f0e ro single
		initrd	/boot/intel-ucode.img /boot/initrd.img-6.1.0-27-cloud-amd64
	}
}
"#;

    #[test]
    fn debians_default_entry() {
        let e = default_entry(DEBIAN, None).unwrap();
        assert_eq!(e.title, "Debian GNU/Linux");
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-28-cloud-amd64");
        assert_eq!(
            e.args,
            "root=UUID=8d2c4f0e ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0"
        );
        assert_eq!(
            e.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-28-cloud-amd64")
        );
    }

    #[test]
    fn defaults_by_path_title_id_and_saved() {
        let with = |d: &str| {
            DEBIAN.replace(
                "set default=\"0\"\nset timeout",
                &alloc::format!("set default=\"{d}\"\nset timeout"),
            )
        };
        let e = default_entry(&with("1>1"), None).unwrap();
        assert_eq!(e.kernel, "/boot/vmlinuz-6.1.0-27-cloud-amd64");
        assert_eq!(
            e.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-27-cloud-amd64")
        );
        assert!(e.args.ends_with("single"));
        let e = default_entry(
            &with("gnulinux-advanced-8d2c4f0e>gnulinux-6.1.0-27-cloud-amd64-advanced-8d2c4f0e"),
            None,
        )
        .unwrap();
        assert!(e.kernel.ends_with("27-cloud-amd64"));
        let e = default_entry(&with("Debian GNU/Linux"), None).unwrap();
        assert!(e.kernel.ends_with("28-cloud-amd64"));
        let e = default_entry(
            &with("saved"),
            Some("# GRUB Environment Block\nsaved_entry=1>1\n#####"),
        )
        .unwrap();
        assert!(e.kernel.ends_with("27-cloud-amd64"));
        assert_eq!(
            default_entry(&with("7"), None),
            Err(Error::NoSuchDefault("7".into()))
        );
    }

    #[test]
    fn words_quote_and_expand() {
        let vars = vec![("root".to_string(), "hd0,msdos1".to_string())];
        assert_eq!(
            words(r#"linux ($root)/vmlinuz "a b" 'c $d' e\ f # rest"#, &vars),
            ["linux", "(hd0,msdos1)/vmlinuz", "a b", "c $d", "e f"]
        );
        assert_eq!(words("x ${unset}y", &vars), ["x", "y"]);
    }

    #[test]
    fn broken_configurations_are_named() {
        assert_eq!(
            default_entry("set timeout=5\n", None),
            Err(Error::NoEntries)
        );
        assert_eq!(
            default_entry("menuentry 'x' {\n echo hi\n}\n", None),
            Err(Error::NoKernel("x".into()))
        );
        assert_eq!(
            default_entry("menuentry 'x' {\n linux /k\n", None),
            Err(Error::Unbalanced)
        );
        assert_eq!(default_entry("}\n", None), Err(Error::Unbalanced));
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"menuentry submenu linux initrd set default= {}'\"$\\#>01 \n\t";
        for _ in 0..3000 {
            let len = (x % 300) as usize;
            let mut s = String::new();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(alphabet[(x % alphabet.len() as u64) as usize] as char);
            }
            let _ = default_entry(&s, Some(&s));
        }
    }
}
