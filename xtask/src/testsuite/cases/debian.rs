//! The cases that boot the real Debian image (`cargo xtask image debian`): from its disk on
//! each face in turn, and as the default demo, unattended and typed into.

use super::{Case, Typing, linux};

/// Appends the Debian image's cases to `v`.
pub(super) fn cases(v: &mut Vec<Case>) {
    // The real Debian image (`cargo xtask image debian`) boots from its disk to a running
    // systemd on the Xen face, then the same disk on the Hyper-V face, which sees what the
    // first boot wrote; the image's boot check reports the face, the root device and the
    // system's state, and the host checks the file system and both boots' markers after each.
    let debian = |name: &'static str,
                  manifest: &'static str,
                  ends: &'static [(&'static str, &'static str)],
                  com1: &'static [&'static str]| Case {
        timeout_s: 600,
        absent: &[
            "JANUS-DEBIAN system degraded",
            "JANUS-DEBIAN system starting",
        ],
        ..linux(name, manifest, com1, &[], ends)
    };
    v.push(Case {
        setup: Some(crate::disk_boot_cases::setup_debian),
        verify: Some(|| crate::disk_boot_cases::verify_debian(&["xen"])),
        then: vec![Case {
            verify: Some(|| crate::disk_boot_cases::verify_debian(&["xen", "microsoft"])),
            ..debian(
                "qemu-svm-debian-image-moves-between-faces-boot-2-hyperv",
                "target/janus/debian-boot/2-hyperv.toml",
                &[("deb-hv", "poweroff")],
                &[
                    "vm deb-hv: boots Debian's /vmlinuz link from debian.vhd (sector 0): /vmlinuz + /initrd.img",
                    "[deb-hv] JANUS-DEBIAN face microsoft",
                    "[deb-hv] JANUS-DEBIAN root /dev/sda",
                    "[deb-hv] JANUS-DEBIAN system running",
                    "[deb-hv] JANUS-DEBIAN seen seen-microsoft seen-xen",
                    "vm deb-hv: stopped: powered off",
                ],
            )
        },
        // And on plain emulated hardware: Linux's nvme driver over PCI, no enlightenment
        // (systemd sees a hypervisor it does not know).
        Case {
            verify: Some(|| {
                crate::disk_boot_cases::verify_debian(&["xen", "microsoft", "vm-other"])
            }),
            ..debian(
                "qemu-svm-debian-image-moves-between-faces-boot-3-none",
                "target/janus/debian-boot/3-none.toml",
                &[("deb-hw", "poweroff")],
                &[
                    "vm deb-hw: boots Debian's /vmlinuz link from debian.vhd (sector 0): /vmlinuz + /initrd.img",
                    "[deb-hw] JANUS-DEBIAN face vm-other",
                    "[deb-hw] JANUS-DEBIAN root /dev/nvme0n1",
                    "[deb-hw] JANUS-DEBIAN system running",
                    "[deb-hw] JANUS-DEBIAN seen seen-microsoft seen-vm-other seen-xen",
                    "vm deb-hw: stopped: powered off",
                ],
            )
        }],
        ..debian(
            "qemu-svm-debian-image-moves-between-faces",
            "target/janus/debian-boot/1-xen.toml",
            &[("deb-xen", "poweroff")],
            &[
                "vm deb-xen: boots Debian's /vmlinuz link from debian.vhd (sector 0): /vmlinuz + /initrd.img",
                "[deb-xen] JANUS-DEBIAN face xen",
                "[deb-xen] JANUS-DEBIAN root /dev/xvda",
                "[deb-xen] JANUS-DEBIAN system running",
                "[deb-xen] JANUS-DEBIAN seen seen-xen",
                "vm deb-xen: stopped: powered off",
            ],
        )
    });
    // The default demo as `cargo xtask run --until-login` (and a run without a terminal) runs
    // it: the Debian image on both faces, each VM on its own child of it, to its login
    // prompt (timed on the hypervisor's clock), then `Ctrl-] q` asks both to shut down and
    // both power off cleanly; each disk's file system is clean afterwards.
    v.push(Case {
        setup: Some(crate::disk_boot_cases::setup_demo),
        verify: Some(crate::disk_boot_cases::verify_demo),
        typing: Typing::UntilLogin,
        ..debian(
            "qemu-svm-debian-demo-until-login",
            "manifests/default.toml",
            &[("debian-xen", "poweroff"), ("debian-hyperv", "poweroff")],
            &[
                "janus: typing goes to vm debian-xen",
                "janus: shutting every VM down (Ctrl-] q)",
                "vm debian-xen: asked to power off (host shutdown)",
                "vm debian-hyperv: asked to power off (host shutdown)",
                "vm debian-xen: stopped: powered off",
                "vm debian-hyperv: stopped: powered off",
            ],
        )
    });
    // Typing reaches each VM's console, one at a time (the Xen face's PV console ring, the
    // Hyper-V face's serial port): root logs in on each, the shell computes a line nobody
    // typed, and `poweroff` typed there ends the VM.
    v.push(Case {
        setup: Some(crate::disk_boot_cases::setup_demo),
        verify: Some(crate::disk_boot_cases::verify_demo),
        typing: Typing::LogInAndType,
        ..debian(
            "qemu-svm-debian-consoles-take-typing",
            "manifests/default.toml",
            &[("debian-xen", "poweroff"), ("debian-hyperv", "poweroff")],
            &[
                "janus: typing goes to vm debian-hyperv",
                "[debian-xen] JANUS-TYPED-42",
                "[debian-hyperv] JANUS-TYPED-42",
                "vm debian-xen: stopped: powered off",
                "vm debian-hyperv: stopped: powered off",
            ],
        )
    });
}
