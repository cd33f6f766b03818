//! Typing into the VMs: pCPU 0 polls COM1 for what the operator types and hands it to the VM
//! that has the console (through its face's console — Xen's PV console ring — or else its
//! emulated UART), and carries out the escape commands of [`console_keys`]. It also lets out
//! the VMs' unfinished console lines once they have been quiet a while, so a login prompt or
//! the echo of what is typed shows before its line ends, and prints what the VMs' consoles
//! have waiting (their exits only append it; see `console`).

use super::console_keys::{self, HELP, Key, Keys};
use super::create::{self, MAX_VMS, VmSlot};
use super::devices::COM1_IRQ;
use super::host::HostMachine;
use super::interrupts::DeviceCx;
use crate::arch::tsc;
use crate::println;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use virt::bus::DeviceContext;

/// How often COM1 is looked at while keys arrive or console lines wait: often enough for
/// typing and for COM1's pace, rarely enough to cost nothing.
const POLL_NS: u64 = 2_000_000;
/// ...and when all is quiet: each look wakes pCPU 0 (a VM exit if a vCPU runs there), and
/// the first key after a pause waits at most this long.
const QUIET_POLL_NS: u64 = 20_000_000;
/// How long an unfinished line must stay quiet before it is let out (between one and two of
/// these).
const QUIET_NS: u64 = 100_000_000;
/// How long one look may spend printing the VMs' console backlogs (then at least a look's
/// interval passes before the next): the time stays with this pCPU's vCPUs, and a slow COM1
/// (115200 baud: a 160-byte line is 14 ms) is written a line or so at a time.
const DRAIN_NS: u64 = 1_000_000;
/// Typed bytes waiting for room in the VM (a paste into a full ring): beyond this, reading
/// COM1 pauses and the host UART's own FIFO holds the rest.
const BACKLOG: usize = 256;

struct Input {
    keys: Keys,
    /// Who has the console (manifest index).
    focus: Option<usize>,
    backlog: heapless::Deque<u8, BACKLOG>,
    announced: bool,
    next_quiet_ns: u64,
}

static INPUT: Mutex<Input> = Mutex::new(Input {
    keys: Keys::new(),
    focus: None,
    backlog: heapless::Deque::new(),
    announced: false,
    next_quiet_ns: 0,
});
static NEXT_POLL_NS: AtomicU64 = AtomicU64::new(0);

/// Called by pCPU 0 between vCPU runs.
pub fn tick() {
    let now = tsc::now_ns();
    if now < NEXT_POLL_NS.load(Ordering::Relaxed) {
        return;
    }
    // Quiet until this look finds otherwise.
    NEXT_POLL_NS.store(now + QUIET_POLL_NS, Ordering::Relaxed);
    let mut busy = false;
    let Some(mut input) = INPUT.try_lock() else {
        return;
    };
    let running = running();
    let focus = console_keys::keep_or_next(input.focus, &running[..vm_count()]);
    if focus != input.focus || !input.announced {
        input.focus = focus;
        if let Some(f) = focus {
            announce(f, !input.announced);
            input.announced = true;
        }
        input.backlog.clear();
    }
    if input.backlog.len() < BACKLOG / 2 {
        let mut buf = [0u8; BACKLOG / 2];
        let n = crate::console::read_input(&mut buf);
        busy |= n > 0;
        for &b in &buf[..n] {
            if let Some(key) = input.keys.feed(b) {
                command(&mut input, key);
            }
        }
    }
    if let Some(vm) = input.focus.and_then(|f| create::vm(f as u8)) {
        feed(vm, &mut input.backlog);
    }
    if now >= input.next_quiet_ns {
        input.next_quiet_ns = now + QUIET_NS;
        for i in 0..vm_count() {
            if let Some(vm) = create::vm(i as u8).filter(|v| !v.stopped()) {
                let_out_quiet_lines(vm);
            }
        }
    }
    busy |= !input.backlog.is_empty();
    drop(input);
    busy |= !super::report::drain_consoles(now + DRAIN_NS);
    if busy {
        NEXT_POLL_NS.store(now + POLL_NS, Ordering::Relaxed);
    }
}

/// When [`tick`] next looks (host ns).
pub fn next_due_ns() -> u64 {
    NEXT_POLL_NS.load(Ordering::Relaxed)
}

fn vm_count() -> usize {
    create::VM_COUNT.load(Ordering::Acquire).min(MAX_VMS)
}

fn running() -> [bool; MAX_VMS] {
    core::array::from_fn(|i| create::vm(i as u8).is_some_and(|v| !v.stopped()))
}

fn name(index: usize) -> &'static str {
    create::vm(index as u8)
        .and_then(|v| v.info.get())
        .map_or("?", |i| i.name.as_str())
}

fn announce(focus: usize, first: bool) {
    if first {
        println!("janus: typing goes to vm {} ({HELP})", name(focus));
    } else {
        println!("janus: typing goes to vm {}", name(focus));
    }
}

fn command(input: &mut Input, key: Key) {
    let running = running();
    let running = &running[..vm_count()];
    match key {
        Key::Byte(b) => {
            let _ = input.backlog.push_back(b);
        }
        Key::Next => {
            deliver_backlog(input);
            input.focus = console_keys::next_running(input.focus, running);
            if let Some(f) = input.focus {
                announce(f, false);
            }
        }
        Key::Select(n) if input.focus == Some(usize::from(n)) => {}
        Key::Select(n) if running.get(usize::from(n)) == Some(&true) => {
            deliver_backlog(input);
            input.focus = Some(usize::from(n));
            announce(usize::from(n), false);
        }
        Key::Select(n) => println!("janus: no running vm {}", n + 1),
        Key::Quit => {
            println!("janus: shutting every VM down (Ctrl-] q)");
            super::shutdown::arm(0);
        }
        Key::Help => println!("janus: {HELP}"),
    }
}

/// Before the keyboard moves: what was typed for the VM that had it goes to that VM as far
/// as it has room now; the rest is dropped rather than sent to the next one.
fn deliver_backlog(input: &mut Input) {
    if let Some(vm) = input.focus.and_then(|f| create::vm(f as u8)) {
        feed(vm, &mut input.backlog);
    }
    input.backlog.clear();
}

/// Moves what the VM can take now out of `backlog`.
fn feed(vm: &VmSlot, backlog: &mut heapless::Deque<u8, BACKLOG>) {
    if backlog.is_empty() || vm.stopped() {
        return;
    }
    let mut bytes = [0u8; BACKLOG];
    let mut n = 0;
    for &b in backlog.iter() {
        bytes[n] = b;
        n += 1;
    }
    let m = &HostMachine;
    let face = super::personality::with(vm, m, |p, ram, host| {
        p.console_input(&bytes[..n], ram, host)
    })
    .flatten();
    let taken = face.unwrap_or_else(|| {
        let (taken, irq) = {
            let mut u = vm.devices.uart.0.lock();
            (u.receive(&bytes[..n]), u.irq_pending())
        };
        let mut cx = DeviceCx::new(vm, m);
        cx.set_irq(COM1_IRQ, irq);
        taken
    });
    for _ in 0..taken {
        backlog.pop_front();
    }
}

fn let_out_quiet_lines(vm: &VmSlot) {
    let (m, c) = (&HostMachine, vm.console());
    super::report::each_console(vm, |buf| {
        buf.flush_idle(&mut |piece| super::console::append_piece(m, c, piece));
    });
}
