//! The suite's boot cases: what each boots, under which emulator, and what the hypervisor
//! must report for it to pass.

mod debian;

use super::NVME_SELFTEST;
use crate::emulator::{Emulator, FAIR_SHARE_OF_TWO};
use crate::linux_disk_cases::{self, Face};

/// Cases whose VM must get a fair share of a contended pCPU, as the hypervisor measured it
/// (`vm-cpu` records): (case, VM, least share). The chaos cases run the chaos VM and its
/// neighbour on one pCPU with round-robin slices, so each should get about half of it while
/// both are runnable.
pub(super) const FAIR_SHARES: &[(&str, &str, f64)] = &[
    ("qemu-svm-chaos-xen", "neighbour", FAIR_SHARE_OF_TWO),
    ("qemu-svm-chaos-hyperv", "neighbour", FAIR_SHARE_OF_TWO),
    ("bochs-vmx-chaos-xen", "neighbour", FAIR_SHARE_OF_TWO),
    ("bochs-vmx-chaos-hyperv", "neighbour", FAIR_SHARE_OF_TWO),
];
/// Less contention than this proves nothing about sharing (the two were not on one pCPU).
pub(super) const MIN_CONTENDING_US: u64 = 200_000;

/// What a boot case expects.
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) emulator: Emulator,
    pub(super) manifest: &'static str,
    pub(super) cmdline: &'static str,
    /// `true`: the run must pass; `false`: it must fail.
    pub(super) pass: bool,
    /// Each must appear in COM1.
    pub(super) com1: &'static [&'static str],
    /// Each must appear among the decoded defmt lines.
    pub(super) defmt: &'static [&'static str],
    pub(super) timeout_s: u64,
    /// Linux guests (VM name, face) whose init.sh report must be clean.
    pub(super) linux: &'static [(&'static str, &'static str)],
    /// How VMs must end, as the hypervisor records it (VM name, class of `vm-end`).
    pub(super) ends: &'static [(&'static str, &'static str)],
    /// VMs that must have started over (`vm-restart`).
    pub(super) restarts: &'static [&'static str],
    /// The exit code `cargo xtask run` gives this run (see `emulator::exit_code`).
    pub(super) exit_code: u8,
    /// Makes what the manifest names (disk images) before the run.
    pub(super) setup: Option<fn() -> anyhow::Result<()>>,
    /// Checks on the host after the run (the disk images, with independent tools).
    pub(super) verify: Option<fn() -> anyhow::Result<()>>,
    /// Runs after xtask staged and checked the manifest, just before the emulator starts
    /// (to damage what xtask accepted, so that the hypervisor's own checks are tested).
    pub(super) tamper: Option<fn() -> anyhow::Result<()>>,
    /// Boot from a directory `cargo xtask pxe` staged, through QEMU's own iPXE.
    pub(super) pxe: bool,
    /// Kernel features of a single-ABI image built for this case alone (empty: the default
    /// image every other case shares).
    pub(super) features: &'static [&'static str],
    /// None of these may appear in COM1 (as `com1` matches them).
    pub(super) absent: &'static [&'static str],
    /// At most this many COM1 lines may show each (as `absent` matches them).
    pub(super) at_most: &'static [(&'static str, usize)],
    /// Boots that follow this one, in order, each run and judged as a case of its own (its
    /// setup, manifest, emulator run, the checks above, verify), as steps of this case: the
    /// first that fails fails it. For what must outlive a boot (a disk moving between faces).
    pub(super) then: Vec<Case>,
    /// Who types on the hypervisor's console during the run.
    pub(super) typing: Typing,
}

impl Default for Case {
    /// A QEMU boot that must pass within 600 s and expects nothing: each case says what it is
    /// about.
    fn default() -> Self {
        Case {
            name: "",
            emulator: Emulator::Qemu,
            manifest: "",
            cmdline: "",
            pass: true,
            com1: &[],
            defmt: &[],
            timeout_s: 600,
            linux: &[],
            ends: &[],
            restarts: &[],
            exit_code: 0,
            setup: None,
            verify: None,
            tamper: None,
            pxe: false,
            features: &[],
            absent: &[],
            at_most: &[],
            then: Vec::new(),
            typing: Typing::Nobody,
        }
    }
}

/// Who types on the hypervisor's console during a case's run (see `typist`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Typing {
    Nobody,
    /// `cargo xtask run --until-login`: every VM must reach its login prompt (timed on the
    /// hypervisor's clock), then all are asked to shut down.
    UntilLogin,
    /// Logs in on each VM's console, has its shell compute a line, types `poweroff`.
    LogInAndType,
}

