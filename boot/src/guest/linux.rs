//! The Linux x86 boot protocol for bzImage kernels, 32-bit entry: the protected-mode kernel at
//! its preferred address, the zero page (`boot_params`) with the setup header copied from the
//! image, an e820 map, the command line, the initrd and the RSDP. Field layout per the kernel's
//! `Documentation/arch/x86/boot.rst` and `zero-page.rst`, checked at compile time below.

use core::mem::{offset_of, size_of};

use virt::{GuestMemory, MemError};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout::{self, GuestRange, MemRegion, VmLayout, align_up};
use super::{GuestLoadError, write_zeros};

/// 2.12 (Linux 3.8) is the oldest protocol with everything this loader relies on:
/// `pref_address`/`init_size` (2.10) and `xloadflags` (2.12).
pub const MIN_PROTOCOL: u16 = 0x020C;
pub const BOOT_FLAG: u16 = 0xAA55;
pub const HEADER_MAGIC: [u8; 4] = *b"HdrS";
/// `type_of_loader` for a boot loader without an assigned ID.
pub const LOADER_UNDEFINED: u8 = 0xFF;
/// `loadflags` bit 0: the protected-mode kernel runs at 1 MiB or above (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `xloadflags` bit 0: a 64-bit entry at `load + 0x200` exists.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// The setup header starts here in both the image and the zero page.
pub const SETUP_HEADER_OFFSET: usize = 0x1F1;
/// Room in the zero page for the header (`_pad7` ends it at 0x290).
pub const SETUP_HEADER_MAX_END: usize = 0x290;
pub const E820_MAX_ENTRIES: usize = 128;

/// `struct setup_header`: packed, so every multi-byte field is an unaligned little-endian one.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetupHeader {
    pub setup_sects: u8,
    pub root_flags: U16,
    pub syssize: U32,
    pub ram_size: U16,
    pub vid_mode: U16,
    pub root_dev: U16,
    pub boot_flag: U16,
    pub jump: U16,
    pub header: [u8; 4],
    pub version: U16,
    pub realmode_swtch: U32,
    pub start_sys_seg: U16,
    pub kernel_version: U16,
    pub type_of_loader: u8,
    pub loadflags: u8,
    pub setup_move_size: U16,
    pub code32_start: U32,
    pub ramdisk_image: U32,
    pub ramdisk_size: U32,
    pub bootsect_kludge: U32,
    pub heap_end_ptr: U16,
    pub ext_loader_ver: u8,
    pub ext_loader_type: u8,
    pub cmd_line_ptr: U32,
    pub initrd_addr_max: U32,
    pub kernel_alignment: U32,
    pub relocatable_kernel: u8,
    pub min_alignment: u8,
    pub xloadflags: U16,
    pub cmdline_size: U32,
    pub hardware_subarch: U32,
    pub hardware_subarch_data: U64,
    pub payload_offset: U32,
    pub payload_length: U32,
    pub setup_data: U64,
    pub pref_address: U64,
    pub init_size: U32,
    pub handover_offset: U32,
    pub kernel_info_offset: U32,
}

/// `struct e820_entry` (packed, 20 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct E820Entry {
    pub addr: U64,
    pub size: U64,
    pub kind: U32,
}

