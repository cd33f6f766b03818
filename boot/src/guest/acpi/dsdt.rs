//! The DSDT's namespace: COM1, the VMBus device, the PCI root bridge with its `_PRT` and the
//! ECAM window as a motherboard resource, and `\_S5`, each as the VM's options ask.

use super::super::aml::{self, AmlBuf, Name};
use super::super::layout;
use super::{
    AcpiOptions, COM1_IRQ, COM1_PORT, DSDT_MAX, PCI_CONFIG_PORT, PCI_INTX_SLOTS, S5_SLP_TYP,
    pci_intx_gsi,
};

/// The DSDT's AML body.
pub(super) fn dsdt_body(opts: &AcpiOptions) -> AmlBuf<DSDT_MAX> {
    let mut a = AmlBuf::new();
    a.scope(Name::root(b"_SB_"), |a| {
        if opts.com1 {
            a.device(Name::seg(b"COM1"), |a| {
                a.name(Name::seg(b"_HID"), |a| a.eisa_id(b"PNP0501"));
                a.name(Name::seg(b"_UID"), |a| a.integer(1));
                let io = aml::io_port(COM1_PORT, COM1_PORT, 0, 8);
                let irq = aml::interrupt(true, false, COM1_IRQ);
                a.name(Name::seg(b"_CRS"), |a| match opts.ioapic {
                    true => a.resource_template(&[&io, &irq]),
                    false => a.resource_template(&[&io]),
                });
            });
        }
        if opts.pci {
            a.device(Name::seg(b"PCI0"), |a| {
                a.name(Name::seg(b"_HID"), |a| a.eisa_id(b"PNP0A08"));
                a.name(Name::seg(b"_CID"), |a| a.eisa_id(b"PNP0A03"));
                a.name(Name::seg(b"_UID"), |a| a.integer(0));
                a.name(Name::seg(b"_SEG"), |a| a.integer(0));
                a.name(Name::seg(b"_BBN"), |a| a.integer(0));
                let buses = aml::word_bus_number(0, 0);
                let config = aml::io_port(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8);
                let window = aml::dword_memory(
                    layout::PCI_MMIO_START as u32,
                    (layout::PCI_MMIO_END - 1) as u32,
                );
                a.name(Name::seg(b"_CRS"), |a| {
                    a.resource_template(&[&buses, &config, &window])
                });
                // INTA# of device d is IOAPIC input 16 + d % 8 (level, active low, as GSIs
                // from a _PRT are); the other pins are not used.
                a.name(Name::seg(b"_PRT"), |a| {
                    a.package(PCI_INTX_SLOTS, |a| {
                        for d in 1..=u32::from(PCI_INTX_SLOTS) {
                            a.package(4, |a| {
                                a.integer(u64::from(d << 16 | 0xFFFF));
                                a.integer(0);
                                a.integer(0);
                                a.integer(u64::from(pci_intx_gsi(d as u8)));
                            });
                        }
                    })
                });
            });
            // The ECAM window as a motherboard resource: Linux uses it only if firmware
            // reserved it (in the memory map, or here once ACPI is up).
            a.device(Name::seg(b"MRES"), |a| {
                a.name(Name::seg(b"_HID"), |a| a.eisa_id(b"PNP0C02"));
                a.name(Name::seg(b"_UID"), |a| a.integer(0));
                let ecam =
                    aml::memory32_fixed(layout::PCI_ECAM_BASE as u32, layout::PCI_ECAM_SIZE as u32);
                a.name(Name::seg(b"_CRS"), |a| a.resource_template(&[&ecam]));
            });
        }
        if opts.vmbus {
            a.device(Name::seg(b"VMBS"), |a| {
                a.name(Name::seg(b"_HID"), |a| a.string(b"VMBus"));
                a.name(Name::seg(b"_UID"), |a| a.integer(0));
                a.name(Name::seg(b"_DDN"), |a| a.string(b"VMBUS"));
                // Linux fails the probe without a _CRS but ignores what is in it on x86.
                a.name(Name::seg(b"_CRS"), |a| a.resource_template(&[]));
            });
        }
    });
    // SLP_TYPa, SLP_TYPb, reserved, reserved.
    a.name(Name::root(b"_S5_"), |a| {
        a.package(4, |a| {
            a.integer(S5_SLP_TYP.into());
            a.integer(S5_SLP_TYP.into());
            a.integer(0);
            a.integer(0);
        })
    });
    a
}
