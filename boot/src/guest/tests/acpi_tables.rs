//! The guest ACPI tables: checksums, parsed back with the `acpi` crate, and the DSDT's AML
//! compared with what `acpi_tables` encodes for the same objects.
#![allow(unsafe_code)]
// UNSAFETY: the `acpi` crate's handler interface maps physical regions through raw pointers;
// the test maps them onto its own in-memory guest.

use core::ptr::NonNull;

use ::acpi::madt::{Madt, MadtEntry};
use ::acpi::{AcpiHandler, AcpiTables, PhysicalMapping, fadt::Fadt};

use super::*;
use crate::guest::acpi;

/// The low MiB of guest memory, copied out so the `acpi` crate can read it through pointers.
#[derive(Clone)]
struct Snapshot {
    // u64s so every table (16-byte aligned in guest memory) is aligned for the parser too.
    words: std::rc::Rc<Vec<u64>>,
}

impl Snapshot {
    fn new(m: &impl GuestMemory) -> Snapshot {
        let bytes = read(m, 0, layout::ACPI_END as usize);
        let words = bytes
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Snapshot {
            words: std::rc::Rc::new(words),
        }
    }
}

impl AcpiHandler for Snapshot {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        assert!(
            phys + size <= self.words.len() * 8,
            "table outside the snapshot"
        );
        // SAFETY: in bounds (checked above) of a buffer the Rc keeps alive as long as the
        // mapping holds its clone of the handler.
        unsafe {
            let ptr = (self.words.as_ptr() as *const u8).add(phys) as *mut T;
            PhysicalMapping::new(phys, NonNull::new(ptr).unwrap(), size, size, self.clone())
        }
    }
    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