/// `struct boot_params`, the zero page; the parts this loader never fills are opaque bytes.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootParams {
    pub screen_info: [u8; 0x40],
    pub apm_bios_info: [u8; 0x14],
    pub _pad2: [u8; 4],
    pub tboot_addr: U64,
    pub ist_info: [u8; 0x10],
    pub acpi_rsdp_addr: U64,
    pub _pad3: [u8; 8],
    pub hd0_info: [u8; 16],
    pub hd1_info: [u8; 16],
    pub sys_desc_table: [u8; 16],
    pub olpc_ofw_header: [u8; 16],
    pub ext_ramdisk_image: U32,
    pub ext_ramdisk_size: U32,
    pub ext_cmd_line_ptr: U32,
    pub _pad4: [u8; 112],
    pub cc_blob_address: U32,
    pub edid_info: [u8; 0x80],
    pub efi_info: [u8; 0x20],
    pub alt_mem_k: U32,
    pub scratch: U32,
    pub e820_entries: u8,
    pub eddbuf_entries: u8,
    pub edd_mbr_sig_buf_entries: u8,
    pub kbd_status: u8,
    pub secure_boot: u8,
    pub _pad5: [u8; 2],
    /// Non-zero tells Linux the loader copied garbage past the header; it stays 0.
    pub sentinel: u8,
    pub _pad6: u8,
    pub hdr: SetupHeader,
    pub _pad7: [u8; SETUP_HEADER_MAX_END - SETUP_HEADER_OFFSET - size_of::<SetupHeader>()],
    pub edd_mbr_sig_buffer: [u8; 0x40],
    pub e820_table: [E820Entry; E820_MAX_ENTRIES],
    pub _pad8: [u8; 48],
    pub eddbuf: [u8; 0x1EC],
    pub _pad9: [u8; 276],
}

/// Offsets as the header is laid out in the image (and in the zero page).
macro_rules! hdr_at {
    ($field:ident) => {
        SETUP_HEADER_OFFSET + offset_of!(SetupHeader, $field)
    };
}

const _: () = {
    assert!(size_of::<SetupHeader>() == 0x26C - 0x1F1);
    assert!(hdr_at!(setup_sects) == 0x1F1);
    assert!(hdr_at!(syssize) == 0x1F4);
    assert!(hdr_at!(vid_mode) == 0x1FA);
    assert!(hdr_at!(boot_flag) == 0x1FE);
    assert!(hdr_at!(jump) == 0x200);
    assert!(hdr_at!(header) == 0x202);
    assert!(hdr_at!(version) == 0x206);
    assert!(hdr_at!(type_of_loader) == 0x210);
    assert!(hdr_at!(loadflags) == 0x211);
    assert!(hdr_at!(code32_start) == 0x214);
    assert!(hdr_at!(ramdisk_image) == 0x218);
    assert!(hdr_at!(ramdisk_size) == 0x21C);
    assert!(hdr_at!(heap_end_ptr) == 0x224);
    assert!(hdr_at!(cmd_line_ptr) == 0x228);
    assert!(hdr_at!(initrd_addr_max) == 0x22C);
    assert!(hdr_at!(kernel_alignment) == 0x230);
    assert!(hdr_at!(relocatable_kernel) == 0x234);
    assert!(hdr_at!(xloadflags) == 0x236);
    assert!(hdr_at!(cmdline_size) == 0x238);
    assert!(hdr_at!(hardware_subarch) == 0x23C);
    assert!(hdr_at!(payload_offset) == 0x248);
    assert!(hdr_at!(payload_length) == 0x24C);
    assert!(hdr_at!(setup_data) == 0x250);
    assert!(hdr_at!(pref_address) == 0x258);
    assert!(hdr_at!(init_size) == 0x260);
    assert!(hdr_at!(handover_offset) == 0x264);
    assert!(hdr_at!(kernel_info_offset) == 0x268);
    assert!(size_of::<E820Entry>() == 20);
    assert!(size_of::<BootParams>() == 0x1000);
    assert!(offset_of!(BootParams, acpi_rsdp_addr) == 0x070);
    assert!(offset_of!(BootParams, ext_ramdisk_image) == 0x0C0);
    assert!(offset_of!(BootParams, ext_cmd_line_ptr) == 0x0C8);
    assert!(offset_of!(BootParams, cc_blob_address) == 0x13C);
    assert!(offset_of!(BootParams, e820_entries) == 0x1E8);
    assert!(offset_of!(BootParams, sentinel) == 0x1EF);
    assert!(offset_of!(BootParams, hdr) == SETUP_HEADER_OFFSET);
    assert!(offset_of!(BootParams, edd_mbr_sig_buffer) == 0x290);
    assert!(offset_of!(BootParams, e820_table) == 0x2D0);
    assert!(offset_of!(BootParams, eddbuf) == 0xD00);
    assert!(layout::MemoryMap::CAPACITY <= E820_MAX_ENTRIES);
    assert!(layout::BOOT_INFO + size_of::<BootParams>() as u64 <= layout::CMDLINE);
};

