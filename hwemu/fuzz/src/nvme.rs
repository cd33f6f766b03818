//! The NVMe controller under a hostile guest. The script's first byte may bring the
//! controller up as Linux does (admin queue, enable, two I/O queue pairs); then it runs
//! arbitrary actions: register writes of any width and offset, doorbells with any value, admin
//! and I/O commands with fuzzed fields and PRPs, completion-queue head updates, scribbles over
//! the queues and data, function resets. A panic, an inconsistent CSTS, an interrupt on a
//! vector the controller does not have, a write reaching a read-only disk, or a volume access
//! past the disk or past MDTS is a bug.

use hwemu::nvme::{BAR0_SIZE, Config, Controller, Env, MAX_TRANSFER};
use virt::block::{MemVolume, SECTOR, Volume, VolumeError};
use virt::{GuestMemory, VecMemory};

const RAM: u64 = 1 << 20;
const ASQ: u64 = 0x1000;
const ACQ: u64 = 0x2000;
const ADMIN_ENTRIES: u16 = 16;
/// I/O queue pair q: SQ at IO + q * 0x4000, its CQ 0x2000 above.
const IO: u64 = 0x10000;
const DATA: u64 = 0x40000;
const SECTORS: u64 = 512;
const MAX_OPS: usize = 256;
const CC_ON: u64 = 1 | 6 << 16 | 4 << 20;
const REGS: &[u64] = &[
    0x00, 0x08, 0x0C, 0x10, 0x14, 0x1C, 0x20, 0x24, 0x28, 0x2C, 0x30, 0x34,
];
const ADMIN_OPS: &[u8] = &[
    0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x7f,
];
const IO_OPS: &[u8] = &[0x00, 0x01, 0x02, 0x08, 0x04, 0x09, 0xff];

struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
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

    /// Guest addresses: page-aligned in the data area, inside a page, past RAM, or anything.
    fn gpa(&mut self) -> Option<u64> {
        let sel = self.u8()?;
        Some(match sel % 8 {
            0 => self.u64()?,
            1 => RAM - 0x1000 + u64::from(sel >> 3) * 0x200,
            2 | 3 => DATA + u64::from(self.u8()?) * 0x200 + u64::from(sel >> 6) * 4,
            _ => DATA + u64::from(self.u8()? % 0x80) * 0x1000,
        })
    }
}

struct Logged {
    v: MemVolume,
    bad: Option<String>,
}

impl Logged {
    fn check(&mut self, sector: u64, len: usize, write: bool) {
        if len > MAX_TRANSFER || sector + (len as u64) / SECTOR > SECTORS {
            self.bad = Some(format!("access {sector}+{len}"));
        }
        if write && self.v.read_only {
            self.bad = Some(format!("write {sector}+{len} to a read-only disk"));
        }
    }
}

impl Volume for Logged {
    fn sectors(&self) -> u64 {
        self.v.sectors()
    }
    fn read_only(&self) -> bool {
        self.v.read_only
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.check(sector, buf.len(), false);
        self.v.read(sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), VolumeError> {
        self.check(sector, buf.len(), true);
        self.v.write(sector, buf)
    }
    fn flush(&mut self) -> Result<(), VolumeError> {
        self.v.flush()
    }
}

struct FuzzEnv {
    mem: VecMemory,
    vol: Logged,
    vectors: u16,
}

impl Env for FuzzEnv {
    fn memory(&self) -> &dyn GuestMemory {
        &self.mem
    }
    fn disk(
        &mut self,
        io: &mut dyn FnMut(&mut dyn Volume) -> Result<(), VolumeError>,
    ) -> Result<(), VolumeError> {
        io(&mut self.vol)
    }
    fn interrupt(&mut self, iv: u16) {
        assert!(
            iv < self.vectors,
            "interrupt on vector {iv} of {}",
            self.vectors
        );
    }
}

/// The guest's view of one queue pair.
#[derive(Clone, Copy, Default)]
struct Ring {
    sq: u64,
    cq: u64,
    entries: u16,
    tail: u16,
    head: u16,
    phase: bool,
}

struct Guest {
    c: Controller,
    env: FuzzEnv,
    rings: [Ring; 3],
}

impl Guest {
    fn w(&mut self, off: u64, size: u8, v: u64) {
        self.c.write(off, size, v, &mut self.env);
    }