pub(super) const BANNER: &[&str] = &[
    "janus 0.1.0",
    "cpu: ",
    "memory: ",
    "tsc: ",
    "apic: ",
    "modules: ",
    "smp: 2 pCPU(s) online",
    "personalities: none",
];
/// The demo's probe VM: every check passed, its vCPUs ran, it powered itself off.
pub(super) const PROBE_OK: &[&str] = &[
    "vm probe: personality none, 32 MiB, 2 vCPU(s)",
    "[probe] probe: check smp-aps-started ... ok",
    "[probe] probe: check every-vcpu-made-progress ... ok",
    "[probe] probe: check xsave-follows-xcr0 ... ok",
    // Plain hardware: the APIC handed over in xAPIC mode, and the PCI bus.
    "[probe] probe: check xapic-mmio-id ... ok",
    "[probe] probe: check xapic-to-x2apic ... ok",
    "[probe] probe: check pci-host-bridge ... ok",
    "[probe] probe: check pci-ecam-matches-cf8 ... ok",
    "[probe] probe: 28 passed, 0 failed",
    "[probe] probe: verdict: PASS",
    "vm probe: stopped: powered off",
    "janus: all VMs have stopped",
];
/// The probe on the Xen face (manifests/probe-xen.toml): the ABI checks of issue 5.
pub(super) const PROBE_XEN_OK: &[&str] = &[
    "vm probe-xen: personality xen, 32 MiB, 2 vCPU(s)",
    "[probe-xen] probe: check xen-cpuid-signature ... ok",
    "[probe-xen] probe: check xen-hypercall-page ... ok",
    "[probe-xen] probe: check xen-pvclock-monotonic ... ok",
    "[probe-xen] probe: check xen-evtchn-loopback-send ... ok",
    "[probe-xen] probe: check xen-timer-not-early ... ok",
    "[probe-xen] probe: check xen-bad-hypercall-number-enosys ... ok",
    "[probe-xen] probe: check xen-bad-pointer-efault ... ok",
    "[probe-xen] probe: check xen-gnttab-query-size ... ok",
    "[probe-xen] probe: check xen-gnttab-frame-outside-ram-is-memory ... ok",
    "[probe-xen] probe: check xen-gnttab-frame-moves ... ok",
    "[probe-xen] probe: check xen-gnttab-bad-placement-einval ... ok",
    "[probe-xen] probe: check xen-store-read-domid ... ok",
    "[probe-xen] probe: check xen-store-hostile-paths ... ok",
    "[probe-xen] probe: check xen-store-watch-fires-at-once ... ok",
    "[probe-xen] probe: check xen-store-transaction-conflict-eagain ... ok",
    "[probe-xen] probe: check xen-store-quotas ... ok",
    "[probe-xen] probe: check xen-store-oversized-message-drops-the-connection ... ok",
    "[probe-xen] probe: 58 passed, 0 failed",
    "[probe-xen] probe: verdict: PASS",
    "vm probe-xen: stopped: powered off",
];
/// The Xen probe with `janus.mitigations=all`: VERW (or the L1D flush) before every entry.
const PROBE_XEN_MITIGATED: &[&str] = &[
    "mitigations: RSB refill on exit, ",
    " on entry (janus.mitigations=all)",
    "[probe-xen] probe: 58 passed, 0 failed",
    "[probe-xen] probe: verdict: PASS",
    "vm probe-xen: stopped: powered off",
];
/// The probe on the Hyper-V face (manifests/probe-hyperv.toml): the ABI checks of issue 6,
/// then VMBus (issue 16) with the VM's disk as a storvsc SCSI controller.
pub(super) const PROBE_HYPERV_OK: &[&str] = &[
    "vm probe-hyperv: personality hyperv, 32 MiB, 2 vCPU(s)",
    "[probe-hyperv] probe: check hv-cpuid-features ... ok",
    "[probe-hyperv] probe: check hv-hypercall-page ... ok",
    "[probe-hyperv] probe: check hv-tsc-page-matches-ref-counter ... ok",
    "[probe-hyperv] probe: check hv-stimer-not-early ... ok",
    "[probe-hyperv] probe: check hv-status-unknown-code ... ok",
    "[probe-hyperv] probe: check hv-status-rep-count-on-simple-call ... ok",
    "[probe-hyperv] probe: check hv-status-bad-input-gpa ... ok",
    "[probe-hyperv] probe: check hv-vmbus-version-unsupported-refused ... ok",
    "[probe-hyperv] probe: check hv-vmbus-version-negotiated ... ok",
    "[probe-hyperv] probe: check hv-vmbus-sint-interrupt ... ok",
    "[probe-hyperv] probe: check hv-vmbus-offers ... ok",
    "[probe-hyperv] probe: check hv-vmbus-post-message-invalid-parameter ... ok",
    "[probe-hyperv] probe: check hv-vmbus-unknown-connection-id ... ok",
    "[probe-hyperv] probe: check hv-vmbus-gpadl-outside-ram-refused ... ok",
    "[probe-hyperv] probe: check hv-vmbus-gpadl-multi-message ... ok",
    "[probe-hyperv] probe: check hv-vmbus-open-unknown-gpadl-refused ... ok",
    "[probe-hyperv] probe: check hv-vmbus-open ... ok",
    "[probe-hyperv] probe: check hv-vmbus-ring-host-packet ... ok",
    "[probe-hyperv] probe: check hv-vmbus-ring-guest-packet ... ok",
    "[probe-hyperv] probe: check hv-vmbus-storvsc-open ... ok",
    "[probe-hyperv] probe: check hv-vmbus-storvsc-completion ... ok",
    "[probe-hyperv] probe: check hv-vmbus-storvsc-init ... ok",
    "[probe-hyperv] probe: check hv-vmbus-storvsc-inquiry ... ok",
    "[probe-hyperv] probe: check hv-vmbus-storvsc-srb-longer-than-buffer ... ok",
    "[probe-hyperv] probe: check hv-vmbus-ring-bad-index-kills-channel ... ok",
    "[probe-hyperv] probe: check hv-vmbus-storvsc-bad-index-kills-channel ... ok",
    "[probe-hyperv] probe: check hv-vmbus-unload ... ok",
    "[probe-hyperv] probe: check hv-vmbus-masked-sint-still-delivers ... ok",
    "[probe-hyperv] probe: 67 passed, 0 failed",
    "[probe-hyperv] probe: verdict: PASS",
    "vm probe-hyperv: stopped: powered off",
];
/// The same without a disk (manifests/probe-hyperv-nodisk.toml, for Bochs, which has no NVMe
/// controller): VMBus on the shutdown service's ring, no storvsc checks.
const PROBE_HYPERV_NODISK_OK: &[&str] = &[
    "vm probe-hyperv: personality hyperv, 32 MiB, 2 vCPU(s)",
    "[probe-hyperv] probe: check hv-cpuid-features ... ok",
    "[probe-hyperv] probe: check hv-hypercall-page ... ok",
    "[probe-hyperv] probe: check hv-tsc-page-matches-ref-counter ... ok",
    "[probe-hyperv] probe: check hv-stimer-not-early ... ok",
    "[probe-hyperv] probe: check hv-status-unknown-code ... ok",
    "[probe-hyperv] probe: check hv-status-rep-count-on-simple-call ... ok",
    "[probe-hyperv] probe: check hv-status-bad-input-gpa ... ok",
    "[probe-hyperv] probe: check hv-vmbus-version-unsupported-refused ... ok",
    "[probe-hyperv] probe: check hv-vmbus-version-negotiated ... ok",
    "[probe-hyperv] probe: check hv-vmbus-sint-interrupt ... ok",
    "[probe-hyperv] probe: check hv-vmbus-offers ... ok",
    "[probe-hyperv] probe: check hv-vmbus-post-message-invalid-parameter ... ok",
    "[probe-hyperv] probe: check hv-vmbus-unknown-connection-id ... ok",
    "[probe-hyperv] probe: check hv-vmbus-gpadl-outside-ram-refused ... ok",
    "[probe-hyperv] probe: check hv-vmbus-gpadl-multi-message ... ok",
    "[probe-hyperv] probe: check hv-vmbus-open-unknown-gpadl-refused ... ok",
    "[probe-hyperv] probe: check hv-vmbus-open ... ok",
    "[probe-hyperv] probe: check hv-vmbus-ring-host-packet ... ok",
    "[probe-hyperv] probe: check hv-vmbus-ring-guest-packet ... ok",
    "[probe-hyperv] probe: check hv-vmbus-ring-bad-index-kills-channel ... ok",
    "[probe-hyperv] probe: check hv-vmbus-unload ... ok",
    "[probe-hyperv] probe: check hv-vmbus-masked-sint-still-delivers ... ok",
    "[probe-hyperv] probe: 61 passed, 0 failed",
    "[probe-hyperv] probe: verdict: PASS",
    "vm probe-hyperv: stopped: powered off",
];

