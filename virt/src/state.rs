//! How a vCPU starts.

/// The architectural state a vCPU starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InitialState {
    /// 32-bit protected mode, paging off, flat 4 GiB CS/DS/ES/SS, interrupts off.
    /// PVH starts here with EBX = hvm_start_info; Linux's 32-bit boot protocol with
    /// ESI = boot_params. Needs unrestricted guest on VMX.
    Flat32 { entry: u32, ebx: u32, esi: u32 },
    /// 64-bit long mode on page tables the kernel built in guest memory (CR3 is a GPA).
    /// CR4.PAE, EFER.LME/LMA/NXE, CR0.PG/PE/WP are set; GDT/IDT are empty until the guest
    /// loads its own.
    Long64 {
        entry: u64,
        cr3: u64,
        rsp: u64,
        rdi: u64,
        rsi: u64,
    },
    /// An application processor before its first SIPI: not runnable until
    /// the backend's SIPI.
    WaitForSipi,
}

/// Guest RAM: one host-physically contiguous block mapped at GPA 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RamRegion {
    /// Host-physical (== host-virtual, identity-mapped) start, 4 KiB aligned.
    pub hpa_base: u64,
    pub size: u64,
    /// Which 2 MiB chunks are zeroed and mapped (see [`crate::ram_chunks`]); `None`: all of
    /// it is ready (memory a test owns).
    pub chunks: Option<&'static crate::ram_chunks::RamChunks>,
}
