//! The kernel's stacks (the BSP's and one per AP), each above an unmapped guard page: an
//! overflow then faults, and is reported as one, instead of silently overwriting whatever the
//! linker placed below the stack.
//
// The stacks are `static mut` because each CPU writes its own through RSP; Rust code only
// ever takes their addresses.

use super::gdt::MAX_CPUS;

/// Every kernel stack's size. A pCPU that restarts a VM builds the VM's personality on its
/// own stack, so the APs' stacks are as large as the BSP's.
pub const STACK_BYTES: usize = 256 * 1024;
const GUARD_BYTES: usize = 4096;

#[repr(C, align(4096))]
pub struct GuardedStack {
    guard: [u8; GUARD_BYTES],
    stack: [u8; STACK_BYTES],
}

impl GuardedStack {
    const fn new() -> Self {
        Self {
            guard: [0; GUARD_BYTES],
            stack: [0; STACK_BYTES],
        }
    }
}

/// From one stack's start to the next one's: an AP's stack top is `AP_STACKS + (n + 1) * STRIDE`.
pub const STRIDE: usize = core::mem::size_of::<GuardedStack>();
const _: () = assert!(STRIDE == GUARD_BYTES + STACK_BYTES);

/// The BSP's stack; the kernel's entry point loads `BOOT_STACK + STRIDE` into RSP.
pub static mut BOOT_STACK: GuardedStack = GuardedStack::new();
/// Indexed by pCPU number; entry 0 (the BSP's number) stays unused.
pub static mut AP_STACKS: [GuardedStack; MAX_CPUS] = [const { GuardedStack::new() }; MAX_CPUS];

/// The base of the AP stack array, for the trampoline.
pub fn ap_stacks_base() -> u64 {
    (&raw const AP_STACKS) as u64
}

/// The guard page of pCPU `cpu`'s stack.
fn guard_page(cpu: usize) -> u64 {
    if cpu == 0 {
        (&raw const BOOT_STACK) as u64
    } else {
        ap_stacks_base() + (cpu * STRIDE) as u64
    }
}

/// The lowest address of pCPU `cpu`'s stack (the end of its guard page).
pub fn bottom(cpu: usize) -> u64 {
    guard_page(cpu) + GUARD_BYTES as u64
}

/// Unmaps every stack's guard page. Runs on the BSP once the host page tables exist and
/// before any AP starts (the APs load the same tables).
pub fn protect() -> Result<(), crate::mm::paging::PagingError> {
    (0..MAX_CPUS).try_for_each(|cpu| crate::mm::paging::guard(guard_page(cpu)))
}

/// Whether `addr` lies in a guard page, and whose: the pCPU whose stack overflowed.
pub fn overflowed(addr: u64) -> Option<usize> {
    (0..MAX_CPUS)
        .find(|&cpu| (guard_page(cpu)..guard_page(cpu) + GUARD_BYTES as u64).contains(&addr))
}

/// Whether `page` (4 KiB aligned) is one of the guard pages.
pub fn is_guard(page: u64) -> bool {
    overflowed(page).is_some()
}