/// A single-ABI image refuses a manifest naming the face it lacks, naming the VM and the
/// personality; a failure of the hypervisor's own (`run` exits 7), as any refused manifest.
const XEN_ONLY_REFUSES: &[&str] = &[
    "personalities: none xen",
    "janus: FATAL: VM 'probe-hyperv' wants the hyperv personality, which this image was built without",
];
const HYPERV_ONLY_REFUSES: &[&str] = &[
    "personalities: none hyperv",
    "janus: FATAL: VM 'probe-xen' wants the xen personality, which this image was built without",
];

/// A Linux boot under QEMU that must pass: its COM1 lines, the Linux guests whose init.sh
/// report must be clean (VM, face), how its VMs end.
fn linux(
    name: &'static str,
    manifest: &'static str,
    com1: &'static [&'static str],
    linux: &'static [(&'static str, &'static str)],
    ends: &'static [(&'static str, &'static str)],
) -> Case {
    Case {
        name,
        emulator: Emulator::Qemu,
        manifest,
        com1,
        timeout_s: 600,
        linux,
        ends,
        ..Case::default()
    }
}

pub(super) fn cases(inject_failure: bool) -> Vec<Case> {
    let probe = |name, emulator, com1: &'static [&'static str]| Case {
        name,
        emulator,
        manifest: "manifests/demo.toml",
        com1,
        defmt: &[
            "info janus 0.1.0: host timer running",
            "info manifest: 1 VM(s) accepted",
            "info vm stopped after",
        ],
        timeout_s: 300,
        ends: &[("probe", "poweroff")],
        ..Case::default()
    };
    let mut v = vec![
        probe(
            "qemu-svm-probe",
            Emulator::Qemu,
            &[
                "virtualization: AMD SVM",
                "NPT yes",
                "NRIP save no",
                "interrupts by V_IRQ",
            ],
        ),
        Case {
            name: "qemu-svm-three-vms-on-two-pcpus",
            emulator: Emulator::Qemu,
            manifest: "manifests/smp3.toml",
            com1: &[
                "[alpha] probe: check every-vcpu-made-progress ... ok",
                "[beta] probe: check every-vcpu-made-progress ... ok",
                "[gamma] probe: check every-vcpu-made-progress ... ok",
                "[alpha] probe: verdict: PASS",
                "[beta] probe: verdict: PASS",
                "[gamma] probe: verdict: PASS",
                "vm alpha: stopped: powered off",
                "vm beta: stopped: powered off",
                "vm gamma: stopped: powered off",
                "vm alpha: ",
                " exits:",
                "  io ",
            ],
            timeout_s: 300,
            ends: &[
                ("alpha", "poweroff"),
                ("beta", "poweroff"),
                ("gamma", "poweroff"),
            ],
            ..Case::default()
        },
        Case {
            name: "qemu-svm-triple-fault-stops-one-vm",
            emulator: Emulator::Qemu,
            manifest: "manifests/triple-fault.toml",
            // The survivor's clean end does not make the run pass: a VM triple-faulted.
            pass: false,
            com1: &[
                "[crasher] probe: triple faulting on purpose",
                "vm crasher: stopped: triple fault on vCPU 0",
                // The report walks CR2 through the crasher's own page tables.
                "vcpu 0: walk 0x0: L4 entry at ",
                "vcpu 0: walk 0x0: L2 entry at ",
                // ...and its last exits: the shutdown interrupted the INT3 being delivered.
                "exit 0x7f info1 0x0 info2 0x0 vectoring 0x80000403 -> rip ",
                // ...and checks that nothing wrote over its nested tables.
                "vm crasher: nested tables intact (",
                " of 16 MiB mapped 1:1 onto its RAM, the rest never used)",
                "[survivor] probe: verdict: PASS",
                "vm survivor: stopped: powered off",
            ],
            timeout_s: 300,
            ends: &[("crasher", "triple-fault"), ("survivor", "poweroff")],
            exit_code: crate::emulator::exit_code::TRIPLE_FAULT,
            ..Case::default()
        },
        Case {
            name: "qemu-panic-is-a-failure",
            emulator: Emulator::Qemu,
            manifest: "manifests/demo.toml",
            cmdline: "janus.selftest=panic",
            pass: false,
            com1: &["janus: PANIC: ", "deliberate panic"],
            timeout_s: 60,
            exit_code: crate::emulator::exit_code::HYPERVISOR,
            ..Case::default()
        },
        Case {
            name: "qemu-fault-is-a-failure",
            emulator: Emulator::Qemu,
            manifest: "manifests/demo.toml",
            cmdline: "janus.selftest=fault",
            pass: false,
            com1: &["FATAL host exception #6 (invalid opcode)"],
            timeout_s: 60,
            exit_code: crate::emulator::exit_code::HYPERVISOR,
            ..Case::default()
        },
        Case {
            name: "qemu-stack-overflow-is-caught",
            emulator: Emulator::Qemu,
            manifest: "manifests/demo.toml",
            cmdline: "janus.selftest=stack-overflow",
            pass: false,
            com1: &["FATAL kernel stack overflow on pCPU 0"],
            timeout_s: 60,
            exit_code: crate::emulator::exit_code::HYPERVISOR,
            ..Case::default()
        },
        probe(
            "bochs-vmx-probe",
            Emulator::Bochs,
            &[
                "virtualization: Intel VMX",
                "EPT yes",
                "unrestricted guest yes",
            ],
        ),
        probe(
            "bochs-svm-probe",
            Emulator::BochsSvm,
            &[
                "virtualization: AMD SVM",
                "NRIP save yes",
                "interrupts by EVENTINJ",
            ],
        ),
    ];
    let face = |name, emulator, manifest, com1, ends| Case {
        name,
        emulator,
        manifest,
        com1,
        timeout_s: 300,
        ends,
        ..Case::default()
    };
    for (emulator, xen, hyperv, hyperv_manifest, hyperv_com1) in [
        (
            Emulator::Qemu,
            "qemu-svm-probe-xen",
            "qemu-svm-probe-hyperv",
            "manifests/probe-hyperv.toml",
            PROBE_HYPERV_OK,
        ),
        (
            Emulator::Bochs,
            "bochs-vmx-probe-xen",
            "bochs-vmx-probe-hyperv",
            "manifests/probe-hyperv-nodisk.toml",
            PROBE_HYPERV_NODISK_OK,
        ),
    ] {
        v.push(face(
            xen,
            emulator,
            "manifests/probe-xen.toml",
            PROBE_XEN_OK,
            &[("probe-xen", "poweroff")],
        ));
        v.push(face(
            hyperv,
            emulator,
            hyperv_manifest,
            hyperv_com1,
            &[("probe-hyperv", "poweroff")],
        ));
    }
    // OVF: a package `cargo xtask ovf export` made from probe-xen.toml, and one written by
    // hand as Hyper-V tools write them, each run as its VMs' manifest.
    v.push(Case {
        setup: Some(crate::ovf_cases::setup_exported),
        ..face(
            "qemu-svm-ovf-exported-runs",
            Emulator::Qemu,
            crate::ovf_cases::EXPORTED,
            PROBE_XEN_OK,
            &[("probe-xen", "poweroff")],
        )
    });
    v.push(Case {
        setup: Some(crate::ovf_cases::setup_hand_written),
        ..face(
            "qemu-svm-ovf-hand-written-runs",
            Emulator::Qemu,
            crate::ovf_cases::HAND_WRITTEN,
            PROBE_HYPERV_OK,
            &[("probe-hyperv", "poweroff")],
        )
    });
    // Debian's kernel on each face, then both side by side (what `cargo xtask run` boots).
    // Only under QEMU: Bochs's clock is its own, and a Linux boot there outlasts CI.
    v.push(linux(
        "qemu-svm-xen-linux",
        "manifests/xen-linux.toml",
        &["vm xen-linux: stopped: powered off"],
        &[("xen-linux", "xen")],
        &[("xen-linux", "poweroff")],
    ));
    // The same guest from Xen's own xl.cfg.
    v.push(linux(
        "qemu-svm-xen-linux-xlcfg",
        "manifests/xen-linux.cfg",
        &["vm xen-linux: stopped: powered off"],
        &[("xen-linux", "xen")],
        &[("xen-linux", "poweroff")],
    ));
    v.push(linux(
        "qemu-svm-hyperv-linux",
        "manifests/hyperv-linux.toml",
        &[
            "vm hyperv-linux: stopped: powered off",
            // Linux takes the VP assist page's lazy EOI (the hypervisor counts what it did).
            "  vcpu 0: ",
            " EOIs skipped by the guest and done for it (lazy EOI)",
        ],
        &[("hyperv-linux", "hyperv")],
        &[("hyperv-linux", "poweroff")],
    ));
    // Debian's generic kernel: machine check, and the rest of a distribution's config, probe
    // the CPUID policy in ways the cloud kernel does not.
    v.push(linux(
        "qemu-svm-xen-linux-generic",
        "manifests/xen-linux-generic.toml",
        &["vm xen-generic: stopped: powered off"],
        &[("xen-generic", "xen")],
        &[("xen-generic", "poweroff")],
    ));
    v.push(linux(
        "qemu-svm-hyperv-linux-generic",
        "manifests/hyperv-linux-generic.toml",
        &["vm hyperv-generic: stopped: powered off"],
        &[("hyperv-generic", "hyperv")],
        &[("hyperv-generic", "poweroff")],
    ));
    // Debian's own xen-blkfront mounts an ext4 VHD served by the in-hypervisor blkback, reads a
    // file and writes one; the host then checks the image with qemu-img, e2fsck and debugfs.
    v.push(Case {
        setup: Some(|| linux_disk_cases::setup(Face::Xen)),
        verify: Some(|| linux_disk_cases::verify(Face::Xen)),
        ..linux(
            "qemu-svm-xen-linux-disk",
            "target/janus/linux-disk-xen/xen-disk.toml",
            &[
                "vm xen-disk: disk 0 (xen-disk.vhd): ",
                "vm xen-disk: disk 1 (child.vhd): ",
                "[xen-disk] JANUS-CHECK disk-driver ok xen-blkfront",
                "[xen-disk] JANUS-CHECK disk-mount ok janus-data /dev/xvda",
                "[xen-disk] JANUS-CHECK disk-mount ok janus-child /dev/xvdb",
                // Its reads went from the host's controller into its memory, uncopied.
                "vm xen-disk: disk 0: reads straight into guest memory: ",
                "vm xen-disk: disk 1: reads straight into guest memory: ",
                "vm xen-disk: disk 0: writes straight from guest memory: ",
                "vm xen-disk: disk 1: writes straight from guest memory: ",
                "vm xen-disk: stopped: powered off",
            ],
            &[("xen-disk", "xen")],
            &[("xen-disk", "poweroff")],
        )
    });
    // The same two disks on the Hyper-V face: Debian's hv_vmbus finds VMBus in ACPI, hv_storvsc
    // takes the storage offers of the hypervisor's VMBus host, sd_mod makes them sda and sdb.
    v.push(Case {
        setup: Some(|| linux_disk_cases::setup(Face::Hyperv)),
        verify: Some(|| linux_disk_cases::verify(Face::Hyperv)),
        ..linux(
            "qemu-svm-hyperv-linux-disk",
            "target/janus/linux-disk-hyperv/hv-disk.toml",
            &[
                "vm hv-disk: disk 0 (hv-disk.vhd): ",
                "vm hv-disk: disk 1 (child.vhd): ",
                "[hv-disk] JANUS-CHECK disk-driver ok hv_vmbus",
                "[hv-disk] JANUS-CHECK disk-driver ok hv_storvsc",
                // A SCSI controller per disk, scanned in parallel: which is sda is a race.
                "[hv-disk] JANUS-CHECK disk-mount ok janus-data /dev/sd",
                "[hv-disk] JANUS-CHECK disk-mount ok janus-child /dev/sd",
                // Its reads went from the host's controller into its memory, uncopied.
                "vm hv-disk: disk 0: reads straight into guest memory: ",
                "vm hv-disk: disk 1: reads straight into guest memory: ",
                "vm hv-disk: disk 0: writes straight from guest memory: ",
                "vm hv-disk: disk 1: writes straight from guest memory: ",
                "vm hv-disk: stopped: powered off",
            ],
            &[("hv-disk", "hyperv")],
            &[("hv-disk", "poweroff")],
        )
    });
    // The same two disks on plain emulated hardware (`personality = "none"`): Linux's own nvme
    // driver finds a controller per disk on the hypervisor's PCI bus (ECAM from the MCFG,
    // MSI-X through the xAPIC), with the same host checks afterwards; then the same without
    // MSI (`pci=nomsi`): INTx through the IOAPIC's level-triggered pins, as the DSDT's _PRT
    // routes it. Each case refuses the other's interrupt kind.
    let nvme_disk = |name, setup: fn() -> anyhow::Result<()>, manifest, not_irq| Case {
        setup: Some(setup),
        verify: Some(|| linux_disk_cases::verify(Face::Hardware)),
        absent: not_irq,
        ..linux(
            name,
            manifest,
            &[
                "vm nvme-disk: disk 0 (nvme-disk.vhd): ",
                "vm nvme-disk: disk 1 (child.vhd): ",
                "[nvme-disk] JANUS-CHECK disk-mount ok janus-data /dev/nvme",
                "[nvme-disk] JANUS-CHECK disk-mount ok janus-child /dev/nvme",
                "[nvme-disk] JANUS-CHECK nvme-irq ok ",
                // Its reads went from the host's controller into its memory, uncopied.
                "vm nvme-disk: disk 0: reads straight into guest memory: ",
                "vm nvme-disk: disk 1: reads straight into guest memory: ",
                "vm nvme-disk: disk 0: writes straight from guest memory: ",
                "vm nvme-disk: disk 1: writes straight from guest memory: ",
                "vm nvme-disk: stopped: powered off",
            ],
            &[("nvme-disk", "none")],
            &[("nvme-disk", "poweroff")],
        )
    };
    v.push(nvme_disk(
        "qemu-svm-none-linux-disk",
        || linux_disk_cases::setup(Face::Hardware),
        "target/janus/linux-disk-none/nvme-disk.toml",
        &["JANUS-CHECK nvme-irq ok intx:"],
    ));
    v.push(nvme_disk(
        "qemu-svm-none-linux-disk-intx",
        linux_disk_cases::setup_hardware_intx,
        "target/janus/linux-disk-none/nvme-intx.toml",
        &["JANUS-CHECK nvme-irq ok msi:"],
    ));
    // One disk, both faces: Linux on the Hyper-V face writes a.bin to a dynamic VHD and powers
    // off; the same VHD on the Xen face checks a.bin and writes b.bin; on the Hyper-V face
    // again, checks both. After every boot the host checks the image itself (the project's
    // checker, QEMU's converter, e2fsck, each file by debugfs).
    v.push(Case {
        setup: Some(linux_disk_cases::setup_move),
        verify: Some(|| linux_disk_cases::verify_move(1)),
        then: vec![
            Case {
                verify: Some(|| linux_disk_cases::verify_move(2)),
                ..linux(
                    "qemu-svm-linux-disk-moves-between-faces-boot-2-xen",
                    "target/janus/linux-disk-moves/2-xen.toml",
                    &[
                        "vm xen-move: disk 0 (moving.vhd): ",
                        "[xen-move] JANUS-CHECK disk-mount ok janus-move /dev/xvda",
                        "[xen-move] JANUS-CHECK disk-move-read ok janus-move a.bin ",
                        "[xen-move] JANUS-CHECK disk-move ok janus-move step 2 /dev/xvda ",
                        "vm xen-move: stopped: powered off",
                    ],
                    &[("xen-move", "xen")],
                    &[("xen-move", "poweroff")],
                )
            },
            Case {
                verify: Some(|| linux_disk_cases::verify_move(3)),
                ..linux(
                    "qemu-svm-linux-disk-moves-between-faces-boot-3-hyperv",
                    "target/janus/linux-disk-moves/3-hyperv.toml",
                    &[
                        "vm hv-move: disk 0 (moving.vhd): ",
                        "[hv-move] JANUS-CHECK disk-mount ok janus-move /dev/sda",
                        "[hv-move] JANUS-CHECK disk-move-read ok janus-move a.bin ",
                        "[hv-move] JANUS-CHECK disk-move-read ok janus-move b.bin ",
                        "[hv-move] JANUS-CHECK disk-move ok janus-move step 3 /dev/sda ",
                        "vm hv-move: stopped: powered off",
                    ],
                    &[("hv-move", "hyperv")],
                    &[("hv-move", "poweroff")],
                )
            },
            // The same disk on plain emulated hardware: Linux's own nvme driver over PCI.
            Case {
                verify: Some(|| linux_disk_cases::verify_move(4)),
                ..linux(
                    "qemu-svm-linux-disk-moves-between-faces-boot-4-none",
                    "target/janus/linux-disk-moves/4-none.toml",
                    &[
                        "vm nvme-move: disk 0 (moving.vhd): ",
                        "[nvme-move] JANUS-CHECK disk-mount ok janus-move /dev/nvme0n1",
                        "[nvme-move] JANUS-CHECK disk-move-read ok janus-move a.bin ",
                        "[nvme-move] JANUS-CHECK disk-move-read ok janus-move b.bin ",
                        "[nvme-move] JANUS-CHECK disk-move ok janus-move step 4 /dev/nvme0n1 ",
                        "vm nvme-move: stopped: powered off",
                    ],
                    &[("nvme-move", "none")],
                    &[("nvme-move", "poweroff")],
                )
            },
        ],
        ..linux(
            "qemu-svm-linux-disk-moves-between-faces",
            "target/janus/linux-disk-moves/1-hyperv.toml",
            &[
                "vm hv-move: disk 0 (moving.vhd): ",
                "[hv-move] JANUS-CHECK disk-mount ok janus-move /dev/sda",
                "[hv-move] JANUS-CHECK disk-move ok janus-move step 1 /dev/sda ",
                "vm hv-move: stopped: powered off",
            ],
            &[("hv-move", "hyperv")],
            &[("hv-move", "poweroff")],
        )
    });
    // A VM is its disk: two VMs without `kernel`, each booting Debian's kernel and initrd from
    // the ext4 file system in its VHD, found by the hypervisor through Debian's /vmlinuz links
    // (the Xen face's ELF decompressed out of the bzImage in the hypervisor).
    v.push(Case {
        setup: Some(crate::disk_boot_cases::setup),
        ..linux(
            "qemu-svm-linux-boots-from-its-disk",
            "target/janus/disk-boot/from-disk.toml",
            &[
                "vm xen-disk-boot: boots Debian's /vmlinuz link from xen-root.vhd (sector 0): /vmlinuz + /initrd.img",
                "vm hv-disk-boot: boots Debian's /vmlinuz link from hv-root.vhd (sector 0): /vmlinuz + /initrd.img",
                "vm xen-disk-boot: stopped: powered off",
                "vm hv-disk-boot: stopped: powered off",
            ],
            &[("xen-disk-boot", "xen"), ("hv-disk-boot", "hyperv")],
            &[("xen-disk-boot", "poweroff"), ("hv-disk-boot", "poweroff")],
        )
    });
    debian::cases(&mut v);
    // The host asks a Xen guest to shut down (control/shutdown); Linux's xenbus runs its
    // orderly power-off, and the VM powers off long before the guest would by itself.
    v.push(Case {
        cmdline: "janus.shutdown_after=30",
        absent: &["JANUS-GUEST-STAYED"],
        ..linux(
            "qemu-svm-xen-linux-host-shutdown",
            "manifests/xen-linux-shutdown.toml",
            &[
                "vm xen-shutdown: asked to power off (host shutdown)",
                "vm xen-shutdown: stopped: powered off",
            ],
            &[("xen-shutdown", "xen")],
            &[("xen-shutdown", "poweroff")],
        )
    });
    // The same on the Hyper-V face: the request goes out on the shutdown integration service
    // over VMBus, and Linux's hv_utils runs the orderly power-off.
    v.push(Case {
        cmdline: "janus.shutdown_after=30",
        absent: &["JANUS-GUEST-STAYED"],
        ..linux(
            "qemu-svm-hyperv-linux-host-shutdown",
            "manifests/hyperv-linux-shutdown.toml",
            &[
                "[hyperv-shutdown] JANUS-CHECK shutdown-driver ok hv_utils",
                "vm hyperv-shutdown: asked to power off (host shutdown)",
                "vm hyperv-shutdown: stopped: powered off",
            ],
            &[("hyperv-shutdown", "hyperv")],
            &[("hyperv-shutdown", "poweroff")],
        )
    });
    v.push(linux(
        "qemu-svm-both-faces-side-by-side",
        "manifests/linux-both-faces.toml",
        &[
            "vm xen: stopped: powered off",
            "vm hyperv: stopped: powered off",
        ],
        &[("xen", "xen"), ("hyperv", "hyperv")],
        &[("xen", "poweroff"), ("hyperv", "poweroff")],
    ));
    // A guest that panics ends its VM as a crash, on each face, and fails the run.
    v.push(Case {
        pass: false,
        exit_code: crate::emulator::exit_code::CRASH,
        ..linux(
            "qemu-svm-linux-panic-is-a-crash",
            "manifests/linux-panic.toml",
            &[
                "vm xen-panic: stopped: guest crash ",
                "vm hyperv-panic: stopped: guest crash ",
                "janus: 2 VM(s) did not end cleanly",
            ],
            &[],
            &[("xen-panic", "crash"), ("hyperv-panic", "crash")],
        )
    });
    // Every mitigation the CPU can do, needed or not, around every entry and exit: VERW and
    // the RSB refill run on any CPU, so the entry and exit paths are exercised here although
    // no emulator reports the bugs that need them.
    for (name, emulator) in [
        ("qemu-svm-probe-xen-mitigations-all", Emulator::Qemu),
        ("bochs-vmx-probe-xen-mitigations-all", Emulator::Bochs),
    ] {
        v.push(Case {
            cmdline: "janus.mitigations=all",
            com1: PROBE_XEN_MITIGATED,
            ..face(
                name,
                emulator,
                "manifests/probe-xen.toml",
                PROBE_XEN_OK,
                &[("probe-xen", "poweroff")],
            )
        });
    }
    // A host shutdown stops a VM whose face has no way to ask it (Hyper-V has no shutdown
    // channel in Janus yet) at once, as an error.
    v.push(Case {
        name: "qemu-svm-host-shutdown-stops-what-it-cannot-ask",
        emulator: Emulator::Qemu,
        manifest: "manifests/probe-hyperv.toml",
        cmdline: "janus.shutdown_after=0",
        pass: false,
        com1: &["vm probe-hyperv: stopped: vCPU 0: its face has no way to ask it to shut down"],
        timeout_s: 120,
        ends: &[("probe-hyperv", "error")],
        exit_code: crate::emulator::exit_code::VM_ERROR,
        absent: &["probe: verdict: PASS"],
        ..Case::default()
    });
    // A console flood is metered: the flooder's excess is dropped and counted, and the
    // neighbour's every line comes through.
    v.push(Case {
        name: "qemu-svm-console-flood-is-metered",
        emulator: Emulator::Qemu,
        manifest: "manifests/console-flood.toml",
        com1: &[
            "[flood] probe: flood 0 ",
            "bytes of console output dropped (over 16384 bytes, then 4096 bytes/s)",
            "[neighbour] probe: verdict: PASS",
        ],
        timeout_s: 300,
        ends: &[("flood", "poweroff"), ("neighbour", "poweroff")],
        // The meter lets through the burst and then about one line in six: most of the 3000
        // must be dropped (which lines pass depends on timing, so no one line is checked).
        at_most: &[("[flood] probe: flood ", 1500)],
        ..Case::default()
    });
    // A hostile guest on each face: 10^4 seeded hypercalls, MSR, port, MMIO, IPI and console
    // operations at the hypervisor while a neighbour runs its checks on the same pCPU (the
    // hypervisor runs on one, `janus.nosmp`); both end as they should, and the neighbour got
    // its share of the pCPU while both wanted it (`FAIR_SHARES`).
    for (name, emulator, manifest) in [
        (
            "qemu-svm-chaos-xen",
            Emulator::Qemu,
            "manifests/chaos-xen.toml",
        ),
        (
            "qemu-svm-chaos-hyperv",
            Emulator::Qemu,
            "manifests/chaos-hyperv.toml",
        ),
        (
            "bochs-vmx-chaos-xen",
            Emulator::Bochs,
            "manifests/chaos-xen.toml",
        ),
        (
            "bochs-vmx-chaos-hyperv",
            Emulator::Bochs,
            "manifests/chaos-hyperv.toml",
        ),
    ] {
        v.push(Case {
            name,
            emulator,
            manifest,
            cmdline: "janus.nosmp",
            com1: &[
                "[chaos] probe: chaos: 10000 ops survived",
                "[neighbour] probe: verdict: PASS",
                "vm chaos: stopped: powered off",
            ],
            timeout_s: 600,
            ends: &[("chaos", "poweroff"), ("neighbour", "poweroff")],
            absent: &["[chaos] probe: FATAL", "[chaos] probe: panic"],
            ..Case::default()
        });
    }
    // A VM that cannot be built stops alone; its neighbour runs; the run fails.
    v.push(Case {
        name: "qemu-svm-boot-failure-stops-one-vm",
        emulator: Emulator::Qemu,
        manifest: "manifests/boot-failure.toml",
        pass: false,
        com1: &[
            "vm too-small: stopped: at boot: ",
            "[neighbour] probe: verdict: PASS",
            "janus: running 1 VM(s)",
        ],
        timeout_s: 300,
        ends: &[("too-small", "boot-failure"), ("neighbour", "poweroff")],
        exit_code: crate::emulator::exit_code::VM_ERROR,
        ..Case::default()
    });
    // Disks with nothing the hypervisor can boot stop their VMs alone, each naming the disk and
    // what was missing: no kernel, a kernel compressed with zstd on the Xen face (which needs
    // the ELF), a file system cut short; the neighbour boots.
    v.push(Case {
        name: "qemu-svm-unbootable-disks-stop-alone",
        emulator: Emulator::Qemu,
        manifest: "target/janus/disk-boot-bad/bad.toml",
        pass: false,
        com1: &[
            "vm no-kernel: stopped: at boot: cannot boot from its disk: disk 0 (empty.vhd): no kernel found",
            "vm zstd-kernel: stopped: at boot: cannot boot from its disk: disk 0 (zstd.vhd): /vmlinuz: the kernel is compressed with zstd",
            "vm cut-fs: stopped: at boot: cannot boot from its disk: disk 0 (cut.vhd): ",
            "[probe] probe: verdict: PASS",
        ],
        timeout_s: 300,
        ends: &[
            ("no-kernel", "boot-failure"),
            ("zstd-kernel", "boot-failure"),
            ("cut-fs", "boot-failure"),
            ("probe", "poweroff"),
        ],
        exit_code: crate::emulator::exit_code::VM_ERROR,
        setup: Some(crate::disk_boot_cases::setup_bad),
        ..Case::default()
    });
    // Guest disks on the hypervisor's NVMe driver and VHD volume layer, before any guest
    // protocol: a dynamic image made by qemu-img and a differencing child over a read-only
    // parent, written, flushed and read back; the host then reads them with its own tools.
    v.push(Case {
        name: "qemu-svm-disk-selftest",
        emulator: Emulator::Qemu,
        manifest: "target/janus/disk-test/disks.toml",
        cmdline: "janus.selftest=disk",
        com1: &[
            "vm probe: disk 0 (dynamic.vhd): ",
            "vm probe: disk 1 (child.vhd): ",
            "disk: vm 0 disk 0: written, flushed and read back",
            "disk: vm 0 disk 1: written, flushed and read back",
            "disk: selftest passed",
            // The probe beside it checks the plain-hardware face's PCI bus and its NVMe
            // controllers from inside.
            "[probe] probe: check pci-host-bridge ... ok",
            "[probe] probe: check pci-ecam-matches-cf8 ... ok",
            "[probe] probe: check pci-empty-slots-float-high ... ok",
            "[probe] probe: check pci-bar-sizing ... ok",
            "[probe] probe: check pci-msix-masked-vector-pends ... ok",
            "[probe] probe: check nvme-msix-completion ... ok",
            "[probe] probe: check nvme-prp-outside-ram-fails ... ok",
            "[probe] probe: check xapic-mmio-tpr ... ok",
            "[probe] probe: verdict: PASS",
        ],
        timeout_s: 300,
        ends: &[("probe", "poweroff")],
        setup: Some(crate::disk_cases::setup_selftest),
        verify: Some(crate::disk_cases::verify_selftest),
        ..Case::default()
    });
    // Disks damaged after xtask checked them: the hypervisor names each and leaves it out;
    // both VMs run.
    v.push(Case {
        name: "qemu-svm-bad-disks-are-left-out",
        emulator: Emulator::Qemu,
        manifest: "target/janus/disk-test/bad/bad.toml",
        com1: &[
            "vm victim: disk 0 (truncated.vhd): cannot be opened: ",
            "vm victim: disk 1 (badsum.vhd): cannot be opened: ",
            "vm victim: disk 2 (badbat.vhd): cannot be opened: ",
            "[neighbour] probe: verdict: PASS",
            "[victim] probe: verdict: PASS",
        ],
        timeout_s: 300,
        ends: &[("victim", "poweroff"), ("neighbour", "poweroff")],
        setup: Some(crate::disk_cases::setup_bad),
        tamper: Some(crate::disk_cases::tamper_bad),
        ..Case::default()
    });
    // on_reboot = "restart": the probe resets its VM once and boots again from its files.
    v.push(Case {
        name: "qemu-svm-reboot-restarts",
        emulator: Emulator::Qemu,
        manifest: "manifests/reboot.toml",
        com1: &[
            "[rebooter] probe: rebooting on purpose",
            "vm rebooter: reset: restarting (on_reboot = \"restart\")",
            "[rebooter] probe: booted again after a reboot",
            "[rebooter] probe: ram after the reboot: zeroed",
            "[rebooter] probe: verdict: PASS",
            "[xen-rebooter] probe: booted again after a reboot",
            "[xen-rebooter] probe: ram after the reboot: zeroed",
            "[xen-rebooter] probe: verdict: PASS",
        ],
        timeout_s: 300,
        ends: &[("rebooter", "poweroff"), ("xen-rebooter", "poweroff")],
        restarts: &["rebooter", "xen-rebooter"],
        ..Case::default()
    });
    // The host NVMe driver against a scratch disk (run_case attaches it and checks it after).
    v.push(Case {
        name: "qemu-nvme-selftest",
        emulator: Emulator::Qemu,
        manifest: "manifests/demo.toml",
        cmdline: NVME_SELFTEST,
        com1: &[
            "nvme: ns 1: 16384 LBAs of 512 bytes",
            "nvme: selftest passed",
        ],
        timeout_s: 300,
        ends: &[("probe", "poweroff")],
        ..Case::default()
    });
    // What a lab machine does: the directory `cargo xtask pxe` stages, fetched over TFTP by
    // iPXE (QEMU's own ROM), whose module strings are full URIs.
    v.push(Case {
        pxe: true,
        ..probe(
            "qemu-svm-pxe-probe",
            Emulator::Qemu,
            &[
                // iPXE's own mark: the kernel's string is its URI.
                "cmdline: tftp://10.0.2.2/janus-boot",
                "personalities: none xen hyperv",
            ],
        )
    });
    // Single-ABI images: each boots its own face's probe, and refuses a manifest naming the
    // other face before any VM starts, naming the VM and the personality it lacks: before
    // the pCPUs come up, so no VM is built and no guest runs (`absent`).
    for (features, own, own_manifest, banner, ends, other, other_manifest, refusal, absent) in [
        (
            &["xen"],
            "qemu-svm-xen-only-image-probe",
            "manifests/probe-xen.toml",
            &["personalities: none xen"][..],
            &[("probe-xen", "poweroff")][..],
            "qemu-svm-xen-only-image-refuses-hyperv",
            "manifests/probe-hyperv.toml",
            XEN_ONLY_REFUSES,
            &["smp: ", "janus: running", "[probe-hyperv]"][..],
        ),
        (
            &["hyperv"],
            "qemu-svm-hyperv-only-image-probe",
            "manifests/probe-hyperv.toml",
            &["personalities: none hyperv"],
            &[("probe-hyperv", "poweroff")],
            "qemu-svm-hyperv-only-image-refuses-xen",
            "manifests/probe-xen.toml",
            HYPERV_ONLY_REFUSES,
            &["smp: ", "janus: running", "[probe-xen]"],
        ),
    ] {
        v.push(Case {
            features,
            ..face(own, Emulator::Qemu, own_manifest, banner, ends)
        });
        v.push(Case {
            name: other,
            emulator: Emulator::Qemu,
            manifest: other_manifest,
            pass: false,
            com1: refusal,
            timeout_s: 120,
            exit_code: crate::emulator::exit_code::HYPERVISOR,
            features,
            absent,
            ..Case::default()
        });
    }
    if inject_failure {
        v.push(Case {
            name: "injected-failure",
            emulator: Emulator::Qemu,
            manifest: "manifests/demo.toml",
            cmdline: "janus.selftest=panic",
            timeout_s: 60,
            ..Case::default()
        });
    }
    v
}
