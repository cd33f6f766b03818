//! ACPI tables for guests: RSDP (v2) → XSDT → FADT (hardware-reduced) → DSDT, and a MADT.
//!
//! Written field by field straight into the guest's ACPI region with running checksums: no
//! allocation (`acpi_tables` allocates for every node, and VM creation does not draw on the
//! kernel's small boot-time heap) and no table-sized buffer. The tests parse the result with the `acpi` crate and check
//! the DSDT's AML against `acpi_tables`' encoder.
//!
//! Hardware-reduced ACPI is what both faces want: Linux then skips the PIT and 8259
//! (`acpi_generic_reduced_hw_init`), needs no SCI, PM1 blocks or PM timer, and powers off by
//! writing `_S5`'s sleep type to the FADT's sleep control register:
//! `(S5_SLP_TYP << 2) | SLP_EN` as one byte to [`SLEEP_CONTROL_PORT`] (after clearing the wake
//! status through [`SLEEP_STATUS_PORT`]). Reboot writes [`RESET_VALUE`] to [`RESET_PORT`].

use core::mem::{offset_of, size_of};

use virt::{GuestMemory, MemError};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{Immutable, IntoBytes};

use super::aml;
use super::layout::{self, ACPI_END, ACPI_START, IOAPIC_BASE, LAPIC_BASE, align_up};

mod dsdt;
use dsdt::dsdt_body;

/// The hardware-reduced sleep control register (8-bit, system I/O).
pub const SLEEP_CONTROL_PORT: u16 = 0x604;
/// The hardware-reduced sleep status register (8-bit, system I/O).
pub const SLEEP_STATUS_PORT: u16 = 0x605;
/// The sleep type `\_S5` gives soft-off.
pub const S5_SLP_TYP: u8 = 5;
/// Sleep control: the sleep type sits in bits 2..=4, SLP_EN is bit 5.
pub const SLP_TYP_SHIFT: u8 = 2;
pub const SLP_EN: u8 = 1 << 5;
/// The FADT reset register: the PIIX/ICH reset control port, value "CPU reset + hard reset",
/// which is also what Linux writes there for `reboot=pci`.
pub const RESET_PORT: u16 = 0xCF9;
pub const RESET_VALUE: u8 = 0x06;
/// The one IOAPIC: ID, address and first GSI (ISA IRQs map 1:1 onto GSIs 0..).
pub const IOAPIC_ID: u8 = 0;
pub const IOAPIC_GSI_BASE: u32 = 0;
/// COM1 as every PC has it.
pub const COM1_PORT: u16 = 0x3F8;
pub const COM1_IRQ: u32 = 4;
/// The ACPI power-management timer: a free-running 24-bit counter at 3.579545 MHz, read as a
/// dword. Hardware-reduced platforms need none, but an unenlightened guest without another
/// reference (no HPET, and a PIT too slow to poll under emulation) calibrates its TSC on it.
pub const PM_TIMER_PORT: u16 = 0x608;
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// Devices 1..=this on bus 0 have their INTA# routed in `_PRT`.
pub const PCI_INTX_SLOTS: u8 = 8;

/// The IOAPIC input of device `device`'s INTA#: the eight inputs after the ISA ones.
pub const fn pci_intx_gsi(device: u8) -> u8 {
    16 + device % 8
}

/// PCI configuration mechanism #1: the address port (the data ports follow at CFC).
pub const PCI_CONFIG_PORT: u16 = 0xCF8;

/// The sleep type a write to [`SLEEP_CONTROL_PORT`] asks for, if it sets SLP_EN.
pub const fn sleep_request(value: u8) -> Option<u8> {
    match value & SLP_EN {
        0 => None,
        _ => Some((value >> SLP_TYP_SHIFT) & 7),
    }
}