fn tables(m: &impl GuestMemory, rsdp: u64) -> AcpiTables<Snapshot> {
    // SAFETY: the handler maps guest memory faithfully; the address is the RSDP we wrote.
    unsafe { AcpiTables::from_rsdp(Snapshot::new(m), rsdp as usize) }.unwrap()
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

fn write_tables(vcpus: u32, opts: &AcpiOptions) -> (VecMemory, u64) {
    let m = mem(4);
    let rsdp = acpi::write(&m, vcpus, opts).unwrap();
    assert!(acpi::size(vcpus, opts) <= layout::ACPI_END - layout::ACPI_START);
    (m, rsdp)
}

/// Every table's bytes, following RSDP -> XSDT -> {FADT -> DSDT, MADT} by hand.
fn raw_tables(m: &impl GuestMemory, rsdp: u64) -> Vec<(String, Vec<u8>)> {
    let r = read(m, rsdp, 36);
    assert_eq!(&r[..8], b"RSD PTR ");
    assert_eq!(sum(&r[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&r), 0, "RSDP extended checksum");
    assert_eq!(r[15], 2, "RSDP revision");
    let table = |at: u64| {
        let len = read_u32(m, at + 4) as usize;
        let t = read(m, at, len);
        (String::from_utf8(t[..4].to_vec()).unwrap(), t)
    };
    let xsdt_at = u64::from_le_bytes(r[24..32].try_into().unwrap());
    let xsdt = table(xsdt_at);
    assert_eq!(xsdt.0, "XSDT");
    let mut out = vec![xsdt.clone()];
    for e in xsdt.1[36..].chunks(8) {
        let t = table(u64::from_le_bytes(e.try_into().unwrap()));
        if t.0 == "FACP" {
            let dsdt = u64::from_le_bytes(t.1[140..148].try_into().unwrap());
            out.push(table(dsdt));
        }
        out.push(t);
    }
    out
}

#[test]
fn every_table_checksums_to_zero_and_stays_in_its_region() {
    for (vcpus, opts) in [
        (1, AcpiOptions::xen()),
        (2, AcpiOptions::hyperv()),
        (
            layout::MAX_VCPUS,
            AcpiOptions {
                vmbus: true,
                ..AcpiOptions::hyperv()
            },
        ),
    ] {
        let (m, rsdp) = write_tables(vcpus, &opts);
        assert_eq!(rsdp, layout::ACPI_START);
        let all = raw_tables(&m, rsdp);
        let names: Vec<_> = all.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(names, ["XSDT", "DSDT", "FACP", "APIC"]);
        for (name, bytes) in &all {
            assert_eq!(sum(bytes), 0, "{name} checksum");
            assert_eq!(&bytes[10..16], b"JANUS ", "{name} OEM ID");
        }
        // Nothing written past the planned end.
        let end = layout::ACPI_START + acpi::size(vcpus, &opts);
        assert!(end <= layout::ACPI_END);
        assert!(
            read(&m, end, (layout::ACPI_END - end) as usize)
                .iter()
                .all(|&b| b == 0)
        );
    }
}

#[test]
fn the_hardware_face_has_an_mcfg_for_bus_0_and_a_reserved_window() {
    let opts = AcpiOptions::hardware();
    let (m, rsdp) = write_tables(2, &opts);
    let all = raw_tables(&m, rsdp);
    let names: Vec<_> = all.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["XSDT", "DSDT", "FACP", "APIC", "MCFG"]);
    for (name, bytes) in &all {
        assert_eq!(sum(bytes), 0, "{name} checksum");
    }
    let end = layout::ACPI_START + acpi::size(2, &opts);
    assert!(
        read(&m, end, (layout::ACPI_END - end) as usize)
            .iter()
            .all(|&b| b == 0)
    );
    let t = tables(&m, rsdp);
    let mcfg = t.find_table::<::acpi::mcfg::Mcfg>().unwrap();
    let entries: Vec<_> = mcfg
        .get()
        .entries()
        .iter()
        .map(|e| {
            (
                { e.base_address },
                { e.pci_segment_group },
                e.bus_number_start,
                e.bus_number_end,
            )
        })
        .collect();
    assert_eq!(entries, [(layout::PCI_ECAM_BASE, 0, 0, 0)]);
    let map = VmLayout::new(64 * MIB, 2)
        .unwrap()
        .with_pci(true)
        .memory_map(false);
    assert!(
        map.as_slice()
            .iter()
            .any(|r| r.kind == layout::MemType::Reserved
                && r.range.start == layout::PCI_ECAM_BASE
                && r.range.len() == layout::PCI_ECAM_SIZE)
    );
    let fadt = t.find_table::<Fadt>().unwrap();
    let pm = fadt.get().pm_timer_block().unwrap().unwrap();
    assert_eq!(pm.address, u64::from(acpi::PM_TIMER_PORT));
    assert_eq!(pm.bit_width, 32);
    let plain = VmLayout::new(64 * MIB, 2).unwrap().memory_map(false);
    assert!(
        plain
            .as_slice()
            .iter()
            .all(|r| r.range.start < layout::MMIO_HOLE_START)
    );
}

#[test]
fn acpi_crate_parses_fadt() {
    let (m, rsdp) = write_tables(2, &AcpiOptions::hyperv());
    let t = tables(&m, rsdp);
    let fadt = t.find_table::<Fadt>().unwrap();
    let fadt = fadt.get();
    fadt.validate().unwrap();
    let (flags, arch) = ({ fadt.flags }, { fadt.iapc_boot_arch });
    assert!(flags.system_is_hw_reduced_acpi());
    assert!(flags.supports_system_reset_via_fadt());
    assert!(flags.power_button_is_control_method());
    assert!(!arch.motherboard_implements_8042());
    assert!(arch.dont_probe_vga());
    let reset = fadt.reset_register().unwrap();
    assert_eq!(reset.address, u64::from(acpi::RESET_PORT));
    assert_eq!(reset.bit_width, 8);
    assert_eq!(fadt.reset_value, acpi::RESET_VALUE);
    let ctl = fadt.sleep_control_register().unwrap().unwrap();
    assert_eq!(ctl.address, u64::from(acpi::SLEEP_CONTROL_PORT));
    let sts = fadt.sleep_status_register().unwrap().unwrap();
    assert_eq!(sts.address, u64::from(acpi::SLEEP_STATUS_PORT));
    // Hardware-reduced: no PM timer, no GPEs, no SCI.
    assert!(fadt.pm_timer_block().unwrap().is_none());
    assert!(fadt.gpe0_block().unwrap().is_none());
    assert_eq!({ fadt.sci_interrupt }, 0);
    let dsdt = t.dsdt().unwrap();
    assert_eq!(
        dsdt.address as u64,
        fadt.dsdt_address().unwrap() as u64 + 36
    );
    assert!(dsdt.length > 0);
}

#[test]
fn acpi_crate_parses_madt() {
    for (vcpus, opts) in [
        (1, AcpiOptions::xen()),
        (4, AcpiOptions::hyperv()),
        (layout::MAX_VCPUS, AcpiOptions::hyperv()),
    ] {
        let (m, rsdp) = write_tables(vcpus, &opts);
        let t = tables(&m, rsdp);
        let madt = t.find_table::<Madt>().unwrap();
        let madt = madt.get();
        assert_eq!({ madt.local_apic_address }, layout::LAPIC_BASE as u32);
        assert!(!madt.supports_8259(), "no PCAT_COMPAT without a PIC");
        let mut cpus = Vec::new();
        let mut ioapics = Vec::new();
        for e in madt.entries() {
            match e {
                MadtEntry::LocalApic(a) => {
                    cpus.push((u32::from(a.processor_id), u32::from(a.apic_id), { a.flags }))
                }
                MadtEntry::LocalX2Apic(a) => {
                    cpus.push(({ a.processor_uid }, { a.x2apic_id }, { a.flags }))
                }
                MadtEntry::IoApic(a) => ioapics.push((a.io_apic_id, { a.io_apic_address }, {
                    a.global_system_interrupt_base
                })),
                other => panic!("unexpected MADT entry {other:?}"),
            }
        }
        let want: Vec<_> = (0..vcpus).map(|i| (i, layout::apic_id(i), 1)).collect();
        assert_eq!(cpus, want);
        if opts.ioapic {
            assert_eq!(ioapics, [(acpi::IOAPIC_ID, layout::IOAPIC_BASE as u32, 0)]);
        } else {
            assert!(ioapics.is_empty());
        }
    }
}

#[test]
fn madt_uses_x2apic_entries_only_where_needed() {
    let (m, rsdp) = write_tables(layout::MAX_VCPUS, &AcpiOptions::xen());
    let t = tables(&m, rsdp);
    let madt = t.find_table::<Madt>().unwrap();
    let kinds: Vec<bool> = madt
        .get()
        .entries()
        .map(|e| matches!(e, MadtEntry::LocalX2Apic(_)))
        .collect();
    assert!(kinds[..255].iter().all(|x2| !x2));
    assert!(kinds[255..].iter().all(|&x2| x2));
}

fn dsdt_aml(m: &impl GuestMemory, rsdp: u64) -> Vec<u8> {
    let all = raw_tables(m, rsdp);
    let dsdt = &all.iter().find(|t| t.0 == "DSDT").unwrap().1;
    assert_eq!(dsdt[8], 2, "DSDT revision 2: 64-bit integers");
    dsdt[36..].to_vec()
}

/// The same namespace through `acpi_tables`' (heap-based) encoder.
fn reference_dsdt(opts: &AcpiOptions) -> Vec<u8> {
    use ::acpi_tables::Aml;
    use ::acpi_tables::aml::{
        Device, EISAName, IO, Interrupt, Name, Package, ResourceTemplate, Scope,
    };
    let mut children: Vec<Box<dyn Aml>> = Vec::new();
    if opts.com1 {
        let io = IO::new(0x3F8, 0x3F8, 0, 8);
        let irq = Interrupt::new(true, true, false, false, 4);
        let crs = match opts.ioapic {
            true => ResourceTemplate::new(vec![&io, &irq]),
            false => ResourceTemplate::new(vec![&io]),
        };
        let mut bytes = Vec::new();
        Device::new(
            "COM1".into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new("PNP0501")),
                &Name::new("_UID".into(), &1u8),
                &Name::new("_CRS".into(), &crs),
            ],
        )
        .to_aml_bytes(&mut bytes);
        children.push(Box::new(Raw(bytes)));
    }
    if opts.pci {
        use ::acpi_tables::aml::{AddressSpace, AddressSpaceCacheable};
        let buses = AddressSpace::new_bus_number(0u16, 0u16);
        let config = IO::new(0xCF8, 0xCF8, 1, 8);
        let window = AddressSpace::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            layout::PCI_MMIO_START as u32,
            (layout::PCI_MMIO_END - 1) as u32,
            None,
        );
        let crs = ResourceTemplate::new(vec![&buses, &config, &window]);
        let entries: Vec<(u32, u8)> = (1..=8u32)
            .map(|d| (d << 16 | 0xFFFF, 16 + (d % 8) as u8))
            .collect();
        let entries: Vec<Package<'_>> = entries
            .iter()
            .map(|(addr, gsi)| Package::new(vec![addr, &0u8, &0u8, gsi]))
            .collect();
        let prt = Package::new(entries.iter().map(|p| p as &dyn Aml).collect());
        let mut bytes = Vec::new();
        Device::new(
            "PCI0".into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new("PNP0A08")),
                &Name::new("_CID".into(), &EISAName::new("PNP0A03")),
                &Name::new("_UID".into(), &0u8),
                &Name::new("_SEG".into(), &0u8),
                &Name::new("_BBN".into(), &0u8),
                &Name::new("_CRS".into(), &crs),
                &Name::new("_PRT".into(), &prt),
            ],
        )
        .to_aml_bytes(&mut bytes);
        use ::acpi_tables::aml::Memory32Fixed;
        let ecam = Memory32Fixed::new(
            true,
            layout::PCI_ECAM_BASE as u32,
            layout::PCI_ECAM_SIZE as u32,
        );
        Device::new(
            "MRES".into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new("PNP0C02")),
                &Name::new("_UID".into(), &0u8),
                &Name::new("_CRS".into(), &ResourceTemplate::new(vec![&ecam])),
            ],
        )
        .to_aml_bytes(&mut bytes);
        children.push(Box::new(Raw(bytes)));
    }
    if opts.vmbus {
        let mut bytes = Vec::new();
        Device::new(
            "VMBS".into(),
            vec![
                &Name::new("_HID".into(), &"VMBus"),
                &Name::new("_UID".into(), &0u8),
                &Name::new("_DDN".into(), &"VMBUS"),
                &Name::new("_CRS".into(), &ResourceTemplate::new(vec![])),
            ],
        )
        .to_aml_bytes(&mut bytes);
        children.push(Box::new(Raw(bytes)));
    }
    let refs: Vec<&dyn Aml> = children.iter().map(|c| c.as_ref()).collect();
    let mut out = Vec::new();
    Scope::new("\\_SB_".into(), refs).to_aml_bytes(&mut out);
    Name::new("\\_S5_".into(), &Package::new(vec![&5u8, &5u8, &0u8, &0u8])).to_aml_bytes(&mut out);
    out
}

