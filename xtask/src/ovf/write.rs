//! Writing an OVF 2.0 descriptor: one VirtualSystem per VM (in a VirtualSystemCollection when
//! there are several), VHD disks, and Janus's extension for what OVF has no words for.

use super::read::{JANUS, OVF2, RASD, VHD_FORMAT, VSSD};

/// A package file (References/File).
pub struct File {
    pub id: String,
    pub href: String,
    pub size: u64,
}

/// A disk (DiskSection/Disk) in a file of the package.
pub struct Disk {
    pub id: String,
    pub file_id: String,
    pub capacity: u64,
}

pub struct Vm {
    pub name: String,
    pub personality: &'static str,
    pub memory_mib: u32,
    pub vcpus: u8,
    /// hrefs of package files.
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: String,
    /// on_poweroff, on_reboot, on_crash.
    pub on: [&'static str; 3],
    /// (disk id, read-only), first disk first.
    pub disks: Vec<(String, bool)>,
}

pub struct Package {
    pub name: String,
    pub files: Vec<File>,
    pub disks: Vec<Disk>,
    pub vms: Vec<Vm>,
}

/// `s` escaped for text and double-quoted attributes (control characters as references).
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\t' | '\n' | '\r' => o.push_str(&format!("&#{};", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// An indenting writer of elements.
struct Xml {
    out: String,
    depth: usize,
}

impl Xml {
    fn tag(&mut self, name: &str, attrs: &[(&str, &str)]) -> String {
        let mut t = format!("{}<{name}", "  ".repeat(self.depth));
        for (k, v) in attrs {
            t.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        t
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let t = self.tag(name, attrs);
        self.out.push_str(&t);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.out
            .push_str(&format!("{}</{name}>\n", "  ".repeat(self.depth)));
    }

    /// An element with text (or empty, when `text` is `None`).
    fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: Option<&str>) {
        let t = self.tag(name, attrs);
        self.out.push_str(&t);
        match text {
            Some(x) => self.out.push_str(&format!(">{}</{name}>\n", escape(x))),
            None => self.out.push_str("/>\n"),
        }
    }
}

/// What to write for each face in `vssd:VirtualSystemType` (Janus reads `janus:personality`).
fn system_type(personality: &str) -> &'static str {
    match personality {
        "xen" => "xen-3.0-x86_64",
        "hyperv" => "Microsoft:Hyper-V:System:Realized",
        _ => "janus-none",
    }
}

/// The descriptor's text.
pub fn descriptor(p: &Package) -> String {
    let mut x = Xml {
        out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
        depth: 0,
    };
    x.out
        .push_str("<!-- Written by `cargo xtask ovf export` (Janus). -->\n");
    x.open(
        "Envelope",
        &[
            ("xmlns", OVF2),
            ("xmlns:ovf", OVF2),
            ("xmlns:rasd", RASD),
            ("xmlns:vssd", VSSD),
            ("xmlns:janus", JANUS),
            ("xml:lang", "en-US"),
        ],
    );
    x.open("References", &[]);
    for f in &p.files {
        x.leaf(
            "File",
            &[
                ("ovf:id", &f.id),
                ("ovf:href", &f.href),
                ("ovf:size", &f.size.to_string()),
            ],
            None,
        );
    }
    x.close("References");
    if !p.disks.is_empty() {
        x.open("DiskSection", &[]);
        x.leaf("Info", &[], Some("Virtual disks (VHD)"));
        for d in &p.disks {
            x.leaf(
                "Disk",
                &[
                    ("ovf:diskId", &d.id),
                    ("ovf:fileRef", &d.file_id),
                    ("ovf:capacity", &d.capacity.to_string()),
                    ("ovf:capacityAllocationUnits", "byte"),
                    ("ovf:format", VHD_FORMAT),
                ],
                None,
            );
        }
        x.close("DiskSection");
    }
    let several = p.vms.len() > 1;
    if several {
        // ids are unique in a package: the collection's must not be a VM's.
        let mut id = p.name.clone();
        while p.vms.iter().any(|v| v.name == id) {
            id.push_str("-all");
        }
        x.open("VirtualSystemCollection", &[("ovf:id", &id)]);
        x.leaf("Info", &[], Some("The VMs of a Janus manifest"));
        x.leaf("Name", &[], Some(&p.name));
    }
    for vm in &p.vms {
        system(&mut x, vm);
    }
    if several {
        x.close("VirtualSystemCollection");
    }
    x.close("Envelope");
    x.out
}

