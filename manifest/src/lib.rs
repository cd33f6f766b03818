//! The boot manifest: which VMs to run. xtask validates the user's TOML and encodes it with
//! postcard behind a magic and version; the kernel decodes it into these bounded types.
//! Everything here is shared by both sides, so an encoder/decoder mismatch cannot compile.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// Leads the manifest module so a wrong file is named as such, not misparsed.
pub const MAGIC: &[u8; 8] = b"JANUSMF\0";
/// Bumped whenever the encoded types change.
pub const VERSION: u8 = 2;
/// The module name xtask gives the encoded manifest.
pub const MODULE_NAME: &str = "manifest.bin";

pub const MAX_VMS: usize = 8;
pub const MAX_VCPUS: u8 = 8;
pub const MAX_NAME: usize = 32;
pub const MAX_FILE: usize = 64;
pub const MAX_CMDLINE: usize = 1024;
pub const MIN_MEMORY_MIB: u32 = 1;
/// Guest RAM is one range below the 3 GiB MMIO hole (nothing splits it around the hole).
pub const MAX_MEMORY_MIB: u32 = 3 * 1024;
pub const MAX_DISKS: usize = 8;
/// Disks a Xen VM may have: its vbds are xvda to xvdd (their xenstore nodes share the
/// domain's bounded store).
pub const MAX_XEN_DISKS: usize = 4;
/// Disks a Hyper-V VM may have: one synthetic SCSI controller (VMBus channel) each.
pub const MAX_HYPERV_DISKS: usize = 4;
/// Images in one disk's chain: the disk and its parents.
pub const MAX_CHAIN: usize = 8;
/// The largest encoded manifest the kernel accepts.
pub const MAX_ENCODED: usize = MAX_VMS
    * (MAX_NAME + 2 * MAX_FILE + MAX_CMDLINE + 32 + MAX_DISKS * (MAX_FILE + 8 + MAX_CHAIN * 5))
    + 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Personality {
    /// Plain hardware emulation: no hypervisor ABI is offered.
    None,
    Xen,
    HyperV,
}

impl Personality {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "xen" => Some(Self::Xen),
            "hyperv" => Some(Self::HyperV),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Xen => "xen",
            Self::HyperV => "hyperv",
        }
    }
}

/// What the hypervisor does when a VM's guest ends in a given way (Xen `xl.cfg`'s
/// `on_poweroff`, `on_reboot`, `on_crash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnEnd {
    /// The VM ends (Xen's `destroy`).
    Stop,
    /// The VM is loaded again from its boot files and starts over.
    Restart,
    /// The VM ends and its state is kept and reported in full, for inspection (crashes only).
    Preserve,
}

impl OnEnd {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" | "destroy" => Some(Self::Stop),
            "restart" => Some(Self::Restart),
            "preserve" => Some(Self::Preserve),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Preserve => "preserve",
        }
    }
}

/// The three policies, with Xen's defaults: a reboot restarts, a power-off or crash ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    pub on_poweroff: OnEnd,
    pub on_reboot: OnEnd,
    pub on_crash: OnEnd,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            on_poweroff: OnEnd::Stop,
            on_reboot: OnEnd::Restart,
            on_crash: OnEnd::Stop,
        }
    }
}

/// One guest disk: a VHD image in a container of the host's block device (an NVMe namespace;
/// under QEMU, xtask attaches each image file as one), and the images of its parents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// The image's file name, for messages.
    pub name: String<MAX_FILE>,
    /// The namespace holding the image.
    pub nsid: u32,
    /// The namespaces holding its parents, nearest first (a differencing chain).
    pub parents: Vec<u32, { MAX_CHAIN - 1 }>,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String<MAX_NAME>,
    pub personality: Personality,
    pub memory_mib: u32,
    pub vcpus: u8,
    /// Module name of the guest kernel.
    pub kernel: String<MAX_FILE>,
    /// Module name of the guest initrd.
    pub initrd: Option<String<MAX_FILE>>,
    pub cmdline: String<MAX_CMDLINE>,
    pub policies: Policies,
    /// The guest's disks; the first is its first disk on every personality.
    pub disks: Vec<DiskSpec, MAX_DISKS>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub vms: Vec<VmSpec, MAX_VMS>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The module does not start with [`MAGIC`].
    NotAManifest,
    /// Encoded by an xtask with another [`VERSION`].
    Version { found: u8 },
    /// postcard could not decode the body (truncated or corrupted).
    Malformed,
    /// Bytes follow the encoded manifest.
    TrailingBytes,
    /// Decoded, but breaks a rule that xtask enforces (a hand-made or stale module).
    Invalid(Rule),
}

