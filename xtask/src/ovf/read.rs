//! An OVF descriptor (DMTF DSP0243, OVF 1.x and 2.x) read into the VMs it describes: one
//! [`VmToml`] per VirtualSystem, as the TOML manifest would give it, plus the package files its
//! disks and boot files come from. Pure: no file is read here (see `super` for that).
//!
//! What is read, per VirtualSystem (a VirtualSystemCollection's systems, nested ones included,
//! in document order):
//! - the name: `Name`, else `ovf:id` (characters Janus names cannot hold become `-`);
//! - the face: `vssd:VirtualSystemType` of the VirtualHardwareSection's `System` ([`face_of`]),
//!   or `janus:personality`;
//! - memory (rasd:ResourceType 4, `AllocationUnits` × `VirtualQuantity`, a whole number of MiB)
//!   and vCPUs (rasd:ResourceType 3, default 1);
//! - disks: Items of rasd:ResourceType 17 (disk drive), 19 (storage extent, as XenServer
//!   writes) or 31 (logical disk) whose `HostResource` is `ovf:/disk/ID`, ordered by their
//!   place under their controllers (`Parent`, then `AddressOnParent`); each names a DiskSection
//!   `Disk`, whose `ovf:fileRef` names a References `File` in a VHD `ovf:format` ([`VHD_FORMATS`]).
//!   A `Disk` without `ovf:fileRef` is a new blank disk of `ovf:capacity`;
//! - Janus's extension (namespace [`JANUS`]): `janus:personality`, `janus:Boot kernel= initrd=
//!   cmdline=`, `janus:Lifecycle onPoweroff= onReboot= onCrash=`, and `janus:readOnly` on a disk
//!   Item.
//!
//! Hardware Janus does not give a VM (network adapters, CD/DVD and floppy drives, serial and
//! parallel ports, USB, graphics, sound, other devices) is skipped with a note; an Item of any
//! other resource type is refused unless it says `ovf:required="false"`. Items for another
//! configuration of a DeploymentOptionSection, and `ovf:bound` min/max ranges, do not count.

use crate::manifest::{DiskToml, VmToml};
use ::manifest as km;
use roxmltree::{Document, Node, ParsingOptions};
use std::collections::BTreeMap;

pub const OVF1: &str = "http://schemas.dmtf.org/ovf/envelope/1";
pub const OVF2: &str = "http://schemas.dmtf.org/ovf/envelope/2";
/// Janus's OVF extension namespace.
pub const JANUS: &str = "https://janus.invalid/ovf/1";
/// The CIM schema namespaces (rasd, vssd, sasd, epasd) all start so.
const CIM: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/";
pub const RASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
pub const VSSD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";

/// `ovf:format` URIs of VHD images, as OVF writers spell them (compared without scheme, case or
/// `#fragment`): VirtualBox and most tools; XenServer/XCP-ng; oVirt and System Center.
pub const VHD_FORMATS: [&str; 5] = [
    "go.microsoft.com/fwlink/?linkid=137171",
    "go.microsoft.com/fwlink/p/?linkid=137171",
    "www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx",
    "technet.microsoft.com/en-us/virtualserver/bb676673.aspx",
    "technet.microsoft.com/en-us/library/bb676673.aspx",
];

/// The URI `ovf export` writes.
pub const VHD_FORMAT: &str = "http://go.microsoft.com/fwlink/?LinkId=137171";

/// A References `File`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub id: String,
    pub href: String,
    pub size: Option<u64>,
    /// Where it is declared, for messages.
    pub at: String,
}

/// One disk of a VM, first disk first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskUse {
    /// The package file holding the image (an href relative to the descriptor), or `None`
    /// for a new blank disk of `capacity` bytes.
    pub href: Option<String>,
    pub capacity: u64,
    pub read_only: bool,
    /// The elements it comes from, for messages.
    pub at: String,
}

/// One VirtualSystem as a manifest VM. `vm.disk` is empty and `vm.kernel`/`vm.initrd` are
/// hrefs relative to the descriptor: the caller resolves both against the package.
#[derive(Debug)]
pub struct System {
    pub id: String,
    pub vm: VmToml,
    pub disks: Vec<DiskUse>,
}

#[derive(Debug)]
pub struct Descriptor {
    /// 1 or 2.
    pub version: u8,
    pub files: Vec<FileRef>,
    pub systems: Vec<System>,
    /// What was skipped or changed, one line each.
    pub notes: Vec<String>,
}

/// The face a `VirtualSystemType` token names: Xen's own and XenServer/XCP-ng's types
/// (`xen-*`, `hvm-*`, `pvh`, `DMTF:xen:*`) and Hyper-V's (`Microsoft:Hyper-V:*`, `hyperv`,
/// `hyper-v`, `ms:hyperv*`). Case does not matter.
pub fn face_of(token: &str) -> Option<&'static str> {
    let t = token.to_ascii_lowercase();
    let xen = ["xen-", "hvm-", "dmtf:xen:"]
        .iter()
        .any(|p| t.starts_with(p))
        || matches!(t.as_str(), "xen" | "pvh");
    let hyperv = t.starts_with("microsoft:hyper-v:")
        || t.starts_with("ms:hyperv")
        || matches!(t.as_str(), "hyperv" | "hyper-v");
    if xen {
        Some("xen")
    } else if hyperv {
        Some("hyperv")
    } else {
        None
    }
}

/// Bytes per unit of a DSP0004 programmatic unit (`byte`, `byte * 2^20`, `bytes * 10^9`) or
/// the older names (`KiloBytes`, `MegaBytes`, `GigaBytes`, `KB`, `MB`, `GB`: powers of 1024).
pub fn unit_bytes(unit: &str) -> Option<u64> {
    let s: String = unit
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    match s.as_str() {
        "kilobytes" | "kb" | "kib" => return Some(1 << 10),
        "megabytes" | "mb" | "mib" => return Some(1 << 20),
        "gigabytes" | "gb" | "gib" => return Some(1 << 30),
        "terabytes" | "tb" | "tib" => return Some(1 << 40),
        _ => {}
    }
    let rest = s.strip_prefix("bytes").or_else(|| s.strip_prefix("byte"))?;
    if rest.is_empty() {
        return Some(1);
    }
    let (base, exp) = rest.strip_prefix('*')?.split_once('^')?;
    let base: u64 = base.parse().ok().filter(|b| *b == 2 || *b == 10)?;
    base.checked_pow(exp.parse().ok()?)
}