/// What the firmware tables describe beyond the vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiOptions {
    /// An IOAPIC at [`IOAPIC_BASE`] in the MADT, and COM1's IRQ 4 in its `_CRS`. Xen PVH
    /// guests have none (Linux then uses the platform IRQ model); Hyper-V guests want one
    /// for an interrupt-driven ttyS0. Without it COM1 has no IRQ and Linux polls it.
    pub ioapic: bool,
    /// `\_SB.COM1` (PNP0501) in the DSDT.
    pub com1: bool,
    /// `\_SB.VMBS` (`_HID "VMBus"`): only for a personality that implements VMBus, since Windows and
    /// Linux bind their VMBus drivers to it.
    pub vmbus: bool,
    /// FADT `IAPC_BOOT_ARCH`. The default says no VGA and no CMOS RTC (so Linux does not
    /// spend a second waiting on an RTC that reads all-ones) and no 8042.
    pub boot_arch: u16,
    /// A PCI Express root bridge (`\_SB.PCI0`, bus 0, BARs in [`layout::PCI_MMIO_START`]..
    /// [`layout::PCI_MMIO_END`]) with memory-mapped configuration (an MCFG table, the window
    /// reserved in the memory map): the hardware-emulation face's devices live there.
    pub pci: bool,
    /// The FADT names a PM timer at this port ([`PM_TIMER_PORT`], or the host's own when
    /// the kernel passes it through).
    pub pm_timer: Option<u16>,
}

/// `IAPC_BOOT_ARCH` bits.
pub const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
pub const BOOT_ARCH_8042: u16 = 1 << 1;
pub const BOOT_ARCH_NO_VGA: u16 = 1 << 2;
pub const BOOT_ARCH_NO_MSI: u16 = 1 << 3;
pub const BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;

impl Default for AcpiOptions {
    fn default() -> Self {
        AcpiOptions {
            ioapic: false,
            com1: true,
            vmbus: false,
            boot_arch: BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_CMOS_RTC,
            pci: false,
            pm_timer: None,
        }
    }
}

impl AcpiOptions {
    /// The Xen PVH personality: LAPICs only, as Xen builds PVH domUs.
    pub fn xen() -> Self {
        Self::default()
    }
    /// The Hyper-V personality: an IOAPIC so ttyS0 is interrupt driven, and VMBus, where
    /// its disks are.
    pub fn hyperv() -> Self {
        AcpiOptions {
            ioapic: true,
            vmbus: true,
            ..Self::default()
        }
    }
}

impl AcpiOptions {
    /// The hardware-emulation face: a plain PC's IOAPIC, COM1, PM timer and a PCI bus.
    pub fn hardware() -> Self {
        AcpiOptions {
            ioapic: true,
            pci: true,
            pm_timer: Some(PM_TIMER_PORT),
            ..Self::default()
        }
    }
}

pub const OEM_ID: [u8; 6] = *b"JANUS ";
pub const OEM_TABLE_ID: [u8; 8] = *b"JANUSVM ";
pub const CREATOR_ID: [u8; 4] = *b"JNUS";

/// Every table's header (`struct acpi_table_header`).
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
#[repr(C)]
pub struct SdtHeader {
    pub signature: [u8; 4],
    pub length: U32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: U32,
    pub creator_id: [u8; 4],
    pub creator_revision: U32,
}

/// RSDP, ACPI 2.0+ form.
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
#[repr(C)]
pub struct Rsdp {
    pub signature: [u8; 8],
    /// Over the first 20 bytes (the ACPI 1.0 part).
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub revision: u8,
    pub rsdt_address: U32,
    pub length: U32,
    pub xsdt_address: U64,
    /// Over all 36 bytes.
    pub extended_checksum: u8,
    pub reserved: [u8; 3],
}

/// Generic Address Structure.
#[derive(Clone, Copy, Debug, Default, IntoBytes, Immutable)]
#[repr(C)]
pub struct Gas {
    pub space_id: u8,
    pub bit_width: u8,
    pub bit_offset: u8,
    pub access_size: u8,
    pub address: U64,
}

impl Gas {
    const SYSTEM_IO: u8 = 1;
    const BYTE_ACCESS: u8 = 1;

    fn io_byte(port: u16) -> Gas {
        Gas {
            space_id: Self::SYSTEM_IO,
            bit_width: 8,
            bit_offset: 0,
            access_size: Self::BYTE_ACCESS,
            address: U64::new(port.into()),
        }
    }