/// The rules both xtask (with file/key context) and the kernel (on decode) check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    NoVms,
    EmptyName,
    DuplicateName,
    MemoryRange,
    VcpuRange,
    EmptyKernel,
    /// `preserve` is for crashes only.
    PreserveNotCrash,
    /// A disk in namespace 0, or a chain naming one namespace twice.
    BadDisk,
    /// A Xen VM with more disks than its face serves.
    TooManyXenDisks,
    /// A Hyper-V VM with more disks than its face serves.
    TooManyHyperVDisks,
}

impl Rule {
    pub fn describe(self) -> &'static str {
        match self {
            Rule::NoVms => "the manifest lists no [[vm]]",
            Rule::EmptyName => "`name` must not be empty",
            Rule::DuplicateName => "`name` is used by another VM",
            Rule::MemoryRange => "`memory_mib` must be between 1 and 3072",
            Rule::VcpuRange => "`vcpus` must be between 1 and 8",
            Rule::EmptyKernel => {
                "`kernel` must name a file, or the VM must have a disk to boot from"
            }
            Rule::PreserveNotCrash => "`preserve` applies to `on_crash` only",
            Rule::BadDisk => "a disk names namespace 0 or one namespace twice in its chain",
            Rule::TooManyXenDisks => "a Xen VM has at most 4 disks (xvda to xvdd)",
            Rule::TooManyHyperVDisks => {
                "a Hyper-V VM has at most 4 disks (one VMBus SCSI controller each)"
            }
        }
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::NotAManifest => f.write_str("not a Janus manifest (bad magic)"),
            DecodeError::Version { found } => {
                write!(
                    f,
                    "manifest version {found}, this kernel reads version {VERSION}"
                )
            }
            DecodeError::Malformed => f.write_str("manifest body is truncated or corrupted"),
            DecodeError::TrailingBytes => f.write_str("bytes follow the manifest body"),
            DecodeError::Invalid(rule) => write!(f, "invalid manifest: {}", rule.describe()),
        }
    }
}

impl VmSpec {
    /// The per-VM rules; `Err` names the first one broken.
    pub fn check(&self) -> Result<(), Rule> {
        if self.name.is_empty() {
            return Err(Rule::EmptyName);
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(Rule::MemoryRange);
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(Rule::VcpuRange);
        }
        if self.kernel.is_empty() && self.disks.is_empty() {
            return Err(Rule::EmptyKernel);
        }
        if self.policies.on_poweroff == OnEnd::Preserve
            || self.policies.on_reboot == OnEnd::Preserve
        {
            return Err(Rule::PreserveNotCrash);
        }
        if self.personality == Personality::Xen && self.disks.len() > MAX_XEN_DISKS {
            return Err(Rule::TooManyXenDisks);
        }
        if self.personality == Personality::HyperV && self.disks.len() > MAX_HYPERV_DISKS {
            return Err(Rule::TooManyHyperVDisks);
        }
        Ok(())
    }
}

impl Manifest {
    pub fn check(&self) -> Result<(), (usize, Rule)> {
        if self.vms.is_empty() {
            return Err((0, Rule::NoVms));
        }
        for (i, vm) in self.vms.iter().enumerate() {
            vm.check().map_err(|r| (i, r))?;
            if self.vms[..i].iter().any(|other| other.name == vm.name) {
                return Err((i, Rule::DuplicateName));
            }
        }
        Ok(())
    }

