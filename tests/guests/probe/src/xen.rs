//! The Xen face as a PVH domU sees it (`probe.face=xen`): the CPUID leaves, the hypercall
//! page and direct VMCALL/VMMCALL, shared_info and its pvclock, upcalls through the callback
//! vector, the VIRQ_TIMER single-shot timer, an event-channel loopback pair, and the error
//! numbers for bad hypercall numbers, sub-ops, ports and pointers.
//!
//! The constants are the guest's own copy of Xen's public headers: the probe must not share
//! the hypervisor's definitions, or a wrong layout would agree with itself.
#![expect(unsafe_code)]
// UNSAFETY: hypercalls are instructions (VMCALL/VMMCALL) and calls into the hypervisor's page.

mod evtchn;
mod grant;
mod store;

use crate::arch;
use crate::checks::check;
use crate::page::Page;
use core::arch::asm;
use core::sync::atomic::{Ordering, fence};

const BASE: u32 = 0x4000_0000;

/// `__HYPERVISOR_*`.
const MEMORY_OP: u32 = 12;
const XEN_VERSION: u32 = 17;
const IRET: u32 = 23;
const VCPU_OP: u32 = 24;
const EVENT_CHANNEL_OP: u32 = 32;
const HVM_OP: u32 = 34;

const EFAULT: i64 = -14;
const EINVAL: i64 = -22;
const ENOSYS: i64 = -38;
const ETIME: i64 = -62;

const DOMID_SELF: u16 = 0x7FF0;
const XENVER_VERSION: u64 = 0;
const XENVER_GET_FEATURES: u64 = 6;
const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 1 << 2;
const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 1 << 8;
const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 1 << 9;
const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
const XENMAPSPACE_SHARED_INFO: u32 = 0;
const HVMOP_SET_PARAM: u64 = 0;
const HVMOP_GET_PARAM: u64 = 1;
const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
const VCPU_SSHOTTMR_FUTURE: u32 = 1;
const EVTCHNOP_BIND_VIRQ: u64 = 1;
const EVTCHNOP_SEND: u64 = 4;
const VIRQ_TIMER: u32 = 0;

/// `XEN_HVM_CPUID_*` in leaf base+4 EAX.
const HVM_VCPU_ID_PRESENT: u32 = 1 << 3;
const HVM_DOMID_PRESENT: u32 = 1 << 4;

/// The callback vector (`HVM_PARAM_CALLBACK_IRQ` type 2): delivered without an EOI.
const UPCALL_VECTOR: u8 = 0x50;

/// shared_info, as 64-bit words: vcpu_info[0] at 0 (upcall_pending byte 0, pending_sel at
/// 8, vcpu_time_info at 32), evtchn_pending at 2048, evtchn_mask at 2560, wallclock at 3072.
const W_VI0_FLAGS: usize = 0;
const W_VI0_SEL: usize = 1;
const W_TIME: usize = 4;
const W_PENDING: usize = 2048 / 8;
const W_MASK: usize = 2560 / 8;
const W_WALLCLOCK: usize = 3072 / 8;

static HYPERCALL_PAGE: Page = Page::new();
static SHARED_INFO: Page = Page::new();

/// How the probe reaches the hypervisor.
#[derive(Clone, Copy)]
struct Xen {
    amd: bool,
    /// The hypercall page is installed and its stubs are what they must be.
    page: bool,
}

impl Xen {
    /// Through the hypercall page when it checked out, else directly.
    fn call(self, nr: u32, a: [u64; 5]) -> i64 {
        if self.page {
            call_page(nr, a)
        } else {
            self.direct(u64::from(nr), a)
        }
    }

    /// A hypercall by the instruction this CPU vendor's hardware virtualisation traps.
    fn direct(self, nr: u64, a: [u64; 5]) -> i64 {
        let ret: u64;
        // SAFETY: a hypercall changes only RAX and the argument memory the pointers in `a`
        // name, all of which the callers own (or are deliberately bad, which is the test).
        unsafe {
            if self.amd {
                asm!("vmmcall", inlateout("rax") nr => ret, inlateout("rdi") a[0] => _,
                    inlateout("rsi") a[1] => _, inlateout("rdx") a[2] => _,
                    inlateout("r10") a[3] => _, inlateout("r8") a[4] => _, options(nostack));
            } else {
                asm!("vmcall", inlateout("rax") nr => ret, inlateout("rdi") a[0] => _,
                    inlateout("rsi") a[1] => _, inlateout("rdx") a[2] => _,
                    inlateout("r10") a[3] => _, inlateout("r8") a[4] => _, options(nostack));
            }
        }
        ret as i64
    }
}