struct Raw(Vec<u8>);

impl ::acpi_tables::Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn ::acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

#[test]
fn dsdt_matches_acpi_tables_encoding() {
    for ioapic in [false, true] {
        for com1 in [false, true] {
            for (vmbus, pci) in [(false, false), (true, false), (false, true), (true, true)] {
                let opts = AcpiOptions {
                    ioapic,
                    com1,
                    vmbus,
                    pci,
                    ..AcpiOptions::default()
                };
                let (m, rsdp) = write_tables(1, &opts);
                assert_eq!(dsdt_aml(&m, rsdp), reference_dsdt(&opts), "{opts:?}");
            }
        }
    }
}

#[test]
fn aml_package_lengths_use_every_encoding() {
    use crate::guest::aml::{AmlBuf, Name};
    // Bodies around each PkgLength boundary, checked against acpi_tables' Scope.
    for body in [0usize, 57, 58, 59, 60, 4085, 4086, 4087, 4088, 5000] {
        let payload = vec![0xA3u8; body];
        let mut a = AmlBuf::<8192>::new();
        a.scope(Name::seg(b"ABCD"), |a| a.bytes(&payload));
        let mut want = Vec::new();
        ::acpi_tables::aml::Scope::raw("ABCD".into(), payload.clone())
            .iter()
            .for_each(|&b| want.push(b));
        assert_eq!(a.finish().unwrap(), &want[..], "body {body}");
    }
    // Overflow is reported, never a panic.
    let mut a = AmlBuf::<16>::new();
    a.scope(Name::seg(b"ABCD"), |a| a.bytes(&[0; 32]));
    assert!(a.finish().is_none());
    let mut a = AmlBuf::<8>::new();
    a.scope(Name::seg(b"ABCD"), |a| a.bytes(&[0; 3]));
    assert!(a.finish().is_none(), "no room for the length byte");
}