    fn io_dword(port: u16) -> Gas {
        Gas {
            space_id: Self::SYSTEM_IO,
            bit_width: 32,
            bit_offset: 0,
            access_size: 3,
            address: U64::new(port.into()),
        }
    }
}

/// FADT, revision 6 (ACPI 6.0 length).
#[derive(Clone, Copy, Debug, Default, IntoBytes, Immutable)]
#[repr(C)]
pub struct Fadt {
    pub firmware_ctrl: U32,
    pub dsdt: U32,
    pub reserved0: u8,
    pub preferred_pm_profile: u8,
    pub sci_int: U16,
    pub smi_cmd: U32,
    pub acpi_enable: u8,
    pub acpi_disable: u8,
    pub s4bios_req: u8,
    pub pstate_cnt: u8,
    pub pm1a_evt_blk: U32,
    pub pm1b_evt_blk: U32,
    pub pm1a_cnt_blk: U32,
    pub pm1b_cnt_blk: U32,
    pub pm2_cnt_blk: U32,
    pub pm_tmr_blk: U32,
    pub gpe0_blk: U32,
    pub gpe1_blk: U32,
    pub pm1_evt_len: u8,
    pub pm1_cnt_len: u8,
    pub pm2_cnt_len: u8,
    pub pm_tmr_len: u8,
    pub gpe0_blk_len: u8,
    pub gpe1_blk_len: u8,
    pub gpe1_base: u8,
    pub cst_cnt: u8,
    pub p_lvl2_lat: U16,
    pub p_lvl3_lat: U16,
    pub flush_size: U16,
    pub flush_stride: U16,
    pub duty_offset: u8,
    pub duty_width: u8,
    pub day_alrm: u8,
    pub mon_alrm: u8,
    pub century: u8,
    pub iapc_boot_arch: U16,
    pub reserved1: u8,
    pub flags: U32,
    pub reset_reg: Gas,
    pub reset_value: u8,
    pub arm_boot_arch: U16,
    pub minor_version: u8,
    pub x_firmware_ctrl: U64,
    pub x_dsdt: U64,
    pub x_pm1a_evt_blk: Gas,
    pub x_pm1b_evt_blk: Gas,
    pub x_pm1a_cnt_blk: Gas,
    pub x_pm1b_cnt_blk: Gas,
    pub x_pm2_cnt_blk: Gas,
    pub x_pm_tmr_blk: Gas,
    pub x_gpe0_blk: Gas,
    pub x_gpe1_blk: Gas,
    pub sleep_control_reg: Gas,
    pub sleep_status_reg: Gas,
    pub hypervisor_vendor_id: U64,
}

/// FADT flags.
pub const FADT_WBINVD: u32 = 1 << 0;
pub const FADT_PWR_BUTTON: u32 = 1 << 4;
pub const FADT_SLP_BUTTON: u32 = 1 << 5;
pub const FADT_RESET_REG_SUP: u32 = 1 << 10;
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;

/// The MADT's fixed part after the header.
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
#[repr(C)]
pub struct MadtFixed {
    pub local_apic_address: U32,
    /// No PCAT_COMPAT: there is no 8259 to mask.
    pub flags: U32,
}

/// MADT type 0.
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
#[repr(C)]
pub struct MadtLocalApic {
    pub kind: u8,
    pub length: u8,
    pub processor_uid: u8,
    pub apic_id: u8,
    pub flags: U32,
}

/// MADT type 1.
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
#[repr(C)]
pub struct MadtIoApic {
    pub kind: u8,
    pub length: u8,
    pub id: u8,
    pub reserved: u8,
    pub address: U32,
    pub gsi_base: U32,
}

/// MADT type 9.
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
#[repr(C)]
pub struct MadtLocalX2Apic {
    pub kind: u8,
    pub length: u8,
    pub reserved: U16,
    pub x2apic_id: U32,
    pub flags: U32,
    pub processor_uid: U32,
}

/// One MCFG allocation: the ECAM window of a segment's bus range.
#[derive(Clone, Copy, Debug, IntoBytes, Immutable)]
#[repr(C)]
pub struct McfgAllocation {
    pub base: U64,
    pub segment: U16,
    pub start_bus: u8,
    pub end_bus: u8,
    pub reserved: U32,
}