fn system(x: &mut Xml, vm: &Vm) {
    x.open("VirtualSystem", &[("ovf:id", &vm.name)]);
    x.leaf("Info", &[], Some("A Janus VM"));
    x.leaf("Name", &[], Some(&vm.name));
    x.open("OperatingSystemSection", &[("ovf:id", "1")]);
    x.leaf("Info", &[], Some("The guest operating system"));
    x.leaf("Description", &[], Some("Other"));
    x.close("OperatingSystemSection");
    x.open("VirtualHardwareSection", &[]);
    x.leaf("Info", &[], Some("Virtual hardware requirements"));
    x.open("System", &[]);
    x.leaf("vssd:ElementName", &[], Some("Virtual Hardware Family"));
    x.leaf("vssd:InstanceID", &[], Some("0"));
    x.leaf("vssd:VirtualSystemIdentifier", &[], Some(&vm.name));
    x.leaf(
        "vssd:VirtualSystemType",
        &[],
        Some(system_type(vm.personality)),
    );
    x.close("System");
    // RASD elements in the schema's (alphabetical) order.
    let item = |x: &mut Xml, attrs: &[(&str, &str)], fields: &[(&str, &str)]| {
        x.open("Item", attrs);
        for (k, v) in fields {
            x.leaf(&format!("rasd:{k}"), &[], Some(v));
        }
        x.close("Item");
    };
    let vcpus = vm.vcpus.to_string();
    item(
        x,
        &[],
        &[
            ("AllocationUnits", "count"),
            ("ElementName", &format!("{vcpus} virtual CPU(s)")),
            ("InstanceID", "1"),
            ("ResourceType", "3"),
            ("VirtualQuantity", &vcpus),
        ],
    );
    let mem = vm.memory_mib.to_string();
    item(
        x,
        &[],
        &[
            ("AllocationUnits", "byte * 2^20"),
            ("ElementName", &format!("{mem} MiB of memory")),
            ("InstanceID", "2"),
            ("ResourceType", "4"),
            ("VirtualQuantity", &mem),
        ],
    );
    if !vm.disks.is_empty() {
        // The face's own disk bus: Xen's PV block devices, Hyper-V's synthetic SCSI.
        let (kind, name) = match vm.personality {
            "hyperv" => ("6", "SCSI controller (Hyper-V synthetic)"),
            "xen" => ("20", "Xen PV block devices (xvd*)"),
            _ => ("20", "Disk controller"),
        };
        item(
            x,
            &[],
            &[
                ("Address", "0"),
                ("ElementName", name),
                ("InstanceID", "3"),
                ("ResourceType", kind),
            ],
        );
    }
    for (j, (disk, ro)) in vm.disks.iter().enumerate() {
        let attrs: &[(&str, &str)] = if *ro {
            &[("janus:readOnly", "true")]
        } else {
            &[]
        };
        item(
            x,
            attrs,
            &[
                ("AddressOnParent", &j.to_string()),
                ("ElementName", &format!("Disk {j}")),
                ("HostResource", &format!("ovf:/disk/{disk}")),
                ("InstanceID", &(4 + j).to_string()),
                ("Parent", "3"),
                ("ResourceType", "17"),
            ],
        );
    }
    x.close("VirtualHardwareSection");
    let optional = ("ovf:required", "false");
    x.leaf("janus:personality", &[optional], Some(vm.personality));
    // A VM without a kernel boots from its disk: only its command line travels.
    let mut boot = vec![optional];
    if !vm.kernel.is_empty() {
        boot.push(("kernel", vm.kernel.as_str()));
    }
    if let Some(i) = &vm.initrd {
        boot.push(("initrd", i));
    }
    boot.push(("cmdline", &vm.cmdline));
    x.leaf("janus:Boot", &boot, None);
    x.leaf(
        "janus:Lifecycle",
        &[
            optional,
            ("onPoweroff", vm.on[0]),
            ("onReboot", vm.on[1]),
            ("onCrash", vm.on[2]),
        ],
        None,
    );
    x.close("VirtualSystem");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let p = Package {
            name: "pair".into(),
            files: vec![
                File {
                    id: "file1".into(),
                    href: "k & <k>".into(),
                    size: 3,
                },
                File {
                    id: "file2".into(),
                    href: "a.vhd".into(),
                    size: 9,
                },
            ],
            disks: vec![Disk {
                id: "disk1".into(),
                file_id: "file2".into(),
                capacity: 4 << 20,
            }],
            vms: vec![
                Vm {
                    name: "a".into(),
                    personality: "xen",
                    memory_mib: 64,
                    vcpus: 2,
                    kernel: "k & <k>".into(),
                    initrd: None,
                    cmdline: "say=\"hi\" it's\ttabbed".into(),
                    on: ["restart", "stop", "preserve"],
                    disks: vec![("disk1".into(), true)],
                },
                Vm {
                    name: "b".into(),
                    personality: "hyperv",
                    memory_mib: 32,
                    vcpus: 1,
                    kernel: "k & <k>".into(),
                    initrd: None,
                    cmdline: String::new(),
                    on: ["stop", "restart", "stop"],
                    disks: vec![],
                },
            ],
        };
        let text = descriptor(&p);
        let d = super::super::read::parse(&text).unwrap();
        assert_eq!(d.version, 2);
        assert!(d.notes.is_empty(), "{:?}", d.notes);
        let [a, b] = &d.systems[..] else { panic!() };
        assert_eq!(
            (
                a.vm.name.as_str(),
                a.vm.personality.as_str(),
                a.vm.memory_mib,
                a.vm.vcpus
            ),
            ("a", "xen", 64, 2)
        );
        assert_eq!(a.vm.kernel, "k & <k>");
        assert_eq!(a.vm.cmdline, "say=\"hi\" it's\ttabbed");
        assert_eq!(a.vm.on_poweroff.as_deref(), Some("restart"));
        assert_eq!(a.vm.on_reboot.as_deref(), Some("stop"));
        assert_eq!(a.vm.on_crash.as_deref(), Some("preserve"));
        assert_eq!(a.disks.len(), 1);
        assert_eq!(a.disks[0].href.as_deref(), Some("a.vhd"));
        assert!(a.disks[0].read_only);
        assert_eq!(a.disks[0].capacity, 4 << 20);
        assert_eq!(b.vm.personality, "hyperv");
        assert!(b.disks.is_empty());
    }
}
