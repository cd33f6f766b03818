//! The fuzz body shared by the cargo-fuzz target and the stable, seeded test in
//! `abi-xen/tests/fuzz_stable.rs`. The input is a script of guest and host actions (hypercalls
//! with chosen or arbitrary numbers, commands and pointers in both register conventions,
//! argument scribbles, hypercall-MSR writes, CPUID, port I/O, time passing, host timers firing,
//! backend notifications) run against one 3-vCPU domain whose page tables the script may also
//! corrupt. A panic, a RAX that is neither success nor a Xen errno, a fault from a hypercall,
//! an interrupt on an exception vector, or a timer, kick or interrupt for a vCPU that does not
//! exist is a bug.

use abi_xen::{Config, HypercallInsn, Xen, is_valid_return};
use virt::personality::{Action, Personality, VcpuView};
use virt::testing::FakeHost;
use virt::{ControlRegs, GuestMemory, GuestRegs, VecMemory, bits};

/// Small, so random frame numbers often land inside and often do not.
const RAM: u64 = 64 * 4096;
const VCPUS: u32 = 3;
const MAX_OPS: usize = 256;
/// Page tables at 0x1000..0x4000 map virtual [0, 2 MiB) onto physical [0, 2 MiB) with one
/// large page: pointers past RAM translate but then fail the memory access.
const PT: u64 = 0x1000;

const OPS: &[u64] = &[12, 15, 17, 18, 20, 21, 24, 29, 32, 33, 34, 23, 7, 0, 63, 64];

struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }

    /// Up to 8 bytes, little-endian; a short tail is zero-extended.
    fn u64(&mut self) -> Option<u64> {
        let n = self.data.len().min(8);
        if n == 0 {
            return None;
        }
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Some(u64::from_le_bytes(b))
    }

    /// Arguments: guest pointers (in RAM, just past it, unmapped), small numbers, anything.
    fn arg(&mut self) -> Option<u64> {
        let sel = self.u8()?;
        Some(match sel % 6 {
            0 => self.u64()?,
            1 | 2 => 0x4000 + (u64::from(self.u8()?) << 6) % (RAM - 0x4000),
            3 => u64::from(self.u8()? % 16),
            4 => RAM - 8 + u64::from(self.u8()? % 16),
            _ => 0xffff_8000_0000_0000 | u64::from(self.u8()?) << 12,
        })
    }
}

fn view(index: u32, cpl: u8, long_mode: bool, paging: bool) -> VcpuView {
    VcpuView {
        index,
        cpl,
        ctl: ControlRegs {
            cr0: bits::CR0_PE | if paging { bits::CR0_PG } else { 0 },
            cr3: PT,
            cr4: if paging { bits::CR4_PAE } else { 0 },
            efer: if long_mode {
                bits::EFER_LME | bits::EFER_LMA
            } else {
                0
            },
            ..Default::default()
        },
        long_mode,
    }
}

/// Where structured calls put their argument blocks (identity-mapped).
const ARGS: u64 = 0x8000;