#[test]
fn aml_integers_and_eisa_ids() {
    use crate::guest::aml::{AmlBuf, eisa_id};
    for v in [
        0u64,
        1,
        2,
        0xFF,
        0x100,
        0xFFFF,
        0x1_0000,
        0xFFFF_FFFF,
        0x1_0000_0000,
    ] {
        let mut a = AmlBuf::<16>::new();
        a.integer(v);
        let mut want = Vec::new();
        ::acpi_tables::Aml::to_aml_bytes(&v, &mut want);
        assert_eq!(a.finish().unwrap(), &want[..], "{v:#x}");
    }
    assert_eq!(eisa_id(b"PNP0501"), Some(0x0105_D041));
    assert_eq!(eisa_id(b"pnp0501"), None);
    assert_eq!(eisa_id(b"PNP05G1"), None);
}

#[test]
fn sleep_control_decoding() {
    // What ACPICA writes for S5 through a hardware-reduced sleep control register.
    let s5 = (acpi::S5_SLP_TYP << acpi::SLP_TYP_SHIFT) | acpi::SLP_EN;
    assert_eq!(acpi::sleep_request(s5), Some(acpi::S5_SLP_TYP));
    assert_eq!(acpi::sleep_request(acpi::S5_SLP_TYP << 2), None);
    // The wake-status clear that precedes it is not a sleep request.
    assert_eq!(acpi::sleep_request(0x80), None);
}