    fn submit(&mut self, q: usize, cmd: &[u8; 64]) {
        let r = &mut self.rings[q];
        if r.entries == 0 {
            return;
        }
        let _ = self.env.mem.write(r.sq + u64::from(r.tail) * 64, cmd);
        r.tail = (r.tail + 1) % r.entries;
        let tail = r.tail;
        self.w(0x1000 + 8 * q as u64, 4, u64::from(tail));
    }

    /// Takes every posted completion, then moves the head doorbell. The entries are not
    /// checked: the guest may aim a transfer at its own completion queue, so what sits there
    /// need not be the controller's (the host tests check the entries it writes).
    fn reap(&mut self, q: usize) {
        let r = &mut self.rings[q];
        if r.entries == 0 {
            return;
        }
        for _ in 0..r.entries {
            let at = r.cq + u64::from(r.head) * 16;
            let Ok(dw3) = self.env.mem.read_u32(at + 12) else {
                return;
            };
            if (dw3 >> 16 & 1 != 0) != r.phase {
                break;
            }
            r.head = (r.head + 1) % r.entries;
            if r.head == 0 {
                r.phase = !r.phase;
            }
        }
        let head = r.head;
        self.w(0x1004 + 8 * q as u64, 4, u64::from(head));
    }

    fn admin(&mut self, dw: [u32; 16]) {
        let mut cmd = [0u8; 64];
        for (b, d) in cmd.chunks_exact_mut(4).zip(dw) {
            b.copy_from_slice(&d.to_le_bytes());
        }
        self.submit(0, &cmd);
        self.reap(0);
    }

    fn bring_up(&mut self, entries: u16) {
        let n = u64::from(ADMIN_ENTRIES - 1);
        self.w(0x24, 4, n | n << 16);
        self.w(0x28, 8, ASQ);
        self.w(0x30, 8, ACQ);
        self.w(0x14, 4, CC_ON);
        self.rings = [Ring::default(); 3];
        self.rings[0] = Ring {
            sq: ASQ,
            cq: ACQ,
            entries: ADMIN_ENTRIES,
            phase: true,
            ..Ring::default()
        };
        for q in 1..3u16 {
            let sq = IO + u64::from(q) * 0x4000;
            let size = u32::from(entries - 1) << 16 | u32::from(q);
            let mut cq_cmd = [0u32; 16];
            cq_cmd[0] = 0x05;
            cq_cmd[6] = (sq + 0x2000) as u32;
            cq_cmd[10] = size;
            cq_cmd[11] = 0b11 | u32::from(q) << 16;
            self.admin(cq_cmd);
            let mut sq_cmd = [0u32; 16];
            sq_cmd[0] = 0x01;
            sq_cmd[6] = sq as u32;
            sq_cmd[10] = size;
            sq_cmd[11] = 1 | u32::from(q) << 16;
            self.admin(sq_cmd);
            self.rings[usize::from(q)] = Ring {
                sq,
                cq: sq + 0x2000,
                entries,
                phase: true,
                ..Ring::default()
            };
        }
    }