const MADT_ENABLED: u32 = 1;

const _: () = {
    assert!(size_of::<SdtHeader>() == 36);
    assert!(offset_of!(SdtHeader, checksum) == 9);
    assert!(offset_of!(SdtHeader, oem_table_id) == 16);
    assert!(offset_of!(SdtHeader, creator_revision) == 32);
    assert!(size_of::<Rsdp>() == 36);
    assert!(offset_of!(Rsdp, rsdt_address) == 16);
    assert!(offset_of!(Rsdp, length) == 20);
    assert!(offset_of!(Rsdp, xsdt_address) == 24);
    assert!(offset_of!(Rsdp, extended_checksum) == 32);
    assert!(size_of::<Gas>() == 12);
    // FADT offsets count from the start of the table, header included.
    assert!(36 + offset_of!(Fadt, dsdt) == 40);
    assert!(36 + offset_of!(Fadt, sci_int) == 46);
    assert!(36 + offset_of!(Fadt, pm1a_cnt_blk) == 64);
    assert!(36 + offset_of!(Fadt, iapc_boot_arch) == 109);
    assert!(36 + offset_of!(Fadt, flags) == 112);
    assert!(36 + offset_of!(Fadt, reset_reg) == 116);
    assert!(36 + offset_of!(Fadt, reset_value) == 128);
    assert!(36 + offset_of!(Fadt, minor_version) == 131);
    assert!(36 + offset_of!(Fadt, x_dsdt) == 140);
    assert!(36 + offset_of!(Fadt, x_pm1a_evt_blk) == 148);
    assert!(36 + offset_of!(Fadt, sleep_control_reg) == 244);
    assert!(36 + offset_of!(Fadt, sleep_status_reg) == 256);
    assert!(36 + size_of::<Fadt>() == 276);
    assert!(size_of::<MadtFixed>() == 8);
    assert!(size_of::<MadtLocalApic>() == 8);
    assert!(size_of::<MadtIoApic>() == 12);
    assert!(size_of::<MadtLocalX2Apic>() == 16);
    assert!(size_of::<McfgAllocation>() == 16);
    // The RSDP sits where a legacy BIOS-area scan finds it.
    assert!(ACPI_START.is_multiple_of(16) && ACPI_START >= 0xE_0000 && ACPI_END <= 0x10_0000);
    // The largest MADT fits with everything else.
    assert!(
        (ACPI_START + 0x1000) + (44 + 12 + MAX_MADT_ENTRY * layout::MAX_VCPUS as usize) as u64
            <= ACPI_END
    );
    assert!(aml::eisa_id(b"PNP0501").is_some());
    assert!(aml::eisa_id(b"PNP0A08").is_some() && aml::eisa_id(b"PNP0A03").is_some());
    assert!(aml::eisa_id(b"PNP0C02").is_some());
};

const MAX_MADT_ENTRY: usize = size_of::<MadtLocalX2Apic>();
const TABLE_ALIGN: u64 = 16;
const DSDT_MAX: usize = 768;
/// MCFG: the header, 8 reserved bytes, one allocation.
const MCFG_LEN: u64 = (size_of::<SdtHeader>() + 8 + size_of::<McfgAllocation>()) as u64;

/// FADT, MADT, and the MCFG with PCI.
fn xsdt_entries(opts: &AcpiOptions) -> usize {
    2 + usize::from(opts.pci)
}

/// Where each table goes, for a VM's vCPU count and options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    rsdp: u64,
    xsdt: u64,
    fadt: u64,
    dsdt: u64,
    madt: u64,
    mcfg: u64,
    end: u64,
}

fn madt_len(vcpus: u32, opts: &AcpiOptions) -> u64 {
    let cpus: u64 = (0..vcpus)
        .map(|i| match local_apic_entry(i) {
            true => size_of::<MadtLocalApic>() as u64,
            false => size_of::<MadtLocalX2Apic>() as u64,
        })
        .sum();
    let ioapic = if opts.ioapic {
        size_of::<MadtIoApic>()
    } else {
        0
    };
    (size_of::<SdtHeader>() + size_of::<MadtFixed>() + ioapic) as u64 + cpus
}