/// Disassembles the DSDT with ACPICA's `iasl` (Debian's `acpica-tools`), the compiler
/// firmware vendors use, and checks the namespace it sees.
#[test]
#[ignore = "needs iasl (apt-get install acpica-tools)"]
fn iasl_disassembles_the_dsdt() {
    let opts = AcpiOptions {
        vmbus: true,
        ..AcpiOptions::hyperv()
    };
    let (m, rsdp) = write_tables(2, &opts);
    let all = raw_tables(&m, rsdp);
    let dir = std::env::temp_dir().join(format!("janus-dsdt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &all {
        std::fs::write(dir.join(format!("{}.dat", name.to_lowercase())), bytes).unwrap();
    }
    for name in ["dsdt", "facp", "apic"] {
        let out = std::process::Command::new("iasl")
            .current_dir(&dir)
            .args(["-d", &format!("{name}.dat")])
            .output()
            .expect("run iasl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
    for want in [
        "Device (COM1)",
        "EisaId (\"PNP0501\")",
        "IO (Decode16,",
        "0x03F8",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
        "Device (VMBS)",
        "Name (_HID, \"VMBus\")",
        "Name (\\_S5, Package (0x04)",
    ] {
        assert!(dsl.contains(want), "{want:?} missing in:\n{dsl}");
    }
    let fadt = std::fs::read_to_string(dir.join("facp.dsl")).unwrap();
    for want in [
        "Hardware Reduced (V5) : 1",
        "Reset Register Supported (V2) : 1",
        "Address : 0000000000000CF9",
        "Address : 0000000000000604",
        "Address : 0000000000000605",
    ] {
        assert!(fadt.contains(want), "{want:?} missing in:\n{fadt}");
    }
    let madt = std::fs::read_to_string(dir.join("apic.dsl")).unwrap();
    assert_eq!(madt.matches("Processor Local APIC").count(), 2, "{madt}");
    std::fs::remove_dir_all(&dir).ok();
}