    fn check(&mut self) {
        let csts = self.c.read(0x1C, 4);
        let cc = self.c.read(0x14, 4);
        assert!(csts & 1 == 0 || cc & 1 != 0, "ready while disabled");
        assert!(csts & 3 != 3, "ready with a fatal status");
        assert!(csts >> 2 & 3 != 3, "reserved SHST");
        assert_eq!(csts >> 4, 0);
        if let Some(why) = self.env.vol.bad.take() {
            panic!("{why}");
        }
    }
}

pub fn run(data: &[u8]) {
    let mut s = Script { data };
    let Some(setup) = s.u8() else {
        return;
    };
    let mut serial = [b' '; 20];
    serial[..4].copy_from_slice(b"FUZZ");
    let cfg = Config {
        sectors: SECTORS,
        read_only: setup & 1 != 0,
        serial,
        model: [b' '; 40],
        max_io_queues: u16::from(setup >> 1 & 3),
    };
    let mut vol = MemVolume::new(SECTORS);
    vol.read_only = cfg.read_only;
    let c = Controller::new(cfg);
    let mut g = Guest {
        env: FuzzEnv {
            mem: VecMemory::new(RAM as usize),
            vol: Logged { v: vol, bad: None },
            vectors: c.vectors(),
        },
        c,
        rings: [Ring::default(); 3],
    };
    if setup & 0x80 != 0 {
        g.bring_up(2 + u16::from(setup >> 3 & 0xf));
    }
    g.check();

    for _ in 0..MAX_OPS {
        let Some(op) = s.u8() else {
            break;
        };
        let q = usize::from(op >> 4) % 3;
        match op % 10 {
            0 => {
                let (Some(sel), Some(v)) = (s.u8(), s.u64()) else {
                    break;
                };
                let off = if sel & 0x80 != 0 {
                    u64::from(sel & 0x7f)
                } else {
                    REGS[usize::from(sel) % REGS.len()]
                };
                let v = if sel & 0x40 != 0 {
                    v & 0xc001 | CC_ON
                } else {
                    v
                };
                g.w(off, [1, 2, 4, 8, 3][usize::from(op >> 4) % 5], v);
            }
            1 => {
                let (Some(off), Some(size)) = (s.u64(), s.u8()) else {
                    break;
                };
                let _ = g.c.read(off % (BAR0_SIZE + 8), size);
            }
            2 => {
                // An admin command: a known opcode, fuzzed dwords.
                let (Some(sel), Some(prp)) = (s.u8(), s.gpa()) else {
                    break;
                };
                let mut dw = [0u32; 16];
                for d in dw.iter_mut().skip(1) {
                    *d = match s.u8() {
                        Some(b) if b < 0xf0 => u32::from(b),
                        Some(_) => s.u64().unwrap_or(0) as u32,
                        None => 0,
                    };
                }
                dw[0] = u32::from(ADMIN_OPS[usize::from(sel) % ADMIN_OPS.len()])
                    | if sel & 0x80 != 0 {
                        u32::from(sel) << 8 & 0xc300
                    } else {
                        0
                    };
                dw[6] = prp as u32;
                dw[7] = (prp >> 32) as u32;
                dw[10] |= u32::from(s.u8().unwrap_or(0) % 8) << 16;
                g.admin(dw);
            }
            3 | 4 => {
                let (Some(sel), Some(lba), Some(n), Some(p1), Some(p2)) =
                    (s.u8(), s.u8(), s.u8(), s.gpa(), s.gpa())
                else {
                    break;
                };
                let mut dw = [0u32; 16];
                dw[0] = u32::from(IO_OPS[usize::from(sel) % IO_OPS.len()])
                    | if sel & 0x80 != 0 {
                        u32::from(sel) << 8 & 0xc300
                    } else {
                        0
                    };
                dw[1] = [1, 1, 1, 0, 2, u32::MAX][usize::from(sel >> 3) % 6];
                dw[6] = p1 as u32;
                dw[7] = (p1 >> 32) as u32;
                dw[8] = p2 as u32;
                dw[9] = (p2 >> 32) as u32;
                dw[10] = u32::from(lba) * 2;
                dw[12] = if n & 0x80 != 0 {
                    u32::from(n) << 2
                } else {
                    u32::from(n & 0xf)
                } | u32::from(sel >> 6 & 1) << 30;
                let mut cmd = [0u8; 64];
                for (b, d) in cmd.chunks_exact_mut(4).zip(dw) {
                    b.copy_from_slice(&d.to_le_bytes());
                }
                g.submit(1 + q % 2, &cmd);
            }
            5 => g.reap(q),
            6 => {
                let (Some(which), Some(v)) = (s.u8(), s.u64()) else {
                    break;
                };
                g.w(0x1000 + u64::from(which) * 4, 4, v % 0x1_0000_0010);
            }
            7 | 8 => {
                // Scribbles: queue entries, list pages, anything.
                let (Some(at), Some(v)) = (s.gpa(), s.u64()) else {
                    break;
                };
                let at = if op & 0x80 != 0 {
                    IO + at % 0x10000
                } else {
                    at
                };
                let _ = g.env.mem.write_u64(at, v);
            }
            _ => {
                if op & 0xf0 == 0xf0 {
                    g.c.reset();
                    g.rings = [Ring::default(); 3];
                } else if op & 0x80 != 0 {
                    g.bring_up(2 + u16::from(op >> 4 & 7));
                } else {
                    let _ = g.c.intx_asserted();
                }
            }
        }
        g.check();
    }
    assert_eq!(g.env.vol.v.sectors(), SECTORS);
    if g.env.vol.v.read_only {
        assert!(
            g.env.vol.v.data.iter().all(|&b| b == 0),
            "a read-only disk changed"
        );
    }
}