/// A type-0 entry holds an 8-bit UID and APIC ID, and ID 0xFF means broadcast; anything
/// beyond needs the x2APIC form.
fn local_apic_entry(index: u32) -> bool {
    layout::apic_id(index) < 0xFF && index <= u8::MAX.into()
}

fn plan(vcpus: u32, dsdt_len: usize, opts: &AcpiOptions) -> Plan {
    let next = |at: u64, len: u64| align_up(at + len, TABLE_ALIGN);
    let rsdp = ACPI_START;
    let xsdt = next(rsdp, size_of::<Rsdp>() as u64);
    let fadt = next(
        xsdt,
        (size_of::<SdtHeader>() + 8 * xsdt_entries(opts)) as u64,
    );
    let dsdt = next(fadt, (size_of::<SdtHeader>() + size_of::<Fadt>()) as u64);
    let madt = next(dsdt, (size_of::<SdtHeader>() + dsdt_len) as u64);
    let mcfg = next(madt, madt_len(vcpus, opts));
    let end = if opts.pci { mcfg + MCFG_LEN } else { mcfg };
    Plan {
        rsdp,
        xsdt,
        fadt,
        dsdt,
        madt,
        mcfg,
        end,
    }
}

/// Bytes the tables take from [`ACPI_START`], for [`super::VmLayout::check_acpi`].
pub fn size(vcpus: u32, opts: &AcpiOptions) -> u64 {
    let body = dsdt_body(opts);
    match body.finish() {
        Some(b) => plan(vcpus, b.len(), opts).end - ACPI_START,
        // Cannot happen with the fixed device set; reported as too large rather than hidden.
        None => u64::MAX,
    }
}