/// `Ok` for a VHD `ovf:format`; else the name of the format, for the refusal.
pub fn check_format(uri: &str) -> Result<(), String> {
    let lower = uri.trim().to_ascii_lowercase();
    let bare = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let bare = bare.split('#').next().unwrap_or(bare);
    if VHD_FORMATS.contains(&bare) {
        return Ok(());
    }
    let name = if lower.contains("vmdk") {
        if lower.contains("streamoptimized") {
            "VMDK (stream-optimized)"
        } else {
            "VMDK"
        }
    } else if lower.contains("vhdx") || lower.contains("hh831446") || lower.contains("dd979539") {
        "VHDX"
    } else if lower.contains("qcow") {
        "QCOW2"
    } else if lower.contains("virtualbox") || lower.contains("vdi") {
        "VDI"
    } else if lower.contains("ecma-119") || lower.contains("iso9660") {
        "an ISO 9660 image"
    } else if lower.contains("raw") {
        "raw"
    } else {
        "an unknown format"
    };
    Err(name.to_string())
}

/// `line N: <prefix:Name>` for a message.
fn at(n: Node<'_, '_>) -> String {
    let line = n.document().text_pos_at(n.range().start).row;
    let tag = n.tag_name();
    let prefix = match tag.namespace() {
        Some(RASD) => "rasd:",
        Some(VSSD) => "vssd:",
        Some(JANUS) => "janus:",
        Some(ns) if ns.starts_with(CIM) => {
            if ns.ends_with("StorageAllocationSettingData") {
                "sasd:"
            } else {
                "epasd:"
            }
        }
        _ => "",
    };
    format!("line {line}: <{prefix}{}>", tag.name())
}

fn is(n: Node<'_, '_>, ns: &str, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(ns)
}

fn kids<'a, 'i: 'a>(
    n: Node<'a, 'i>,
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children().filter(move |c| is(*c, ns, name))
}

/// An `ovf:` attribute (some writers leave the prefix off).
fn attr<'a>(n: Node<'a, '_>, ovf: &str, name: &str) -> Option<&'a str> {
    n.attribute((ovf, name)).or_else(|| n.attribute(name))
}

fn text(n: Node<'_, '_>) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn required(n: Node<'_, '_>, ovf: &str) -> bool {
    attr(n, ovf, "required").is_none_or(|v| v != "false" && v != "0")
}

fn number(n: Node<'_, '_>, what: &str) -> Result<u64, String> {
    let t = text(n);
    t.parse()
        .map_err(|_| format!("{}: {what} '{t}' is not a whole number", at(n)))
}

/// A Janus name: letters, digits, `-` and `_`, at most `MAX_NAME - 1` characters.
fn janus_name(s: &str) -> String {
    let mut n: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    n.truncate(km::MAX_NAME - 1);
    n
}

/// An Item (or 2.x StorageItem/EthernetPortItem) of a VirtualHardwareSection.
struct Item<'a, 'i> {
    node: Node<'a, 'i>,
    kind: u32,
    instance: Option<String>,
    name: Option<String>,
    units: Option<Node<'a, 'i>>,
    quantity: Option<Node<'a, 'i>>,
    hosts: Vec<String>,
    parent: Option<String>,
    address: Option<Node<'a, 'i>>,
}

impl Item<'_, '_> {
    fn describe(&self) -> String {
        let mut s = at(self.node);
        if let Some(n) = &self.name {
            s.push_str(&format!(" '{n}'"));
        }
        if let Some(i) = &self.instance {
            s.push_str(&format!(" (InstanceID {i})"));
        }
        s
    }
}

fn item<'a, 'i>(node: Node<'a, 'i>) -> Result<Item<'a, 'i>, String> {
    let mut it = Item {
        node,
        kind: 0,
        instance: None,
        name: None,
        units: None,
        quantity: None,
        hosts: Vec::new(),
        parent: None,
        address: None,
    };
    let mut kind = None;
    for c in node.children().filter(|c| c.is_element()) {
        if !c
            .tag_name()
            .namespace()
            .is_some_and(|ns| ns.starts_with(CIM))
        {
            continue;
        }
        match c.tag_name().name() {
            "ResourceType" => kind = Some(c),
            "InstanceID" => it.instance = Some(text(c)),
            "ElementName" => it.name = Some(text(c)),
            "AllocationUnits" => it.units = Some(c),
            "VirtualQuantity" => it.quantity = Some(c),
            "HostResource" => it.hosts.push(text(c)),
            "Parent" => it.parent = Some(text(c)),
            "AddressOnParent" => it.address = Some(c),
            _ => {}
        }
    }
    let kind = kind.ok_or_else(|| format!("{}: no rasd:ResourceType", it.describe()))?;
    it.kind = u32::try_from(number(kind, "rasd:ResourceType")?)
        .map_err(|_| format!("{}: rasd:ResourceType out of range", at(kind)))?;
    Ok(it)
}

/// What Janus leaves out, by CIM resource type.
fn skipped(kind: u32) -> Option<&'static str> {
    Some(match kind {
        10 | 11 | 30 | 33 => "Janus gives VMs no network",
        14..=16 => "Janus gives VMs no removable drives",
        21 | 22 => "Janus gives VMs no serial or parallel port (the console is the face's own)",
        23 => "Janus gives VMs no USB",
        24 => "Janus gives VMs no graphics",
        35 => "Janus gives VMs no sound",
        1 | 12 | 13 | 25 => "Janus gives VMs no other devices",
        _ => return None,
    })
}