fn call_page(nr: u32, a: [u64; 5]) -> i64 {
    let stub = HYPERCALL_PAGE.addr() + 32 * u64::from(nr);
    let ret: u64;
    // SAFETY: only called once xen-hypercall-page found every stub to be
    // `mov eax, nr; vmcall|vmmcall; ret`; the call needs the stack for its return address.
    unsafe {
        asm!("call {stub}", stub = in(reg) stub, lateout("rax") ret,
            inlateout("rdi") a[0] => _, inlateout("rsi") a[1] => _, inlateout("rdx") a[2] => _,
            inlateout("r10") a[3] => _, inlateout("r8") a[4] => _);
    }
    ret as i64
}

/// A pointer argument. The cast exposes the object to the hypercall, which writes into it.
fn ptr<T>(v: &mut T) -> u64 {
    v as *mut T as u64
}

/// The pvclock of vcpu_info 0, read under its version protocol.
#[derive(Clone, Copy, Debug)]
struct Clock {
    version: u32,
    tsc_timestamp: u64,
    system_time: u64,
    mul: u32,
    shift: i8,
}

impl Clock {
    /// Xen system time (ns) at guest TSC `tsc`: the reader's formula from the public header.
    fn at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        let d = if self.shift >= 0 {
            delta << self.shift
        } else {
            delta >> -self.shift
        };
        self.system_time
            .wrapping_add(((u128::from(d) * u128::from(self.mul)) >> 32) as u64)
    }
}

/// One consistent snapshot of the pvclock and the TSC, and whether the first try was
/// already consistent (an even version, unchanged across the read).
fn read_clock() -> (Clock, u64, bool) {
    let mut first = true;
    let mut clean = false;
    loop {
        let v1 = SHARED_INFO.word(W_TIME) as u32;
        fence(Ordering::Acquire);
        let tsc_timestamp = SHARED_INFO.word(W_TIME + 1);
        let system_time = SHARED_INFO.word(W_TIME + 2);
        let w = SHARED_INFO.word(W_TIME + 3);
        let tsc = arch::rdtsc();
        fence(Ordering::Acquire);
        let v2 = SHARED_INFO.word(W_TIME) as u32;
        let ok = v1 == v2 && v1.is_multiple_of(2);
        if first {
            clean = ok;
            first = false;
        }
        if ok {
            let c = Clock {
                version: v1,
                tsc_timestamp,
                system_time,
                mul: w as u32,
                shift: (w >> 32) as u8 as i8,
            };
            return (c, tsc, clean);
        }
    }
}

fn now_ns() -> u64 {
    let (c, tsc, _) = read_clock();
    c.at(tsc)
}

fn pending(port: u32) -> bool {
    SHARED_INFO.word(W_PENDING + port as usize / 64) & (1 << (port % 64)) != 0
}

fn clear_pending(port: u32) {
    SHARED_INFO.0[W_PENDING + port as usize / 64].fetch_and(!(1 << (port % 64)), Ordering::AcqRel);
}

fn set_mask(port: u32, masked: bool) {
    let w = &SHARED_INFO.0[W_MASK + port as usize / 64];
    if masked {
        w.fetch_or(1 << (port % 64), Ordering::AcqRel);
    } else {
        w.fetch_and(!(1 << (port % 64)), Ordering::AcqRel);
    }
}

/// What a guest's upcall handler does first: take the per-vCPU flags.
fn ack_upcall() {
    SHARED_INFO.0[W_VI0_FLAGS].fetch_and(!0xFF, Ordering::AcqRel);
    SHARED_INFO.0[W_VI0_SEL].store(0, Ordering::Release);
}