/// Writes all tables and returns the RSDP's address. The caller has checked [`size`].
pub fn write<M: GuestMemory + ?Sized>(
    mem: &M,
    vcpus: u32,
    opts: &AcpiOptions,
) -> Result<u64, MemError> {
    let body = dsdt_body(opts);
    let dsdt_body = body.finish().ok_or(MemError {
        gpa: ACPI_START,
        len: DSDT_MAX,
    })?;
    let p = plan(vcpus, dsdt_body.len(), opts);

    let mut dsdt = Table::begin(mem, p.dsdt, *b"DSDT", 2)?;
    dsdt.push(dsdt_body)?;
    dsdt.finish()?;

    let mut madt = Table::begin(mem, p.madt, *b"APIC", 5)?;
    madt.push(
        MadtFixed {
            local_apic_address: U32::new(LAPIC_BASE as u32),
            flags: U32::new(0),
        }
        .as_bytes(),
    )?;
    for i in 0..vcpus {
        let id = layout::apic_id(i);
        if local_apic_entry(i) {
            let e = MadtLocalApic {
                kind: 0,
                length: size_of::<MadtLocalApic>() as u8,
                processor_uid: i as u8,
                apic_id: id as u8,
                flags: U32::new(MADT_ENABLED),
            };
            madt.push(e.as_bytes())?;
        } else {
            let e = MadtLocalX2Apic {
                kind: 9,
                length: size_of::<MadtLocalX2Apic>() as u8,
                reserved: U16::new(0),
                x2apic_id: U32::new(id),
                flags: U32::new(MADT_ENABLED),
                processor_uid: U32::new(i),
            };
            madt.push(e.as_bytes())?;
        }
    }
    if opts.ioapic {
        let e = MadtIoApic {
            kind: 1,
            length: size_of::<MadtIoApic>() as u8,
            id: IOAPIC_ID,
            reserved: 0,
            address: U32::new(IOAPIC_BASE as u32),
            gsi_base: U32::new(IOAPIC_GSI_BASE),
        };
        madt.push(e.as_bytes())?;
    }
    madt.finish()?;

    if opts.pci {
        let mut mcfg = Table::begin(mem, p.mcfg, *b"MCFG", 1)?;
        mcfg.push(&[0; 8])?;
        let ecam = McfgAllocation {
            base: U64::new(layout::PCI_ECAM_BASE),
            segment: U16::new(0),
            start_bus: 0,
            end_bus: ((layout::PCI_ECAM_SIZE >> 20) - 1) as u8,
            reserved: U32::new(0),
        };
        mcfg.push(ecam.as_bytes())?;
        mcfg.finish()?;
    }

    let fadt = Fadt {
        dsdt: U32::new(p.dsdt as u32),
        x_dsdt: U64::new(p.dsdt),
        iapc_boot_arch: U16::new(opts.boot_arch),
        flags: U32::new(
            FADT_WBINVD
                | FADT_PWR_BUTTON
                | FADT_SLP_BUTTON
                | FADT_RESET_REG_SUP
                | FADT_HW_REDUCED_ACPI,
        ),
        pm_tmr_blk: U32::new(opts.pm_timer.map_or(0, u32::from)),
        pm_tmr_len: if opts.pm_timer.is_some() { 4 } else { 0 },
        x_pm_tmr_blk: opts.pm_timer.map_or_else(Gas::default, Gas::io_dword),
        reset_reg: Gas::io_byte(RESET_PORT),
        reset_value: RESET_VALUE,
        sleep_control_reg: Gas::io_byte(SLEEP_CONTROL_PORT),
        sleep_status_reg: Gas::io_byte(SLEEP_STATUS_PORT),
        ..Default::default()
    };
    let mut t = Table::begin(mem, p.fadt, *b"FACP", 6)?;
    t.push(fadt.as_bytes())?;
    t.finish()?;

    let mut xsdt = Table::begin(mem, p.xsdt, *b"XSDT", 1)?;
    xsdt.push(&p.fadt.to_le_bytes())?;
    xsdt.push(&p.madt.to_le_bytes())?;
    if opts.pci {
        xsdt.push(&p.mcfg.to_le_bytes())?;
    }
    xsdt.finish()?;

    let mut rsdp = Rsdp {
        signature: *b"RSD PTR ",
        checksum: 0,
        oem_id: OEM_ID,
        revision: 2,
        rsdt_address: U32::new(0),
        length: U32::new(size_of::<Rsdp>() as u32),
        xsdt_address: U64::new(p.xsdt),
        extended_checksum: 0,
        reserved: [0; 3],
    };
    rsdp.checksum = checksum(&rsdp.as_bytes()[..20]);
    rsdp.extended_checksum = checksum(rsdp.as_bytes());
    mem.write(p.rsdp, rsdp.as_bytes())?;
    Ok(p.rsdp)
}

/// The byte that makes `bytes` sum to zero with it.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b)))
}

/// A table streamed into guest memory; length and checksum are patched in at the end.
struct Table<'m, M: GuestMemory + ?Sized> {
    mem: &'m M,
    start: u64,
    len: u64,
    sum: u8,
}

impl<'m, M: GuestMemory + ?Sized> Table<'m, M> {
    fn begin(mem: &'m M, start: u64, signature: [u8; 4], revision: u8) -> Result<Self, MemError> {
        let hdr = SdtHeader {
            signature,
            length: U32::new(0),
            revision,
            checksum: 0,
            oem_id: OEM_ID,
            oem_table_id: OEM_TABLE_ID,
            oem_revision: U32::new(1),
            creator_id: CREATOR_ID,
            creator_revision: U32::new(1),
        };
        let mut t = Table {
            mem,
            start,
            len: 0,
            sum: 0,
        };
        t.push(hdr.as_bytes())?;
        Ok(t)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), MemError> {
        self.mem.write(self.start + self.len, bytes)?;
        self.sum = bytes.iter().fold(self.sum, |s, &b| s.wrapping_add(b));
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn finish(self) -> Result<u64, MemError> {
        let len = (self.len as u32).to_le_bytes();
        let sum = len.iter().fold(self.sum, |s, &b| s.wrapping_add(b));
        self.mem
            .write(self.start + offset_of!(SdtHeader, length) as u64, &len)?;
        self.mem.write(
            self.start + offset_of!(SdtHeader, checksum) as u64,
            &[0u8.wrapping_sub(sum)],
        )?;
        Ok(self.len)
    }
}