    /// Magic, version, postcard body — into `out`; returns the used prefix.
    pub fn encode<'a>(&self, out: &'a mut [u8]) -> Result<&'a mut [u8], postcard::Error> {
        let head = MAGIC.len() + 1;
        if out.len() < head {
            return Err(postcard::Error::SerializeBufferFull);
        }
        out[..MAGIC.len()].copy_from_slice(MAGIC);
        out[MAGIC.len()] = VERSION;
        let body = postcard::to_slice(self, &mut out[head..])?.len();
        Ok(&mut out[..head + body])
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(DecodeError::NotAManifest)?;
        let (&version, body) = body.split_first().ok_or(DecodeError::Malformed)?;
        if version != VERSION {
            return Err(DecodeError::Version { found: version });
        }
        let (manifest, rest): (Manifest, _) =
            postcard::take_from_bytes(body).map_err(|_| DecodeError::Malformed)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        manifest
            .check()
            .map_err(|(_, rule)| DecodeError::Invalid(rule))?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str) -> VmSpec {
        VmSpec {
            name: name.try_into().unwrap(),
            personality: Personality::Xen,
            memory_mib: 256,
            vcpus: 2,
            kernel: "vmlinux".try_into().unwrap(),
            initrd: Some("initrd.cpio".try_into().unwrap()),
            cmdline: "console=hvc0 quiet".try_into().unwrap(),
            policies: Policies::default(),
            disks: Vec::new(),
        }
    }

    fn encoded(m: &Manifest) -> std::vec::Vec<u8> {
        let mut buf = vec![0u8; MAX_ENCODED];
        m.encode(&mut buf).unwrap().to_vec()
    }

    #[test]
    fn xen_and_hyperv_vms_have_at_most_four_disks() {
        let disk = |n: u32| DiskSpec {
            name: "d.vhd".try_into().unwrap(),
            nsid: n,
            parents: Vec::new(),
            read_only: false,
        };
        let mut v = vm("x");
        for n in 1..=MAX_XEN_DISKS as u32 {
            v.disks.push(disk(n)).unwrap();
        }
        assert_eq!(v.check(), Ok(()));
        v.disks.push(disk(9)).unwrap();
        assert_eq!(v.check(), Err(Rule::TooManyXenDisks));
        v.personality = Personality::HyperV;
        assert_eq!(v.check(), Err(Rule::TooManyHyperVDisks));
        v.disks.pop();
        assert_eq!(v.check(), Ok(()));
        v.personality = Personality::None;
        v.disks.push(disk(9)).unwrap();
        assert_eq!(v.check(), Ok(()), "the NVMe face takes them all");
    }

    #[test]
    fn round_trip() {
        let mut m = Manifest::default();
        m.vms.push(vm("xen-linux")).unwrap();
        let mut hv = vm("hv-linux");
        hv.personality = Personality::HyperV;
        hv.initrd = None;
        m.vms.push(hv).unwrap();
        let bytes = encoded(&m);
        assert_eq!(Manifest::decode(&bytes), Ok(m));
    }

    #[test]
    fn the_largest_manifest_fits_the_bound() {
        let mut m = Manifest::default();
        for i in 0..MAX_VMS {
            let mut v = vm("x");
            v.name.clear();
            for _ in 0..MAX_NAME - 1 {
                v.name.push(char::from(b'a' + i as u8)).unwrap();
            }
            v.kernel = core::iter::repeat_n('k', MAX_FILE).collect();
            v.initrd = Some(core::iter::repeat_n('i', MAX_FILE).collect());
            v.cmdline = core::iter::repeat_n('c', MAX_CMDLINE).collect();
            v.memory_mib = MAX_MEMORY_MIB;
            m.vms.push(v).unwrap();
        }
        assert_eq!(Manifest::decode(&encoded(&m)), Ok(m));
    }

    #[test]
    fn rejects_what_is_not_a_manifest() {
        assert_eq!(
            Manifest::decode(b"\x7fELF\x02\x01\x01"),
            Err(DecodeError::NotAManifest)
        );
        assert_eq!(Manifest::decode(b""), Err(DecodeError::NotAManifest));
        assert_eq!(Manifest::decode(MAGIC), Err(DecodeError::Malformed));
    }

    #[test]
    fn rejects_other_versions_truncation_and_trailing_bytes() {
        let mut m = Manifest::default();
        m.vms.push(vm("a")).unwrap();
        let mut bytes = encoded(&m);
        bytes[MAGIC.len()] = VERSION + 1;
        assert_eq!(
            Manifest::decode(&bytes),
            Err(DecodeError::Version { found: VERSION + 1 })
        );
        bytes[MAGIC.len()] = VERSION;
        for cut in MAGIC.len() + 1..bytes.len() {
            assert_eq!(
                Manifest::decode(&bytes[..cut]),
                Err(DecodeError::Malformed),
                "cut {cut}"
            );
        }
        bytes.push(0);
        assert_eq!(Manifest::decode(&bytes), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn decode_enforces_the_rules() {
        type Mutation = fn(&mut VmSpec);
        let cases: [(Mutation, Rule); 4] = [
            (|v| v.name.clear(), Rule::EmptyName),
            (|v| v.memory_mib = 0, Rule::MemoryRange),
            (|v| v.vcpus = 9, Rule::VcpuRange),
            (|v| v.kernel.clear(), Rule::EmptyKernel),
        ];
        for (mutate, rule) in cases {
            let mut m = Manifest::default();
            let mut v = vm("a");
            mutate(&mut v);
            m.vms.push(v).unwrap();
            assert_eq!(
                Manifest::decode(&encoded(&m)),
                Err(DecodeError::Invalid(rule))
            );
        }
        let mut dup = Manifest::default();
        dup.vms.push(vm("same")).unwrap();
        dup.vms.push(vm("same")).unwrap();
        assert_eq!(dup.check(), Err((1, Rule::DuplicateName)));
        assert_eq!(Manifest::default().check(), Err((0, Rule::NoVms)));
    }

    #[test]
    fn personalities_parse_their_manifest_spelling() {
        for p in [Personality::None, Personality::Xen, Personality::HyperV] {
            assert_eq!(Personality::parse(p.as_str()), Some(p));
        }
        assert_eq!(Personality::parse("kvm"), None);
    }
}