/// A validated bzImage.
#[derive(Clone, Copy, Debug)]
pub struct BzImage<'a> {
    hdr: SetupHeader,
    /// The image's setup header as the kernel sized it (end of the 0x200 jump's target).
    raw_hdr: &'a [u8],
    /// The protected-mode kernel: everything after the real-mode setup sectors.
    kernel: &'a [u8],
}

impl<'a> BzImage<'a> {
    pub fn parse(image: &'a [u8]) -> Result<Self, GuestLoadError> {
        let hdr_end = SETUP_HEADER_OFFSET + size_of::<SetupHeader>();
        let truncated = |needed| GuestLoadError::BzImageTruncated {
            len: image.len(),
            needed,
        };
        let bytes = image
            .get(SETUP_HEADER_OFFSET..hdr_end)
            .ok_or(truncated(hdr_end))?;
        let hdr = SetupHeader::read_from_bytes(bytes).map_err(|_| truncated(hdr_end))?;
        if hdr.boot_flag.get() != BOOT_FLAG || hdr.header != HEADER_MAGIC {
            return Err(GuestLoadError::NotBzImage);
        }
        let version = hdr.version.get();
        if version < MIN_PROTOCOL {
            return Err(GuestLoadError::ProtocolTooOld { version });
        }
        if hdr.loadflags & LOADED_HIGH == 0 {
            return Err(GuestLoadError::NotBzImage);
        }
        // The header's own extent: the jump at 0x200 is a short jmp over it.
        let declared_end = 0x202 + usize::from(image[0x201]);
        if declared_end < hdr_at!(handover_offset) || declared_end > SETUP_HEADER_MAX_END {
            return Err(GuestLoadError::NotBzImage);
        }
        // setup_sects == 0 means 4 for historical reasons.
        let sects = match hdr.setup_sects {
            0 => 4,
            n => usize::from(n),
        };
        let setup_len = (sects + 1) * 512;
        let after_setup = image.get(setup_len..).ok_or(truncated(setup_len))?;
        let kernel = match hdr.syssize.get() as usize * 16 {
            0 => after_setup,
            n => after_setup.get(..n).ok_or(truncated(setup_len + n))?,
        };
        if kernel.is_empty() {
            return Err(truncated(setup_len + 1));
        }
        let raw_hdr = image
            .get(SETUP_HEADER_OFFSET..declared_end)
            .ok_or(truncated(declared_end))?;
        Ok(BzImage {
            hdr,
            raw_hdr,
            kernel,
        })
    }

    pub fn header(&self) -> &SetupHeader {
        &self.hdr
    }

    pub fn version(&self) -> u16 {
        self.hdr.version.get()
    }

