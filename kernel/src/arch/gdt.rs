//! Per-CPU GDT and TSS. The TSS exists for two reasons: VMX requires a non-zero host TR, and
//! a double fault must land on a known-good stack (IST 1) to be reported at all.
#![expect(unsafe_code)]
// UNSAFETY: loading GDTR/TR and reloading segment registers; per-CPU slots in a static.

use core::arch::asm;
use core::cell::UnsafeCell;
use x86::Ring;
use x86::bits64::segmentation::Descriptor64;
use x86::bits64::task::TaskStateSegment;
use x86::dtables::{DescriptorTablePointer, lgdt};
use x86::segmentation::{
    BuildDescriptor, CodeSegmentType, DataSegmentType, DescriptorBuilder, GateDescriptorBuilder,
    SegmentDescriptorBuilder, SegmentSelector,
};

pub const MAX_CPUS: usize = 8;
pub const KERNEL_CS: SegmentSelector = SegmentSelector::new(1, Ring::Ring0);
pub const KERNEL_DS: SegmentSelector = SegmentSelector::new(2, Ring::Ring0);
pub const TSS_SEL: SegmentSelector = SegmentSelector::new(3, Ring::Ring0);
/// IST slot used by the double-fault and NMI gates.
pub const IST_CRITICAL: u8 = 1;
const IST_STACK: usize = 16 * 1024;

#[repr(C, align(16))]
struct CpuTables {
    gdt: [u64; 5],
    tss: TaskStateSegment,
    ist_stack: [u8; IST_STACK],
}

struct PerCpu(UnsafeCell<CpuTables>);

// SAFETY: slot `n` is only ever touched by CPU `n`, once, in `init`.
unsafe impl Sync for PerCpu {}

static TABLES: [PerCpu; MAX_CPUS] = [const {
    PerCpu(UnsafeCell::new(CpuTables {
        gdt: [0; 5],
        tss: TaskStateSegment::new(),
        ist_stack: [0; IST_STACK],
    }))
}; MAX_CPUS];

/// Loads this CPU's GDT and TSS. `cpu` must be this CPU's own index, called once.
pub fn init(cpu: usize) {
    let slot = &TABLES[cpu % MAX_CPUS];
    // SAFETY: each CPU initialises its own slot exactly once before using it.
    let t = unsafe { &mut *slot.0.get() };
    let code: x86::segmentation::Descriptor =
        DescriptorBuilder::code_descriptor(0, 0, CodeSegmentType::ExecuteRead)
            .present()
            .l()
            .finish();
    let data: x86::segmentation::Descriptor =
        DescriptorBuilder::data_descriptor(0, 0xFFFFF, DataSegmentType::ReadWrite)
            .present()
            .limit_granularity_4kb()
            .db()
            .finish();
    let ist_top = (t.ist_stack.as_ptr() as u64 + IST_STACK as u64) & !0xF;
    t.tss.set_ist(usize::from(IST_CRITICAL - 1), ist_top);
    let tss_base = core::ptr::from_ref(&t.tss) as u64;
    let tss_desc: Descriptor64 = <DescriptorBuilder as GateDescriptorBuilder<u64>>::tss_descriptor(
        tss_base,
        core::mem::size_of::<TaskStateSegment>() as u64 - 1,
        true,
    )
    .present()
    .finish();
    // SAFETY: Descriptor64 is two plain u64 words (x86 crate layout, repr(C, packed)).
    let tss_words: [u64; 2] = unsafe { core::mem::transmute(tss_desc) };
    t.gdt = [0, code.as_u64(), data.as_u64(), tss_words[0], tss_words[1]];

    let ptr = DescriptorTablePointer::new_from_slice(&t.gdt);
    // SAFETY: the table lives in a static for ever and holds valid 64-bit descriptors; CS is
    // reloaded through a far return, data segments and TR right after.
    unsafe {
        lgdt(&ptr);
        asm!(
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {ds:x}",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            cs = in(reg) u64::from(KERNEL_CS.bits()),
            ds = in(reg) KERNEL_DS.bits(),
            tmp = out(reg) _,
        );
        x86::task::load_tr(TSS_SEL);
    }
}
