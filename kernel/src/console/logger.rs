//! The defmt global logger: rzCOBS frames on COM2, decoded on the host by xtask against the
//! exact ELF that runs. Frames are written with interrupts masked so an interrupt handler's
//! log line cannot interleave with the one it interrupted.
#![expect(unsafe_code)]
// UNSAFETY: defmt's Logger trait is unsafe; the encoder state lives in a static guarded by
// the TAKEN flag.

use boot::serial::HostSerial;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

struct State {
    serial: Option<HostSerial>,
    encoder: defmt::Encoder,
    restore_interrupts: bool,
}

struct Guarded(UnsafeCell<State>);
// SAFETY: only the holder of TAKEN touches the state.
unsafe impl Sync for Guarded {}

static TAKEN: AtomicBool = AtomicBool::new(false);
static STATE: Guarded = Guarded(UnsafeCell::new(State {
    serial: None,
    encoder: defmt::Encoder::new(),
    restore_interrupts: false,
}));

pub fn init(serial: HostSerial) {
    crate::arch::cpu::without_interrupts(|| {
        acquire_flag();
        // SAFETY: TAKEN is held.
        unsafe { (*STATE.0.get()).serial = Some(serial) };
        TAKEN.store(false, Ordering::Release);
    });
}

fn acquire_flag() {
    while TAKEN
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
}

#[defmt::global_logger]
struct Com2Logger;

// SAFETY: acquire/release bracket every frame; the flag excludes other CPUs and interrupts
// are masked in between, so no second frame can start on this CPU.
unsafe impl defmt::Logger for Com2Logger {
    fn acquire() {
        let was_enabled = crate::arch::cpu::interrupts_enabled();
        crate::arch::cpu::disable_interrupts();
        acquire_flag();
        // SAFETY: TAKEN is held.
        let state = unsafe { &mut *STATE.0.get() };
        state.restore_interrupts = was_enabled;
        let State {
            serial, encoder, ..
        } = state;
        encoder.start_frame(|b| emit_to(serial, b));
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: called by defmt after acquire, so TAKEN is held.
        let state = unsafe { &mut *STATE.0.get() };
        let State {
            serial,
            encoder,
            restore_interrupts,
        } = state;
        encoder.end_frame(|b| emit_to(serial, b));
        let restore = *restore_interrupts;
        TAKEN.store(false, Ordering::Release);
        if restore {
            crate::arch::cpu::enable_interrupts();
        }
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: called by defmt between acquire and release.
        let state = unsafe { &mut *STATE.0.get() };
        let State {
            serial, encoder, ..
        } = state;
        encoder.write(bytes, |b| emit_to(serial, b));
    }
}

fn emit_to(serial: &Option<HostSerial>, bytes: &[u8]) {
    if let Some(serial) = serial.as_ref() {
        for &b in bytes {
            serial.write_byte(b);
        }
    }
}

// No `defmt::timestamp!`: it plants a pointer in the non-loaded .defmt section, and in a
// position-independent image the linker turns that into a dynamic relocation aimed at
// address 8 — inside .text once loaded. xtask stamps frames on arrival instead.