/// A well-formed call of the kinds Linux makes, with small script-chosen values, so runs get
/// past argument validation into the state machine.
fn structured(s: &mut Script<'_>, mem: &VecMemory) -> Option<(u64, [u64; 3])> {
    let kind = s.u8()?;
    let small = |s: &mut Script<'_>| s.u8().map(|b| u32::from(b % 12));
    let put = |off: u64, v: &[u8]| {
        let _ = mem.write(ARGS + off, v);
    };
    Some(match kind % 12 {
        0 => {
            // XENMEM_add_to_physmap(shared_info) at a frame in RAM.
            put(0, &0x7ff0u16.to_le_bytes());
            put(4, &0u32.to_le_bytes());
            put(8, &0u64.to_le_bytes());
            put(16, &u64::from(0x10 + s.u8()? % 8).to_le_bytes());
            (12, [7, ARGS, 0])
        }
        1 => {
            put(0, &small(s)?.to_le_bytes());
            put(4, &small(s)?.to_le_bytes());
            (32, [1, ARGS, 0])
        }
        2 => {
            put(0, &small(s)?.to_le_bytes());
            (32, [7, ARGS, 0])
        }
        3 => {
            put(0, &small(s)?.to_le_bytes());
            (32, [[4, 9, 3, 8][usize::from(kind >> 4) % 4], ARGS, 0])
        }
        4 => {
            put(0, &0x7ff0u16.to_le_bytes());
            put(2, &[0x7ff0u16, 0][usize::from(kind >> 4) % 2].to_le_bytes());
            (32, [6, ARGS, 0])
        }
        5 => {
            put(0, &0x7ff0u16.to_le_bytes());
            put(4, &small(s)?.to_le_bytes());
            (32, [[0, 5][usize::from(kind >> 4) % 2], ARGS, 0])
        }
        6 => {
            put(0, &0x7ff0u16.to_le_bytes());
            put(
                4,
                &[0u32, 1, 2, 17, 18][usize::from(kind >> 4) % 5].to_le_bytes(),
            );
            put(8, &((2u64 << 56) | u64::from(s.u8()?)).to_le_bytes());
            (34, [u64::from(kind >> 7), ARGS, 0])
        }
        7 => {
            put(0, &u64::from(0x10 + s.u8()? % 8).to_le_bytes());
            put(8, &(u32::from(s.u8()?) << 3).to_le_bytes());
            (24, [10, u64::from(small(s)? % 4), ARGS])
        }
        8 => {
            put(0, &(u64::from(s.u8()?) << 16).to_le_bytes());
            put(8, &u32::from(kind >> 7).to_le_bytes());
            (
                24,
                [
                    [8, 9, 6, 7][usize::from(kind >> 4) % 4],
                    u64::from(small(s)? % 4),
                    ARGS,
                ],
            )
        }
        9 => {
            put(0, &(ARGS + 0x100).to_le_bytes());
            put(8, &(small(s)? % 6).to_le_bytes());
            put(16, &(u64::from(s.u8()?) << 16).to_le_bytes());
            for i in 0..6 {
                put(0x100 + i * 4, &small(s)?.to_le_bytes());
            }
            (29, [3, ARGS, 0])
        }
        10 => {
            put(0, &(ARGS + 0x200 + u64::from(s.u8()?) * 8).to_le_bytes());
            (
                24,
                [
                    [5, 13][usize::from(kind >> 4) % 2],
                    u64::from(small(s)? % 4),
                    ARGS,
                ],
            )
        }
        _ => {
            put(0, &[0u8; 4]);
            (17, [6, ARGS, 0])
        }
    })
}

fn setup(mem: &VecMemory) {
    let ok = mem.write_u64(PT, (PT + 0x1000) | 3).is_ok()
        && mem.write_u64(PT + 0x1000, (PT + 0x2000) | 3).is_ok()
        && mem.write_u64(PT + 0x2000, 0x83).is_ok();
    assert!(ok);
}