    /// The protected-mode kernel that is copied to the load address.
    pub fn protected_mode_kernel(&self) -> &'a [u8] {
        self.kernel
    }

    /// The compressed vmlinux inside the protected-mode kernel (what extract-vmlinux tools
    /// decompress to get a PVH-capable ELF), if the header's bounds hold.
    pub fn payload(&self) -> Option<&'a [u8]> {
        let off = self.hdr.payload_offset.get() as usize;
        let len = self.hdr.payload_length.get() as usize;
        self.kernel.get(off..off.checked_add(len)?)
    }

    /// The longest command line the kernel accepts, capped by the layout.
    pub fn cmdline_max(&self) -> usize {
        (self.hdr.cmdline_size.get() as usize).min(layout::CMDLINE_MAX)
    }

    /// One past the highest address the initrd may occupy.
    pub fn initrd_limit(&self) -> u64 {
        u64::from(self.hdr.initrd_addr_max.get()) + 1
    }

    /// Where the kernel goes and how much RAM it claims before it reads the memory map:
    /// `pref_address` for a relocatable kernel (where it would move itself anyway),
    /// `code32_start` otherwise, for `max(init_size, image)` bytes.
    pub fn placement(&self, layout: &VmLayout) -> Result<GuestRange, GuestLoadError> {
        let size = u64::from(self.hdr.init_size.get()).max(self.kernel.len() as u64);
        let start = if self.hdr.relocatable_kernel != 0 {
            let align = u64::from(self.hdr.kernel_alignment.get());
            let align = if align.is_power_of_two() { align } else { 1 };
            align_up(self.hdr.pref_address.get(), align)
        } else {
            u64::from(self.hdr.code32_start.get())
        };
        let range = GuestRange {
            start,
            end: start.saturating_add(size),
        };
        // The entry is 32-bit: a start above 4 GiB fails the RAM check as RAM is below 3 GiB.
        if !layout.kernel_window().contains(&range) {
            return Err(GuestLoadError::KernelOutsideRam { start, size });
        }
        Ok(range)
    }

    pub fn load<M: GuestMemory + ?Sized>(&self, mem: &M, start: u64) -> Result<(), MemError> {
        mem.write(start, self.kernel)
    }

    /// Writes the zero page at [`layout::BOOT_INFO`]. The command line must already be at
    /// [`layout::CMDLINE`].
    pub fn write_boot_params<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        layout: &VmLayout,
        kernel_start: u64,
        initrd: Option<GuestRange>,
        rsdp: u64,
    ) -> Result<(), MemError> {
        let base = layout::BOOT_INFO;
        write_zeros(mem, base, size_of::<BootParams>() as u64)?;

        // Copy the header as the kernel sized it, then overwrite what the loader owns.
        mem.write(base + SETUP_HEADER_OFFSET as u64, self.raw_hdr)?;
        let mut hdr = self.hdr;
        hdr.type_of_loader = LOADER_UNDEFINED;
        hdr.loadflags = LOADED_HIGH;
        hdr.code32_start = U32::new(kernel_start as u32);
        let (image, size) = initrd.map_or((0, 0), |r| (r.start as u32, r.len() as u32));
        hdr.ramdisk_image = U32::new(image);
        hdr.ramdisk_size = U32::new(size);
        hdr.heap_end_ptr = U16::new(0);
        hdr.cmd_line_ptr = U32::new(layout::CMDLINE as u32);
        hdr.hardware_subarch = U32::new(0);
        hdr.hardware_subarch_data = U64::new(0);
        hdr.setup_data = U64::new(0);
        let owned = &hdr.as_bytes()[..self.raw_hdr.len().min(size_of::<SetupHeader>())];
        mem.write(base + SETUP_HEADER_OFFSET as u64, owned)?;

        let map = layout.memory_map(false);
        let mut at = base + offset_of!(BootParams, e820_table) as u64;
        for region in map.as_slice() {
            mem.write(at, E820Entry::from(region).as_bytes())?;
            at += size_of::<E820Entry>() as u64;
        }
        let count = map.as_slice().len() as u8;
        mem.write(base + offset_of!(BootParams, e820_entries) as u64, &[count])?;
        mem.write_u64(base + offset_of!(BootParams, acpi_rsdp_addr) as u64, rsdp)
    }
}

impl From<&MemRegion> for E820Entry {
    fn from(r: &MemRegion) -> Self {
        E820Entry {
            addr: U64::new(r.range.start),
            size: U64::new(r.range.len()),
            kind: U32::new(r.kind as u32),
        }
    }
}