const CONTROLLERS: [u32; 6] = [5, 6, 7, 8, 9, 20];
const DISKS: [u32; 3] = [17, 19, 31];

struct Cx<'a, 'i> {
    ovf: &'static str,
    files: &'a BTreeMap<String, FileRef>,
    disks: &'a BTreeMap<String, Node<'a, 'i>>,
    config: Option<String>,
    notes: &'a mut Vec<String>,
}

/// Parses the descriptor `text`.
pub fn parse(text: &str) -> Result<Descriptor, String> {
    let doc = Document::parse_with_options(
        text,
        ParsingOptions {
            allow_dtd: false,
            ..ParsingOptions::default()
        },
    )
    .map_err(|e| format!("not well-formed XML: {e}"))?;
    let env = doc.root_element();
    let (ovf, version) = match env.tag_name().namespace() {
        Some(OVF1) => (OVF1, 1),
        Some(OVF2) => (OVF2, 2),
        ns => {
            return Err(format!(
                "{}: not an OVF 1.x or 2.x envelope (namespace {}; want {OVF1} or {OVF2})",
                at(env),
                ns.unwrap_or("none")
            ));
        }
    };
    if env.tag_name().name() != "Envelope" {
        return Err(format!("{}: the root element must be <Envelope>", at(env)));
    }
    let mut notes = Vec::new();

    let mut files = BTreeMap::new();
    let mut order = Vec::new();
    for refs in kids(env, ovf, "References") {
        for f in kids(refs, ovf, "File") {
            let id = attr(f, ovf, "id").ok_or_else(|| format!("{}: no ovf:id", at(f)))?;
            let fat = format!("{} '{id}'", at(f));
            let href = attr(f, ovf, "href").ok_or_else(|| format!("{fat}: no ovf:href"))?;
            if href.contains("://") {
                return Err(format!(
                    "{fat}: ovf:href '{href}': files outside the package are not supported"
                ));
            }
            if std::path::Path::new(href).is_absolute()
                || href.split(['/', '\\']).any(|c| c == "..")
            {
                return Err(format!(
                    "{fat}: ovf:href '{href}' leaves the package's directory"
                ));
            }
            if let Some(c) = attr(f, ovf, "compression").filter(|c| *c != "identity") {
                return Err(format!(
                    "{fat}: compressed (ovf:compression=\"{c}\"); Janus reads \
                     uncompressed packages only"
                ));
            }
            if attr(f, ovf, "chunkSize").is_some() {
                return Err(format!(
                    "{fat}: chunked (ovf:chunkSize); Janus reads whole files only"
                ));
            }
            let size = attr(f, ovf, "size")
                .map(|s| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{fat}: ovf:size '{s}' is not a number"))
                })
                .transpose()?;
            let file = FileRef {
                id: id.into(),
                href: href.into(),
                size,
                at: fat,
            };
            if files.insert(id.to_string(), file).is_some() {
                return Err(format!("{}: a second File with ovf:id '{id}'", at(f)));
            }
            order.push(id.to_string());
        }
    }

    // DiskSections are envelope-level; some writers put them in the VirtualSystem.
    let mut disks = BTreeMap::new();
    for sect in env.descendants().filter(|n| is(*n, ovf, "DiskSection")) {
        for d in kids(sect, ovf, "Disk") {
            let id = attr(d, ovf, "diskId").ok_or_else(|| format!("{}: no ovf:diskId", at(d)))?;
            if disks.insert(id.to_string(), d).is_some() {
                return Err(format!("{}: a second Disk with ovf:diskId '{id}'", at(d)));
            }
        }
    }

    // DeploymentOptionSection: its default configuration chooses among Items.
    let config = env
        .descendants()
        .find(|n| is(*n, ovf, "DeploymentOptionSection"))
        .and_then(|s| {
            let all: Vec<_> = kids(s, ovf, "Configuration").collect();
            all.iter()
                .find(|c| attr(**c, ovf, "default") == Some("true"))
                .or(all.first())
                .and_then(|c| attr(*c, ovf, "id"))
                .map(str::to_string)
        });

    let content: Vec<_> = env
        .children()
        .filter(|c| is(*c, ovf, "VirtualSystem") || is(*c, ovf, "VirtualSystemCollection"))
        .collect();
    let [content] = content[..] else {
        return Err(format!(
            "{}: an envelope holds exactly one VirtualSystem or VirtualSystemCollection, this one {}",
            at(env),
            content.len()
        ));
    };
    let mut systems_nodes = Vec::new();
    collect_systems(content, ovf, &mut systems_nodes);
    if systems_nodes.is_empty() {
        return Err(format!("{}: no VirtualSystem", at(content)));
    }

    let mut cx = Cx {
        ovf,
        files: &files,
        disks: &disks,
        config,
        notes: &mut notes,
    };
    let mut systems = Vec::new();
    for vs in systems_nodes {
        systems.push(system(&mut cx, vs)?);
    }
    let files = order
        .iter()
        .filter_map(|id| files.get(id).cloned())
        .collect();
    Ok(Descriptor {
        version,
        files,
        systems,
        notes,
    })
}

fn collect_systems<'a, 'i>(n: Node<'a, 'i>, ovf: &str, out: &mut Vec<Node<'a, 'i>>) {
    if is(n, ovf, "VirtualSystem") {
        out.push(n);
    } else {
        for c in n.children() {
            if is(c, ovf, "VirtualSystem") || is(c, ovf, "VirtualSystemCollection") {
                collect_systems(c, ovf, out);
            }
        }
    }
}

/// The Janus extension elements of a VirtualSystem.
#[derive(Default)]
struct Extension {
    personality: Option<String>,
    kernel: Option<String>,
    initrd: Option<String>,
    cmdline: String,
    on: [Option<String>; 3],
}