pub fn checks() {
    let [_, vb, vc, vd] = arch::cpuid(0, 0);
    let amd = [vb, vd, vc] == [0x6874_7541, 0x6974_6E65, 0x444D_4163];

    let [max, b, c, d] = arch::cpuid(BASE, 0);
    let words = [b.to_le_bytes(), c.to_le_bytes(), d.to_le_bytes()];
    let sig = words.as_flattened();
    check(
        "xen-cpuid-signature",
        sig == b"XenVMMXenVMM" && max >= BASE + 4,
        format_args!("max {max:#x} {:?}", core::str::from_utf8(sig)),
    );
    let [ver, ..] = arch::cpuid(BASE + 1, 0);
    check(
        "xen-cpuid-version",
        ver >> 16 >= 4,
        format_args!("{}.{}", ver >> 16, ver & 0xFFFF),
    );
    let [pages, msr, ..] = arch::cpuid(BASE + 2, 0);
    check(
        "xen-cpuid-hypercall-msr",
        pages >= 1 && msr == 0x4000_0000,
        format_args!("{pages} page(s), MSR {msr:#x}"),
    );
    let [hvm, vcpu_id, domid, _] = arch::cpuid(BASE + 4, 0);
    check(
        "xen-cpuid-hvm-leaf",
        hvm & (HVM_VCPU_ID_PRESENT | HVM_DOMID_PRESENT) == HVM_VCPU_ID_PRESENT | HVM_DOMID_PRESENT
            && vcpu_id == 0
            && domid != 0
            && domid < u32::from(DOMID_SELF),
        format_args!("eax {hvm:#x} vcpu {vcpu_id} domid {domid}"),
    );
    // Linux scans the range in 0x100 steps and takes the first signature it knows.
    let other = arch::cpuid(BASE + 0x100, 0);
    check(
        "xen-cpuid-no-second-signature",
        other == [0; 4],
        format_args!("{other:x?}"),
    );

    // A page outside RAM, or a page index other than 0 in the low bits, is refused.
    let outside = arch::catching(2, || arch::wrmsr(msr, 0x0800_0000));
    let index = arch::catching(2, || arch::wrmsr(msr, HYPERCALL_PAGE.addr() | 1));
    check(
        "xen-hypercall-msr-bad-page-gp",
        outside == Some(13) && index == Some(13),
        format_args!("past RAM {outside:?}, page index 1 {index:?}"),
    );
    // The hypercall page: slot n is `mov eax, n; vmcall|vmmcall; ret`, int3 after it.
    arch::wrmsr(msr, HYPERCALL_PAGE.addr());
    let trap = if amd { 0xD9 } else { 0xC1 };
    let mut bad = None;
    for n in 0..128u32 {
        let at = n as usize * 32;
        let mut want = [0xCCu8; 32];
        if n == IRET {
            // No PV iret for HVM: the slot is ud2.
            want[..2].copy_from_slice(&[0x0F, 0x0B]);
        } else {
            want[0] = 0xB8;
            want[1..5].copy_from_slice(&n.to_le_bytes());
            want[5..9].copy_from_slice(&[0x0F, 0x01, trap, 0xC3]);
        }
        if let Some(i) = (0..32).find(|&i| HYPERCALL_PAGE.byte(at + i) != want[i]) {
            bad = Some((n, i, HYPERCALL_PAGE.byte(at + i)));
            break;
        }
    }
    check(
        "xen-hypercall-page",
        bad.is_none(),
        format_args!("slot, byte, value: {bad:x?}"),
    );
    let x = Xen {
        amd,
        page: bad.is_none(),
    };

    let v_page = x.call(XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0]);
    let v_direct = x.direct(u64::from(XEN_VERSION), [XENVER_VERSION, 0, 0, 0, 0]);
    check(
        "xen-version-both-transports",
        v_page == i64::from(ver) && v_direct == i64::from(ver),
        format_args!("page {v_page:#x} direct {v_direct:#x} cpuid {ver:#x}"),
    );
    let mut fi = [0u32; 2];
    let r = x.call(XEN_VERSION, [XENVER_GET_FEATURES, ptr(&mut fi), 0, 0, 0]);
    let want =
        XENFEAT_AUTO_TRANSLATED_PHYSMAP | XENFEAT_HVM_CALLBACK_VECTOR | XENFEAT_HVM_SAFE_PVCLOCK;
    check(
        "xen-features",
        r == 0 && fi[1] & want == want,
        format_args!("ret {r} submap 0 {:#x}", fi[1]),
    );

    errors(x);

    // shared_info at a page of ours; vcpu_info 0 and its pvclock live inside it.
    let mut xatp = AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: SHARED_INFO.addr() >> 12,
    };
    let r = x.call(MEMORY_OP, [XENMEM_ADD_TO_PHYSMAP, ptr(&mut xatp), 0, 0, 0]);
    let wc = SHARED_INFO.word(W_WALLCLOCK) as u32;
    check(
        "xen-map-shared-info",
        r == 0 && wc.is_multiple_of(2) && wc != 0,
        format_args!("ret {r}, wallclock version {wc}"),
    );
    let mut far = AddToPhysmap {
        gpfn: 1 << 40,
        ..xatp
    };
    let r = x.call(MEMORY_OP, [XENMEM_ADD_TO_PHYSMAP, ptr(&mut far), 0, 0, 0]);
    check(
        "xen-map-shared-info-outside-ram-einval",
        r == EINVAL,
        format_args!("{r}"),
    );
    pvclock();

    let mut p = HvmParam {
        domid: DOMID_SELF,
        pad: 0,
        index: HVM_PARAM_CALLBACK_IRQ,
        value: (2 << 56) | u64::from(UPCALL_VECTOR),
    };
    arch::expect_vector(UPCALL_VECTOR, false);
    let set = x.call(HVM_OP, [HVMOP_SET_PARAM, ptr(&mut p), 0, 0, 0]);
    p.value = 0;
    let get = x.call(HVM_OP, [HVMOP_GET_PARAM, ptr(&mut p), 0, 0, 0]);
    check(
        "xen-callback-vector-param",
        set == 0 && get == 0 && p.value == (2 << 56) | u64::from(UPCALL_VECTOR),
        format_args!("set {set} get {get} value {:#x}", p.value),
    );
    timer(x);
    evtchn::loopback(x);
    grant::checks(x);
    store::checks(x);
    crate::bench::time("hypercall", || {
        x.call(XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0]);
    });
    if crate::bench::enabled() {
        evtchn::round_trip(x);
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AddToPhysmap {
    domid: u16,
    size: u16,
    space: u32,
    idx: u64,
    gpfn: u64,
}

#[repr(C)]
struct HvmParam {
    domid: u16,
    pad: u16,
    index: u32,
    value: u64,
}

/// Bad numbers answer -ENOSYS, bad pointers -EFAULT: never a fake success, never a crash.
fn errors(x: Xen) {
    let page = x.call(100, [0; 5]);
    let high = x.direct(63, [0; 5]);
    // The number is all of RAX: a valid one in the low half must not be taken for itself.
    let wide = x.direct((1 << 32) | u64::from(XEN_VERSION), [0; 5]);
    check(
        "xen-bad-hypercall-number-enosys",
        page == ENOSYS && high == ENOSYS && wide == ENOSYS,
        format_args!("page slot 100: {page}, 63: {high}, 2^32+17: {wide}"),
    );
    let hvm = x.call(HVM_OP, [999, 0, 0, 0, 0]);
    let ver = x.call(XEN_VERSION, [999, 0, 0, 0, 0]);
    let evt = x.call(EVENT_CHANNEL_OP, [999, 0, 0, 0, 0]);
    check(
        "xen-bad-subop-enosys",
        hvm == ENOSYS && ver == ENOSYS && evt == ENOSYS,
        format_args!("hvm_op {hvm}, xen_version {ver}, event_channel_op {evt}"),
    );

    // 4 GiB is past the probe's identity map, the next one is not canonical: neither
    // translates. 0xB000_0000 translates, to guest-physical memory with no RAM behind it.
    let cases = [1u64 << 32, 0x8000_0000_0000_0000];
    let mut got = [0i64; 6];
    for (i, &va) in cases.iter().enumerate() {
        got[i] = x.call(XEN_VERSION, [XENVER_GET_FEATURES, va, 0, 0, 0]);
        got[2 + i] = x.call(HVM_OP, [HVMOP_GET_PARAM, va, 0, 0, 0]);
    }
    got[4] = x.direct(
        u64::from(EVENT_CHANNEL_OP),
        [EVTCHNOP_SEND, 1 << 32, 0, 0, 0],
    );
    got[5] = x.call(XEN_VERSION, [XENVER_GET_FEATURES, 0xB000_0000, 0, 0, 0]);
    check(
        "xen-bad-pointer-efault",
        got[..5].iter().all(|&r| r == EFAULT),
        format_args!(
            "get_features, get_param at 4G / non-canonical, send at 4G: {:?}",
            &got[..5]
        ),
    );
    check(
        "xen-unbacked-pointer-efault",
        got[5] == EFAULT,
        format_args!("{}", got[5]),
    );
}

fn pvclock() {
    let (c, _, clean) = read_clock();
    check(
        "xen-pvclock-version",
        clean && c.version != 0 && c.mul != 0,
        format_args!("{c:?}"),
    );
    // The TSC rate the tuple implies, as Linux derives it: within reason for any emulator
    // (Bochs runs its TSC at 100 MHz, which rounds to just under it).
    let khz = ((1_000_000u64 << 32) / u64::from(c.mul.max(1))) as u128;
    let khz = if c.shift < 0 {
        khz << -c.shift
    } else {
        khz >> c.shift
    };
    check(
        "xen-pvclock-scale",
        (1_000..=20_000_000).contains(&khz),
        format_args!("mul {:#x} shift {} = {khz} kHz", c.mul, c.shift),
    );
    let mut last = now_ns();
    let first = last;
    let mut back = None;
    for _ in 0..2000 {
        let t = now_ns();
        if t < last {
            back = Some((last, t));
        }
        last = t;
    }
    check(
        "xen-pvclock-monotonic",
        back.is_none(),
        format_args!("went back: {back:?}"),
    );
    let t0 = arch::rdtsc();
    while arch::rdtsc() - t0 < 10_000_000 {
        core::hint::spin_loop();
    }
    let after = now_ns();
    check(
        "xen-pvclock-advances",
        after > last && after > first,
        format_args!("{first} .. {last} .. {after}"),
    );
}

/// VIRQ_TIMER bound on vCPU 0, a single-shot timer 2 ms out, and the upcall it must raise.
fn timer(x: Xen) {
    let mut bv = [VIRQ_TIMER, 0, 0];
    let r = x.call(
        EVENT_CHANNEL_OP,
        [EVTCHNOP_BIND_VIRQ, ptr(&mut bv), 0, 0, 0],
    );
    let port = bv[2];
    check(
        "xen-bind-virq-timer",
        r == 0 && port != 0,
        format_args!("ret {r} port {port}"),
    );
    if r != 0 || port == 0 {
        return;
    }
    // A deadline already passed, with "future only" asked: refused, nothing armed.
    let mut past = SingleShot {
        timeout_abs_ns: now_ns() / 2,
        flags: VCPU_SSHOTTMR_FUTURE,
    };
    let r = x.call(
        VCPU_OP,
        [VCPUOP_SET_SINGLESHOT_TIMER, 0, ptr(&mut past), 0, 0],
    );
    check(
        "xen-singleshot-past-future-flag-etime",
        r == ETIME,
        format_args!("{r}"),
    );

    let (before, _) = arch::vector_hits(UPCALL_VECTOR);
    ack_upcall();
    let deadline = now_ns() + 2_000_000;
    let mut arg = SingleShot {
        timeout_abs_ns: deadline,
        flags: 0,
    };
    let r = x.call(
        VCPU_OP,
        [VCPUOP_SET_SINGLESHOT_TIMER, 0, ptr(&mut arg), 0, 0],
    );
    let (hits, at_tsc) = arch::wait_vector(UPCALL_VECTOR, before, arch::WATCHDOG);
    let (c, _, _) = read_clock();
    let arrived = c.at(at_tsc);
    check(
        "xen-singleshot-timer-upcall",
        r == 0 && hits > before,
        format_args!("ret {r}, upcalls {before} -> {hits}"),
    );
    let sel = SHARED_INFO.word(W_VI0_SEL);
    let flag = SHARED_INFO.byte(0);
    check(
        "xen-timer-pending-bits",
        pending(port) && sel & (1 << (port / 64)) != 0 && flag == 1,
        format_args!(
            "port {port} pending {}, selector {sel:#x}, upcall_pending {flag}",
            pending(port)
        ),
    );
    check(
        "xen-timer-not-early",
        hits > before && arrived >= deadline,
        format_args!("arrived {arrived} deadline {deadline}"),
    );
    if hits > before {
        crate::say!(
            "xen timer: upcall {} us after the deadline",
            (arrived.saturating_sub(deadline)) / 1000
        );
    }
    clear_pending(port);
    ack_upcall();
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SingleShot {
    timeout_abs_ns: u64,
    flags: u32,
}