pub fn run(data: &[u8]) {
    let mut s = Script { data };
    let Some(flags) = s.u8() else {
        return;
    };
    let mut cfg = Config::new(if flags & 1 == 0 {
        HypercallInsn::Vmcall
    } else {
        HypercallInsn::Vmmcall
    });
    // Ring pages sometimes inside RAM, sometimes not.
    cfg.console_pfn = (flags & 2 != 0).then_some(u64::from(flags >> 2) & 0x7f);
    cfg.store_pfn = (flags & 4 != 0).then_some(0x3e);
    cfg.advertise_upcall_vector = flags & 8 != 0;
    let mut xen = Xen::new(cfg);
    let mut mem = VecMemory::new(RAM as usize);
    setup(&mem);
    let mut host = FakeHost::new(VCPUS);
    host.ns = 1_000_000;
    host.tsc_hz = [1, 1_000_000_000, 2_400_000_000, u64::MAX][usize::from(flags >> 6)];

    for _ in 0..MAX_OPS {
        let Some(sel) = s.u8() else {
            break;
        };
        let vcpu = u32::from(sel >> 4) % (VCPUS + 1);
        match sel % 14 {
            0..=3 => {
                let Some(opsel) = s.u8() else { break };
                let op = match OPS.get(usize::from(opsel) % 20) {
                    Some(&o) => o,
                    None => s.u64().unwrap_or(0),
                };
                let cmd = match s.u8() {
                    Some(c) if c < 0xf0 => u64::from(c % 26),
                    Some(_) => s.u64().unwrap_or(0),
                    None => break,
                };
                let mut a = [cmd, 0, 0, 0, 0];
                for slot in a.iter_mut().skip(1) {
                    *slot = s.arg().unwrap_or(0);
                }
                let long = sel & 0x40 == 0;
                let paging = sel & 0x20 == 0;
                let cpl = if sel & 0x80 != 0 && sel & 0x10 != 0 {
                    3
                } else {
                    0
                };
                let mut r = if long {
                    GuestRegs {
                        rax: op,
                        rdi: a[0],
                        rsi: a[1],
                        rdx: a[2],
                        r10: a[3],
                        r8: a[4],
                        ..Default::default()
                    }
                } else {
                    GuestRegs {
                        rax: op,
                        rbx: a[0],
                        rcx: a[1],
                        rdx: a[2],
                        rsi: a[3],
                        rdi: a[4],
                        ..Default::default()
                    }
                };
                let v = view(vcpu, cpl, long, paging);
                let act = xen.hypercall(&v, &mut r, &mut mem, &mut host);
                match act {
                    Action::Retry => assert_eq!(r.rax, op, "a continuation keeps the op"),
                    Action::Done => {
                        let rax = if long {
                            r.rax
                        } else {
                            r.rax as u32 as i32 as i64 as u64
                        };
                        assert!(is_valid_return(rax), "op {op} cmd {cmd}: {:#x}", r.rax);
                    }
                    Action::Block | Action::Yield | Action::Stop(_) => {
                        assert_eq!(r.rax, 0, "op {op}")
                    }
                    other => panic!("hypercall answered {other:?}"),
                }
            }
            4 => {
                // Argument scribble: small numbers (ports, vCPUs, VIRQs) or raw bytes.
                let Some(off) = s.u8() else { break };
                let at = 0x4000 + (u64::from(off) << 6) % (RAM - 0x4000);
                for i in 0..8u64 {
                    let Some(v) = s.u32() else { break };
                    let v = if sel & 0x40 != 0 { v % 40 } else { v };
                    let _ = mem.write_u32(at + i * 4, v);
                }
            }
            5 => {
                // Corrupt anything, page tables and shared pages included.
                let at = s.u64().unwrap_or(0) % RAM;
                let v = s.u64().unwrap_or(0);
                let _ = mem.write_u64(at & !7, v);
            }
            6 => {
                let msr = if sel & 0x40 == 0 {
                    0x4000_0000
                } else {
                    s.u32().unwrap_or(0)
                };
                let value = match s.u8() {
                    Some(b) if b < 0xc0 => u64::from(b) << 12,
                    Some(_) => s.u64().unwrap_or(0),
                    None => break,
                };
                let v = view(vcpu, 0, true, true);
                match xen.wrmsr(&v, msr, value, &mut mem, &mut host) {
                    Action::Done | Action::NotMine | Action::Fault(virt::Event::GP0) => {}
                    other => panic!("wrmsr {msr:#x}={value:#x}: {other:?}"),
                }
                let mut read = 0;
                let _ = xen.rdmsr(&v, msr, &mut read, &mut mem, &mut host);
            }
            7 => {
                let leaf = 0x4000_0000 | (s.u32().unwrap_or(0) & 0x3ff);
                let v = view(vcpu, 0, true, true);
                let _ = xen.cpuid(&v, leaf, 0);
            }
            8 => {
                let port = if sel & 0x40 == 0 {
                    0xE9
                } else {
                    s.u32().unwrap_or(0) as u16
                };
                let mut d = s.u32().unwrap_or(0);
                let v = view(vcpu, 0, true, true);
                let a = xen.io(&v, port, 1, sel & 0x20 == 0, &mut d, &mut host);
                assert!(matches!(a, Action::Done | Action::NotMine));
            }
            9 => {
                host.ns = host
                    .ns
                    .saturating_add(u64::from(s.u32().unwrap_or(0)) << (sel >> 5));
                if vcpu < VCPUS {
                    xen.timer_expired(vcpu, &mut mem, &mut host);
                }
            }
            10 => {
                let _ = xen.has_pending_work(vcpu, &mem);
                let up = s.u8().unwrap_or(0);
                host.up =
                    (up & 0x80 != 0).then(|| (0..VCPUS).map(|v| up & (1 << v) != 0).collect());
            }
            12 | 13 => {
                let Some((op, a)) = structured(&mut s, &mem) else {
                    break;
                };
                let mut r = GuestRegs {
                    rax: op,
                    rdi: a[0],
                    rsi: a[1],
                    rdx: a[2],
                    ..Default::default()
                };
                let v = view(vcpu, 0, true, true);
                let act = xen.hypercall(&v, &mut r, &mut mem, &mut host);
                if act == Action::Done {
                    assert!(is_valid_return(r.rax), "op {op} {a:?}: {:#x}", r.rax);
                }
            }
            _ => {
                let port = s.u32().unwrap_or(0) % 1100;
                let _ = xen.backend_bind(port);
                let _ = xen.notify_guest(port, &mem, &mut host);
                while xen.take_backend_kick().is_some() {}
                while xen.take_unimplemented().is_some() {}
            }
        }
    }
    xen.flush_console(&mut host);
}
