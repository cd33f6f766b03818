//! The register state the vCPU layer does not switch: x87/SSE/AVX (XSAVE components) and the
//! debug address registers DR0-DR3. Each vCPU keeps its own copy; the exit loop loads it when
//! the vCPU's turn on a pCPU starts and saves it when the turn ends, so vCPUs (of any VM)
//! sharing a pCPU never see or disturb each other's registers. The hypervisor itself uses
//! neither (the target is soft-float and sets no breakpoints).
#![expect(unsafe_code)]
// UNSAFETY: XSAVE/XRSTOR/FXSAVE/FXRSTOR into frames we own, XSETBV, and MOV to/from DR0-3.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static XSAVE: AtomicBool = AtomicBool::new(false);
/// XCR0 bits the CPU supports; the host runs with all of them enabled so that one XSAVE
/// captures whatever a guest's own XCR0 may have enabled.
static XCR0_ALL: AtomicU64 = AtomicU64::new(0);
static AREA_BYTES: AtomicU64 = AtomicU64::new(512);

const FCW_DEFAULT: u16 = 0x037F;
const MXCSR_DEFAULT: u32 = 0x1F80;

/// Once per pCPU, after the vCPU layer set CR4.OSXSAVE: all supported components enabled.
pub fn init_cpu() {
    let cpuid = x86::cpuid::CpuId::new();
    let xsave = cpuid.get_feature_info().is_some_and(|f| f.has_xsave());
    if !xsave {
        return;
    }
    let leaf = x86::cpuid::cpuid!(0xD, 0);
    let all = u64::from(leaf.eax) | (u64::from(leaf.edx) << 32);
    // SAFETY: CR4.OSXSAVE is set by vcpu::enable on every pCPU before this runs, and `all`
    // is exactly the set CPUID reports as valid for XCR0.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") all as u32, in("edx") (all >> 32) as u32, options(nomem, nostack))
    };
    XCR0_ALL.store(all, Ordering::Relaxed);
    // EBX is the area size for the features now enabled in XCR0.
    let sized = x86::cpuid::cpuid!(0xD, 0);
    AREA_BYTES.store(u64::from(sized.ebx).max(576), Ordering::Relaxed);
    XSAVE.store(true, Ordering::Release);
}

/// Bytes of save area a vCPU needs on this machine.
pub fn area_bytes() -> u64 {
    AREA_BYTES.load(Ordering::Acquire)
}

/// One vCPU's registers while it is off the CPU.
pub struct ExtState {
    /// 64-byte aligned, `area_bytes()` long, owned by this vCPU.
    area: u64,
    dr: [u64; 4],
}

impl ExtState {
    /// `area` is a zeroed, page-aligned block of `area_bytes()` the caller gives up. It is
    /// initialised so that the first restore puts every component in its reset state.
    pub fn new(area: u64) -> Self {
        // SAFETY: the block is ours, zeroed and at least 512 bytes; FCW is at offset 0 and
        // MXCSR at 24 of the legacy region. XSTATE_BV stays 0, so XRSTOR initialises all
        // components instead of loading them (except MXCSR, hence the default value).
        unsafe {
            core::ptr::write_volatile(area as *mut u16, FCW_DEFAULT);
            core::ptr::write_volatile((area + 24) as *mut u32, MXCSR_DEFAULT);
        }
        Self { area, dr: [0; 4] }
    }

    /// Back to the reset state of every component, for a vCPU that starts over.
    pub fn reset(&mut self) {
        // SAFETY: the block is this vCPU's own (see `new`), `area_bytes()` long, and not in
        // use: the vCPU is between turns.
        unsafe { core::ptr::write_bytes(self.area as *mut u8, 0, area_bytes() as usize) };
        *self = Self::new(self.area);
    }

    /// Puts this vCPU's registers into the CPU (start of its turn).
    pub fn load(&self) {
        let p = self.area as *const u8;
        // SAFETY: `area` is this vCPU's aligned save block (see `new`); the mask covers
        // everything XCR0 enables, which is everything the CPU supports.
        unsafe {
            if XSAVE.load(Ordering::Acquire) {
                asm!("xrstor64 [{}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, readonly));
            } else {
                asm!("fxrstor64 [{}]", in(reg) p, options(nostack, readonly));
            }
            asm!("mov dr0, {}", in(reg) self.dr[0], options(nomem, nostack));
            asm!("mov dr1, {}", in(reg) self.dr[1], options(nomem, nostack));
            asm!("mov dr2, {}", in(reg) self.dr[2], options(nomem, nostack));
            asm!("mov dr3, {}", in(reg) self.dr[3], options(nomem, nostack));
        }
    }

    /// Takes this vCPU's registers out of the CPU (end of its turn).
    pub fn save(&mut self) {
        let p = self.area as *mut u8;
        // SAFETY: as in `load`; the block is written, nothing else aliases it.
        unsafe {
            if XSAVE.load(Ordering::Acquire) {
                asm!("xsave64 [{}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                asm!("fxsave64 [{}]", in(reg) p, options(nostack));
            }
            asm!("mov {}, dr0", out(reg) self.dr[0], options(nomem, nostack));
            asm!("mov {}, dr1", out(reg) self.dr[1], options(nomem, nostack));
            asm!("mov {}, dr2", out(reg) self.dr[2], options(nomem, nostack));
            asm!("mov {}, dr3", out(reg) self.dr[3], options(nomem, nostack));
        }
    }
}