fn extension(
    vs: Node<'_, '_>,
    ovf: &str,
    files: &BTreeMap<String, FileRef>,
) -> Result<Extension, String> {
    let mut x = Extension::default();
    let mut seen = Vec::new();
    // `ovf:/file/ID` names a References File; anything else is a path beside the descriptor.
    let file = |n: Node<'_, '_>, v: &str| -> Result<String, String> {
        match v.strip_prefix("ovf:/file/") {
            Some(id) => files.get(id).map(|f| f.href.clone()).ok_or_else(|| {
                format!("{}: '{v}': no File with ovf:id '{id}' in References", at(n))
            }),
            None if v.is_empty() => Err(format!("{}: an empty path", at(n))),
            None => Ok(v.to_string()),
        }
    };
    for e in vs
        .children()
        .filter(|c| c.is_element() && c.tag_name().namespace() == Some(JANUS))
    {
        let name = e.tag_name().name();
        if seen.contains(&name) {
            return Err(format!("{}: a second janus:{name}", at(e)));
        }
        seen.push(name);
        let allowed: &[&str] = match name {
            "personality" => &[],
            "Boot" => &["kernel", "initrd", "cmdline"],
            "Lifecycle" => &["onPoweroff", "onReboot", "onCrash"],
            other => {
                return Err(format!(
                    "{}: janus:{other} is not a Janus extension (personality, Boot, Lifecycle)",
                    at(e)
                ));
            }
        };
        for a in e.attributes() {
            let ours = a.namespace().is_none() && allowed.contains(&a.name());
            let ovf_required = a.namespace() == Some(ovf) && a.name() == "required";
            if !ours && !ovf_required {
                return Err(format!(
                    "{}: attribute '{}' is not supported (janus:{name} takes {})",
                    at(e),
                    a.name(),
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
        match name {
            "personality" => {
                let p = text(e);
                if km::Personality::parse(&p).is_none() {
                    return Err(format!(
                        "{}: '{p}' is not a personality (xen, hyperv, none)",
                        at(e)
                    ));
                }
                x.personality = Some(p);
            }
            "Boot" => {
                x.kernel = e.attribute("kernel").map(|v| file(e, v)).transpose()?;
                x.initrd = e.attribute("initrd").map(|v| file(e, v)).transpose()?;
                x.cmdline = e.attribute("cmdline").unwrap_or("").to_string();
                if x.kernel.is_none() && x.initrd.is_some() {
                    return Err(format!(
                        "{}: initrd=\"…\" without kernel=\"…\" (a VM that boots from its disk \
                         takes its initrd from there)",
                        at(e)
                    ));
                }
            }
            _ => {
                for (slot, (key, allowed)) in x.on.iter_mut().zip([
                    ("onPoweroff", "stop, restart"),
                    ("onReboot", "stop, restart"),
                    ("onCrash", "stop, restart, preserve"),
                ]) {
                    if let Some(v) = e.attribute(key) {
                        if !allowed.split(", ").any(|a| a == v) {
                            return Err(format!("{}: {key}=\"{v}\": one of {allowed}", at(e)));
                        }
                        *slot = Some(v.to_string());
                    }
                }
            }
        }
    }
    Ok(x)
}

fn system(cx: &mut Cx<'_, '_>, vs: Node<'_, '_>) -> Result<System, String> {
    let ovf = cx.ovf;
    let id = attr(vs, ovf, "id").ok_or_else(|| format!("{}: no ovf:id", at(vs)))?;
    let here = format!("VirtualSystem '{id}'");
    let err = |e: String| format!("{here}: {e}");
    let given = kids(vs, ovf, "Name")
        .next()
        .map(text)
        .filter(|n| !n.is_empty());
    let wanted = given.as_deref().unwrap_or(id);
    let name = janus_name(wanted);
    if name.is_empty() {
        return Err(err(format!("{}: no usable name", at(vs))));
    }
    if name != wanted {
        cx.notes.push(format!(
            "{here}: named '{name}' (Janus names are up to {} letters, digits, '-' and '_'; \
             the descriptor says '{wanted}')",
            km::MAX_NAME - 1
        ));
    }
    let x = extension(vs, ovf, cx.files).map_err(err)?;

    // Unknown sections that insist on being understood.
    for c in vs.children().filter(|c| c.is_element()) {
        let ns = c.tag_name().namespace();
        if ns != Some(ovf) && ns != Some(JANUS) && attr(c, ovf, "required") == Some("true") {
            return Err(err(format!(
                "{}: an extension Janus does not know, marked ovf:required=\"true\"",
                at(c)
            )));
        }
    }

    // The hardware section: the first whose type names the face wanted (or any face).
    let sections: Vec<_> = kids(vs, ovf, "VirtualHardwareSection").collect();
    if sections.is_empty() {
        return Err(err(format!("{}: no VirtualHardwareSection", at(vs))));
    }
    let types: Vec<(Node<'_, '_>, Option<Node<'_, '_>>)> = sections
        .iter()
        .map(|s| {
            let t = kids(*s, ovf, "System")
                .next()
                .and_then(|sys| sys.children().find(|c| is(*c, VSSD, "VirtualSystemType")));
            (*s, t)
        })
        .collect();
    let face_in = |t: Option<Node<'_, '_>>| -> Result<Option<&'static str>, String> {
        let Some(t) = t else { return Ok(None) };
        let s = text(t);
        let faces: Vec<_> = s.split_whitespace().filter_map(face_of).collect();
        match faces.first() {
            Some(f) if faces.iter().any(|g| g != f) => Err(format!(
                "{}: '{s}' names both Xen and Hyper-V: say which with janus:personality",
                at(t)
            )),
            f => Ok(f.copied()),
        }
    };
    let (section, personality) = match &x.personality {
        Some(p) => {
            let mut pick = types[0].0;
            for (s, t) in &types {
                if face_in(*t).ok().flatten() == Some(p.as_str()) {
                    pick = *s;
                    break;
                }
            }
            (pick, p.clone())
        }
        None => {
            let mut found = None;
            for (s, t) in &types {
                if let Some(f) = face_in(*t).map_err(err)? {
                    found = Some((*s, f.to_string()));
                    break;
                }
            }
            match found {
                Some(f) => f,
                None => {
                    let (s, t) = types[0];
                    return Err(err(match t {
                        Some(t) => format!(
                            "{}: '{}' is neither a Xen nor a Hyper-V system type; name the face \
                             with <janus:personality>xen|hyperv|none</janus:personality> \
                             (xmlns:janus=\"{JANUS}\")",
                            at(t),
                            text(t)
                        ),
                        None => format!(
                            "{}: no vssd:VirtualSystemType in its System; name the face with \
                             <janus:personality> (xmlns:janus=\"{JANUS}\")",
                            at(s)
                        ),
                    }));
                }
            }
        }
    };

    let mut items = Vec::new();
    for n in section.children().filter(|c| {
        is(*c, ovf, "Item") || is(*c, ovf, "StorageItem") || is(*c, ovf, "EthernetPortItem")
    }) {
        if attr(n, ovf, "bound").is_some_and(|b| b != "normal") {
            continue;
        }
        if let (Some(want), Some(list)) = (&cx.config, attr(n, ovf, "configuration"))
            && !list.split_whitespace().any(|c| c == want)
        {
            continue;
        }
        items.push(item(n).map_err(err)?);
    }

    // Memory and vCPUs.
    let single = |kind: u32| -> Result<Option<&Item<'_, '_>>, String> {
        let mut of = items.iter().filter(|i| i.kind == kind);
        let first = of.next();
        if let Some(second) = of.next() {
            return Err(format!(
                "{}: a second Item of rasd:ResourceType {kind}",
                second.describe()
            ));
        }
        Ok(first)
    };
    let mem = single(4).map_err(err)?.ok_or_else(|| {
        err(format!(
            "{}: no memory Item (rasd:ResourceType 4)",
            at(section)
        ))
    })?;
    let units = mem
        .units
        .ok_or_else(|| err(format!("{}: no rasd:AllocationUnits", mem.describe())))?;
    let per = unit_bytes(&text(units)).ok_or_else(|| {
        err(format!(
            "{}: '{}' is not a unit of bytes (e.g. \"byte * 2^20\", \"MegaBytes\")",
            at(units),
            text(units)
        ))
    })?;
    let qty = mem
        .quantity
        .ok_or_else(|| err(format!("{}: no rasd:VirtualQuantity", mem.describe())))?;
    let bytes = number(qty, "rasd:VirtualQuantity")
        .map_err(err)?
        .checked_mul(per)
        .ok_or_else(|| err(format!("{}: too large", at(qty))))?;
    if bytes % (1 << 20) != 0 {
        return Err(err(format!(
            "{}: {} × '{}' = {bytes} bytes is not a whole number of MiB",
            mem.describe(),
            text(qty),
            text(units)
        )));
    }
    let mib = bytes >> 20;
    if !(u64::from(km::MIN_MEMORY_MIB)..=u64::from(km::MAX_MEMORY_MIB)).contains(&mib) {
        return Err(err(format!(
            "{}: {mib} MiB; a VM has between {} and {} MiB",
            mem.describe(),
            km::MIN_MEMORY_MIB,
            km::MAX_MEMORY_MIB
        )));
    }
    let vcpus = match single(3).map_err(err)? {
        None => 1,
        Some(cpu) => {
            let q = cpu
                .quantity
                .ok_or_else(|| err(format!("{}: no rasd:VirtualQuantity", cpu.describe())))?;
            let n = number(q, "rasd:VirtualQuantity").map_err(err)?;
            if !(1..=u64::from(km::MAX_VCPUS)).contains(&n) {
                return Err(err(format!(
                    "{}: {n} vCPUs; a VM has between 1 and {}",
                    cpu.describe(),
                    km::MAX_VCPUS
                )));
            }
            n as u8
        }
    };

    // Disks, in controller order; everything else is a controller, skipped, or refused.
    let mut disk_items = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if is(it.node, ovf, "EthernetPortItem") {
            cx.notes.push(format!(
                "{here}: {} skipped: Janus gives VMs no network",
                it.describe()
            ));
        } else if DISKS.contains(&it.kind) {
            let host = it.hosts.iter().find(|h| !h.is_empty());
            match host {
                None => cx
                    .notes
                    .push(format!("{here}: {} skipped: an empty drive", it.describe())),
                Some(h) if h.starts_with("ovf:/disk/") => disk_items.push(i),
                Some(h) => {
                    return Err(err(format!(
                        "{}: rasd:HostResource '{h}': a disk's image is named as ovf:/disk/ID \
                         (a Disk of the DiskSection)",
                        it.describe()
                    )));
                }
            }
        } else if [3, 4].contains(&it.kind) || CONTROLLERS.contains(&it.kind) {
        } else if let Some(why) = skipped(it.kind) {
            cx.notes
                .push(format!("{here}: {} skipped: {why}", it.describe()));
        } else if !required(it.node, ovf) {
            cx.notes.push(format!(
                "{here}: {} skipped: rasd:ResourceType {} is optional (ovf:required=\"false\") \
                 and Janus does not provide it",
                it.describe(),
                it.kind
            ));
        } else {
            return Err(err(format!(
                "{}: rasd:ResourceType {} is hardware Janus does not provide",
                it.describe(),
                it.kind
            )));
        }
    }
    let by_id: BTreeMap<&str, usize> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| it.instance.as_deref().map(|id| (id, i)))
        .collect();
    let mut keyed = Vec::new();
    for &i in &disk_items {
        keyed.push((position(&items, &by_id, i, 0).map_err(err)?, i));
    }
    keyed.sort();
    for w in keyed.windows(2) {
        let (a, b) = (&items[w[0].1], &items[w[1].1]);
        let key = |k: &[(u64, usize)]| k.iter().map(|p| p.0).collect::<Vec<_>>();
        if a.parent == b.parent
            && key(&w[0].0) == key(&w[1].0)
            && w[0].0.last().is_some_and(|p| p.0 != u64::MAX)
        {
            return Err(err(format!(
                "{}: the same rasd:AddressOnParent as {} on the same controller",
                b.describe(),
                a.describe()
            )));
        }
    }
    let mut disks = Vec::new();
    for (_, i) in keyed {
        disks.push(disk(cx, &items[i]).map_err(err)?);
    }

    let kernel = match x.kernel {
        Some(k) => k,
        // No kernel named: the VM boots what its first disk holds (the hypervisor finds it).
        None if !disks.is_empty() => String::new(),
        None => {
            return Err(err(format!(
                "{}: no disk to boot from and no kernel: give a disk, or \
                 <janus:Boot kernel=\"PATH\" initrd=\"PATH\" cmdline=\"…\"/> \
                 (xmlns:janus=\"{JANUS}\"; paths relative to the descriptor)",
                at(vs)
            )));
        }
    };
    let [on_poweroff, on_reboot, on_crash] = x.on;
    Ok(System {
        id: id.to_string(),
        vm: VmToml {
            name,
            personality,
            memory_mib: mib as u32,
            vcpus,
            kernel,
            initrd: x.initrd,
            cmdline: x.cmdline,
            on_poweroff,
            on_reboot,
            on_crash,
            disk: Vec::<DiskToml>::new(),
        },
        disks,
    })
}

/// Where an Item sits: its controllers' places, outermost first, then its own
/// (`AddressOnParent`, or last), each with document order to break ties.
fn position(
    items: &[Item<'_, '_>],
    by_id: &BTreeMap<&str, usize>,
    i: usize,
    depth: usize,
) -> Result<Vec<(u64, usize)>, String> {
    let it = &items[i];
    if depth > 8 {
        return Err(format!(
            "{}: rasd:Parent goes round in a circle",
            it.describe()
        ));
    }
    let mut key = match &it.parent {
        None => Vec::new(),
        Some(p) => {
            let j = by_id.get(p.as_str()).ok_or_else(|| {
                format!(
                    "{}: rasd:Parent '{p}' is no Item's InstanceID in this section",
                    it.describe()
                )
            })?;
            position(items, by_id, *j, depth + 1)?
        }
    };
    let addr = match it.address {
        Some(a) => number(a, "rasd:AddressOnParent")?,
        None => u64::MAX,
    };
    key.push((addr, i));
    Ok(key)
}

fn disk(cx: &mut Cx<'_, '_>, it: &Item<'_, '_>) -> Result<DiskUse, String> {
    let ovf = cx.ovf;
    let host = it.hosts.iter().find(|h| !h.is_empty()).expect("checked");
    let id = host.trim_start_matches("ovf:/disk/");
    let d = cx.disks.get(id).ok_or_else(|| {
        format!(
            "{}: rasd:HostResource '{host}': no Disk with ovf:diskId '{id}' in the DiskSection",
            it.describe()
        )
    })?;
    let here = format!("{} (Disk '{id}' of {})", at(*d), it.describe());
    if attr(*d, ovf, "parentRef").is_some() {
        return Err(format!(
            "{here}: a differencing disk (ovf:parentRef); Janus reads whole disks (`ovf export` \
             flattens chains)"
        ));
    }
    let read_only = match it.node.attribute((JANUS, "readOnly")) {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(v) => {
            return Err(format!(
                "{}: janus:readOnly=\"{v}\": true or false",
                it.describe()
            ));
        }
    };
    let cap = attr(*d, ovf, "capacity")
        .ok_or_else(|| format!("{here}: no ovf:capacity"))?
        .trim();
    let unit = attr(*d, ovf, "capacityAllocationUnits").unwrap_or("byte");
    let per = unit_bytes(unit).ok_or_else(|| {
        format!("{here}: ovf:capacityAllocationUnits '{unit}' is not a unit of bytes")
    })?;
    // `${property}` capacities come from a ProductSection Janus does not read.
    let capacity = cap
        .parse::<u64>()
        .ok()
        .and_then(|c| c.checked_mul(per))
        .ok_or_else(|| format!("{here}: ovf:capacity '{cap}' is not a number of {unit}"))?;
    let href = match attr(*d, ovf, "fileRef") {
        None => None,
        Some(f) => {
            let file = cx.files.get(f).ok_or_else(|| {
                format!(
                    "{here}: ovf:fileRef '{f}' has no References entry (no File with that ovf:id)"
                )
            })?;
            let format = attr(*d, ovf, "format")
                .ok_or_else(|| format!("{here}: no ovf:format for file '{}'", file.href))?;
            check_format(format).map_err(|name| {
                format!(
                    "{here}: file '{}' is {name} (ovf:format \"{format}\"); Janus runs VHD disks \
                     only: convert it (e.g. `qemu-img convert -O vpc`) and name the VHD format \
                     ({VHD_FORMAT})",
                    file.href
                )
            })?;
            Some(file.href.clone())
        }
    };
    if href.is_none() && capacity == 0 {
        return Err(format!("{here}: a blank disk of capacity 0"));
    }
    Ok(DiskUse {
        href,
        capacity,
        read_only,
        at: here,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        std::fs::read_to_string(crate::util::root().join("xtask/tests/ovf").join(name)).unwrap()
    }

    #[test]
    fn system_types_map_to_faces() {
        for t in [
            "xen-3.0-unknown",
            "xen-3.0-x86_64",
            "xen-3.0-x32",
            "hvm-3.0-unknown",
            "DMTF:xen:pv",
            "DMTF:xen:hvm",
            "pvh",
            "XEN",
        ] {
            assert_eq!(face_of(t), Some("xen"), "{t}");
        }
        for t in [
            "Microsoft:Hyper-V:System:Realized",
            "microsoft:hyper-v:system:planned",
            "hyperv",
            "Hyper-V",
            "ms:hyperv-gen2",
        ] {
            assert_eq!(face_of(t), Some("hyperv"), "{t}");
        }
        for t in ["vmx-07", "virtualbox-2.2", "301", "kvm", "xenserver", ""] {
            assert_eq!(face_of(t), None, "{t}");
        }
    }

    #[test]
    fn units_of_bytes() {
        assert_eq!(unit_bytes("byte * 2^20"), Some(1 << 20));
        assert_eq!(unit_bytes("byte*2^30"), Some(1 << 30));
        assert_eq!(unit_bytes("bytes * 10^6"), Some(1_000_000));
        assert_eq!(unit_bytes("byte"), Some(1));
        assert_eq!(unit_bytes("MegaBytes"), Some(1 << 20));
        assert_eq!(unit_bytes("GB"), Some(1 << 30));
        for bad in [
            "hertz * 10^6",
            "byte * 3^2",
            "furlongs",
            "byte * 2^99",
            "byte *",
        ] {
            assert_eq!(unit_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_other_than_vhd_are_named() {
        for ok in [
            "http://go.microsoft.com/fwlink/?LinkId=137171",
            "http://www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx",
            "http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx#monolithic_sparse",
            "https://technet.microsoft.com/en-us/virtualserver/bb676673.aspx",
        ] {
            assert_eq!(check_format(ok), Ok(()), "{ok}");
        }
        for (uri, name) in [
            (
                "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
                "VMDK (stream-optimized)",
            ),
            (
                "http://www.vmware.com/specifications/vmdk.html#sparse",
                "VMDK",
            ),
            (
                "http://technet.microsoft.com/en-us/library/hh831446.aspx",
                "VHDX",
            ),
            (
                "http://technet.microsoft.com/en-us/library/dd979539.aspx#VHDX",
                "VHDX",
            ),
            (
                "http://www.gnome.org/~markmc/qcow-image-format.html",
                "QCOW2",
            ),
            ("http://www.virtualbox.org/vdi", "VDI"),
            ("urn:janus:raw", "raw"),
            ("http://example.com/disk", "an unknown format"),
        ] {
            assert_eq!(check_format(uri), Err(name.to_string()), "{uri}");
        }
    }

    #[test]
    fn a_xenserver_export_is_a_xen_vm() {
        let d = parse(&data("xenserver-pv.ovf")).unwrap();
        assert_eq!(d.version, 1);
        let [s] = &d.systems[..] else { panic!() };
        let v = &s.vm;
        assert_eq!(v.name, "web-server");
        assert_eq!(v.personality, "xen");
        assert_eq!((v.memory_mib, v.vcpus), (64, 2));
        assert_eq!(v.kernel, "boot/vmlinux");
        assert_eq!(v.initrd.as_deref(), Some("boot/initrd.cpio"));
        assert_eq!(v.cmdline, "console=hvc0 root=/dev/xvda ro");
        let disks: Vec<_> = s
            .disks
            .iter()
            .map(|d| (d.href.as_deref(), d.read_only))
            .collect();
        assert_eq!(
            disks,
            [(Some("root.vhd"), false), (Some("data.vhd"), false)],
            "in AddressOnParent order, not the document's"
        );
        let notes = d.notes.join("\n");
        for want in ["named 'web-server'", "no network"] {
            assert!(notes.contains(want), "{want:?} not in notes:\n{notes}");
        }
    }

    #[test]
    fn a_hyperv_system_is_a_hyperv_vm() {
        let d = parse(&data("hyperv-scvmm.ovf")).unwrap();
        assert_eq!(d.version, 2);
        let [s] = &d.systems[..] else { panic!() };
        let v = &s.vm;
        assert_eq!(v.name, "ws2022-app");
        assert_eq!(v.personality, "hyperv");
        assert_eq!((v.memory_mib, v.vcpus), (2048, 4));
        assert_eq!(v.kernel, "kernel/bzImage");
        assert_eq!(v.initrd, None);
        assert_eq!(v.on_crash.as_deref(), Some("preserve"));
        let disks: Vec<_> = s
            .disks
            .iter()
            .map(|d| (d.href.as_deref(), d.read_only, d.capacity))
            .collect();
        assert_eq!(
            disks,
            [
                (Some("Virtual Hard Disks/os.vhd"), false, 16 << 20),
                (Some("Virtual Hard Disks/shared.vhd"), true, 8 << 20),
                (None, false, 4 << 20),
            ],
            "IDE 0 before SCSI 0; by location on each"
        );
        let notes = d.notes.join("\n");
        for want in ["no network", "no removable drives", "an empty drive"] {
            assert!(notes.contains(want), "{want:?} not in notes:\n{notes}");
        }
    }

    /// A minimal valid descriptor with `{..}` holes for the error cases.
    const MINI: &str = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:janus="https://janus.invalid/ovf/1">
  <References><File ovf:id="f1" ovf:href="a.vhd"/></References>
  <DiskSection><Info>d</Info>
    <Disk ovf:diskId="d1" ovf:fileRef="{FILEREF}" ovf:capacity="1048576"
      ovf:format="{FORMAT}"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm1">
    <Info>x</Info>
    <VirtualHardwareSection><Info>h</Info>
      <System><vssd:VirtualSystemType>{TYPE}</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>{UNITS}</rasd:AllocationUnits>
        <rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{MEM}</rasd:VirtualQuantity></Item>
      <Item><rasd:HostResource>{HOST}</rasd:HostResource><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>17</rasd:ResourceType></Item>
      {ITEM}
    </VirtualHardwareSection>
    {EXT}
  </VirtualSystem>
</Envelope>
"#;

    fn mini(holes: &[(&str, &str)]) -> String {
        let mut s = MINI.to_string();
        for (k, v) in holes {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        for (k, v) in [
            ("FILEREF", "f1"),
            ("FORMAT", VHD_FORMAT),
            ("TYPE", "xen-3.0-x86_64"),
            ("UNITS", "byte * 2^20"),
            ("MEM", "64"),
            ("HOST", "ovf:/disk/d1"),
            ("ITEM", ""),
            ("EXT", r#"<janus:Boot kernel="k"/>"#),
        ] {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }

    #[test]
    fn the_minimal_descriptor_is_good() {
        let d = parse(&mini(&[])).unwrap();
        assert_eq!(d.systems[0].vm.memory_mib, 64);
        assert_eq!(d.systems[0].disks[0].href.as_deref(), Some("a.vhd"));
        let none = parse(&mini(&[
            ("TYPE", "vmx-07"),
            (
                "EXT",
                r#"<janus:personality>none</janus:personality><janus:Boot kernel="k"/>"#,
            ),
        ]))
        .unwrap();
        assert_eq!(none.systems[0].vm.personality, "none");
    }

    #[test]
    fn a_vm_without_a_kernel_boots_from_its_disk() {
        let d = parse(&mini(&[("EXT", "")])).unwrap();
        assert_eq!(d.systems[0].vm.kernel, "");
        assert_eq!(d.systems[0].disks.len(), 1);
    }

    #[test]
    fn bad_descriptors_name_the_element_and_the_reason() {
        let cases: &[(String, &[&str])] = &[
            (
                mini(&[("FILEREF", "f9")]),
                &["<Disk>", "'d1'", "ovf:fileRef 'f9'", "no References entry"],
            ),
            (
                mini(&[(
                    "FORMAT",
                    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
                )]),
                &[
                    "<Disk>",
                    "a.vhd",
                    "VMDK (stream-optimized)",
                    "VHD disks only",
                ],
            ),
            (
                mini(&[(
                    "FORMAT",
                    "http://technet.microsoft.com/en-us/library/hh831446.aspx",
                )]),
                &["a.vhd", "is VHDX"],
            ),
            (
                mini(&[("TYPE", "vmx-07")]),
                &["<vssd:VirtualSystemType>", "'vmx-07'", "janus:personality"],
            ),
            (
                mini(&[("TYPE", "xen-3.0-x86_64 hyperv")]),
                &["both Xen and Hyper-V"],
            ),
            (
                mini(&[("UNITS", "furlongs")]),
                &[
                    "<rasd:AllocationUnits>",
                    "'furlongs'",
                    "not a unit of bytes",
                ],
            ),
            (
                mini(&[("UNITS", "byte * 10^6")]),
                &["InstanceID 1", "not a whole number of MiB"],
            ),
            (
                mini(&[("MEM", "4096")]),
                &["4096 MiB", "between 1 and 3072"],
            ),
            (
                mini(&[("MEM", "lots")]),
                &["<rasd:VirtualQuantity>", "'lots'", "not a whole number"],
            ),
            (
                mini(&[("HOST", "ovf:/disk/d7")]),
                &["<Item>", "InstanceID 2", "no Disk with ovf:diskId 'd7'"],
            ),
            (
                mini(&[("HOST", "ovf:/file/f1")]),
                &["InstanceID 2", "ovf:/disk/ID"],
            ),
            (
                mini(&[("EXT", r#"<janus:Boot initrd="i"/>"#)]),
                &["<janus:Boot>", "without kernel"],
            ),
            (
                mini(&[("EXT", r#"<janus:Boot kernel="k"/><janus:Kernel/>"#)]),
                &["<janus:Kernel>", "not a Janus extension"],
            ),
            (
                mini(&[(
                    "EXT",
                    r#"<janus:Boot kernel="k"/><janus:personality>kvm</janus:personality>"#,
                )]),
                &["<janus:personality>", "'kvm'"],
            ),
            (
                mini(&[("EXT", r#"<janus:Boot kernel="k" root="/dev/xvda"/>"#)]),
                &["<janus:Boot>", "'root'"],
            ),
            (
                mini(&[(
                    "EXT",
                    r#"<janus:Boot kernel="k"/><janus:Lifecycle onReboot="preserve"/>"#,
                )]),
                &[
                    "<janus:Lifecycle>",
                    "onReboot=\"preserve\"",
                    "stop, restart",
                ],
            ),
            (
                mini(&[(
                    "ITEM",
                    "<Item><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>18</rasd:ResourceType></Item>",
                )]),
                &["InstanceID 9", "ResourceType 18", "does not provide"],
            ),
            (
                mini(&[(
                    "ITEM",
                    "<Item><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType></Item>",
                )]),
                &["InstanceID 9", "a second Item of rasd:ResourceType 4"],
            ),
            (
                mini(&[(
                    "ITEM",
                    "<Item><rasd:InstanceID>9</rasd:InstanceID><rasd:Parent>77</rasd:Parent><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></Item>",
                )]),
                &["InstanceID 9", "rasd:Parent '77'"],
            ),
            (
                mini(&[("ITEM", "<Item><rasd:InstanceID>9</rasd:InstanceID></Item>")]),
                &["InstanceID 9", "no rasd:ResourceType"],
            ),
            (
                mini(&[]).replace(
                    "ovf:diskId=\"d1\"",
                    "ovf:diskId=\"d1\" ovf:parentRef=\"d0\"",
                ),
                &["<Disk>", "ovf:parentRef"],
            ),
            (
                mini(&[]).replace(
                    "ovf:href=\"a.vhd\"",
                    "ovf:href=\"a.vhd\" ovf:compression=\"gzip\"",
                ),
                &["<File> 'f1'", "compressed"],
            ),
            (
                mini(&[]).replace("ovf:href=\"a.vhd\"", "ovf:href=\"../a.vhd\""),
                &["<File>", "leaves the package"],
            ),
            (
                mini(&[]).replace("<rasd:ResourceType>4<", "<rasd:ResourceType>5<"),
                &["no memory Item"],
            ),
            (
                mini(&[]).replace("</Envelope>", ""),
                &["not well-formed XML"],
            ),
            (
                mini(&[]).replace("envelope/1\"\n", "envelope/0.9\"\n"),
                &["<Envelope>", "not an OVF 1.x or 2.x envelope"],
            ),
            (
                "<!DOCTYPE x [<!ENTITY a \"b\">]><x/>".to_string(),
                &["not well-formed XML"],
            ),
        ];
        for (text, wants) in cases {
            let e = parse(text).unwrap_err();
            for w in *wants {
                assert!(e.contains(w), "error {e:?} lacks {w:?}");
            }
            assert!(
                e.contains("line ") || e.contains("XML"),
                "error {e:?} names no line"
            );
        }
    }
}
