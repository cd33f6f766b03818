//! Hypercall decoding (the 64-bit input value, register conventions, parameter GPAs) and the
//! calls this personality implements.

use crate::HyperV;
use crate::status::{HvStatus, output};
use virt::personality::{Action, Host, VcpuView};
use virt::{Event, GuestMemory, GuestRegs, bits};

/// Call codes.
pub mod code {
    pub const NOTIFY_LONG_SPIN_WAIT: u16 = 0x0008;
    pub const SEND_SYNTHETIC_CLUSTER_IPI: u16 = 0x000B;
    pub const SEND_SYNTHETIC_CLUSTER_IPI_EX: u16 = 0x0015;
    pub const POST_MESSAGE: u16 = 0x005C;
    pub const SIGNAL_EVENT: u16 = 0x005D;
}

/// The input value's fields.
pub mod input {
    pub const CODE: u64 = 0xffff;
    pub const FAST: u64 = 1 << 16;
    pub const VARHEAD_SHIFT: u32 = 17;
    pub const VARHEAD: u64 = 0x3ff << VARHEAD_SHIFT;
    pub const REP_COUNT_SHIFT: u32 = 32;
    pub const REP_COUNT: u64 = 0xfff << REP_COUNT_SHIFT;
    pub const REP_START_SHIFT: u32 = 48;
    pub const REP_START: u64 = 0xfff << REP_START_SHIFT;
    /// 31:27 (27 is "nested" in newer TLFS, which is not offered), 47:44 and 63:60.
    pub const RESERVED: u64 = (0x1f << 27) | (0xf << 44) | (0xf << 60);
}

const PAGE_SIZE: u64 = 4096;
/// HvPostMessage input: `{ u32 connection_id, u32 reserved, u32 message_type, u32 size }`
/// and the payload.
const POST_MESSAGE_HEADER: u64 = 16;

/// A decoded input value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    pub code: u16,
    pub fast: bool,
    /// Variable header size in 8-byte units.
    pub varhead: u16,
    pub rep_count: u16,
    pub rep_start: u16,
}

impl Control {
    pub fn decode(raw: u64) -> Result<Control, HvStatus> {
        if raw & input::RESERVED != 0 {
            return Err(HvStatus::InvalidHypercallInput);
        }
        Ok(Control {
            code: (raw & input::CODE) as u16,
            fast: raw & input::FAST != 0,
            varhead: ((raw & input::VARHEAD) >> input::VARHEAD_SHIFT) as u16,
            rep_count: ((raw & input::REP_COUNT) >> input::REP_COUNT_SHIFT) as u16,
            rep_start: ((raw & input::REP_START) >> input::REP_START_SHIFT) as u16,
        })
    }

    pub fn encode(&self) -> u64 {
        u64::from(self.code)
            | if self.fast { input::FAST } else { 0 }
            | (u64::from(self.varhead & 0x3ff) << input::VARHEAD_SHIFT)
            | (u64::from(self.rep_count & 0xfff) << input::REP_COUNT_SHIFT)
            | (u64::from(self.rep_start & 0xfff) << input::REP_START_SHIFT)
    }
}

/// How a call may be issued.
#[derive(Clone, Copy)]
struct Form {
    rep: bool,
    fast: bool,
    memory: bool,
    varhead: bool,
}

const SIMPLE_FAST_OR_MEMORY: Form = Form {
    rep: false,
    fast: true,
    memory: true,
    varhead: false,
};
/// Memory only: fast input past two registers needs XMM input, which is not offered.
const SIMPLE_MEMORY_VARHEAD: Form = Form {
    rep: false,
    fast: false,
    memory: true,
    varhead: true,
};

/// HvPostMessage's 256-byte input does not fit in registers.
const SIMPLE_MEMORY: Form = Form {
    rep: false,
    fast: false,
    memory: true,
    varhead: false,
};

fn form(code: u16) -> Option<Form> {
    match code {
        code::NOTIFY_LONG_SPIN_WAIT | code::SEND_SYNTHETIC_CLUSTER_IPI | code::SIGNAL_EVENT => {
            Some(SIMPLE_FAST_OR_MEMORY)
        }
        code::POST_MESSAGE => Some(SIMPLE_MEMORY),
        code::SEND_SYNTHETIC_CLUSTER_IPI_EX => Some(SIMPLE_MEMORY_VARHEAD),
        _ => None,
    }
}

/// The rep count and start must describe the call's class: none for a simple call, and a
/// start inside the list for a rep call.
fn check_form(c: &Control, f: Form) -> Result<(), HvStatus> {
    let reps_ok = if f.rep {
        c.rep_count != 0 && c.rep_start < c.rep_count
    } else {
        c.rep_count == 0 && c.rep_start == 0
    };
    let conv_ok = if c.fast { f.fast } else { f.memory };
    if !reps_ok || !conv_ok || (c.varhead != 0 && !f.varhead) {
        return Err(HvStatus::InvalidHypercallInput);
    }
    Ok(())
}

/// A parameter block at `gpa` of `len` bytes: 8-byte aligned, within one page and within
/// guest RAM. The TLFS files all three failures under INVALID_ALIGNMENT.
pub fn check_block(mem: &dyn GuestMemory, gpa: u64, len: u64) -> Result<(), HvStatus> {
    if !gpa.is_multiple_of(8) || (gpa % PAGE_SIZE).saturating_add(len) > PAGE_SIZE {
        return Err(HvStatus::InvalidAlignment);
    }
    let len = usize::try_from(len).map_err(|_| HvStatus::InvalidAlignment)?;
    virt::check_range(mem.size(), gpa, len).map_err(|_| HvStatus::InvalidAlignment)?;
    Ok(())
}

fn read_u64(mem: &dyn GuestMemory, gpa: u64) -> Result<u64, HvStatus> {
    mem.read_u64(gpa).map_err(|_| HvStatus::InvalidAlignment)
}

/// The registers of one call, per the caller's mode (TLFS: 64-bit when EFER.LMA and CS.L).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args {
    pub control: u64,
    /// Input GPA, or the first input qword of a fast call.
    pub input: u64,
    /// Output GPA, or the second input qword of a fast call.
    pub output: u64,
}

fn join(hi: u64, lo: u64) -> u64 {
    (hi << 32) | (lo & 0xffff_ffff)
}

impl Args {
    pub fn from_regs(regs: &GuestRegs, long_mode: bool) -> Args {
        if long_mode {
            Args {
                control: regs.rcx,
                input: regs.rdx,
                output: regs.r8,
            }
        } else {
            Args {
                control: join(regs.rdx, regs.rax),
                input: join(regs.rbx, regs.rcx),
                output: join(regs.rdi, regs.rsi),
            }
        }
    }
}

/// Only RAX (EDX:EAX in 32-bit mode) changes: the TLFS promises every other register is
/// preserved, and guests rely on it.
pub fn set_result(regs: &mut GuestRegs, long_mode: bool, value: u64) {
    if long_mode {
        regs.rax = value;
    } else {
        regs.rax = value & 0xffff_ffff;
        regs.rdx = value >> 32;
    }
}

/// What a call produced beyond its status.
enum Then {
    Resume,
    Yield,
    /// Not finished: the guest executes the call again (no status is written).
    Continue,
}

impl HyperV {
    pub(crate) fn hypercall_exit(
        &mut self,
        vcpu: &VcpuView,
        regs: &mut GuestRegs,
        mem: &dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Action {
        // Hypercalls exist only from kernel mode in protected mode, and only once the guest
        // has enabled the interface; elsewhere the instruction is undefined, as on hardware.
        if vcpu.cpl != 0 || vcpu.ctl.cr0 & bits::CR0_PE == 0 || !self.hypercalls_enabled() {
            return Action::Fault(Event::UD);
        }
        let args = Args::from_regs(regs, vcpu.long_mode);
        let (status, then) = match self.dispatch(vcpu.index, &args, mem, host) {
            Ok(then) => (HvStatus::Success, then),
            Err(s) => (s, Then::Resume),
        };
        if matches!(then, Then::Continue) {
            return Action::Retry;
        }
        // No rep call is implemented, so "reps completed" is always 0.
        set_result(regs, vcpu.long_mode, output(status, 0));
        match then {
            Then::Resume | Then::Continue => Action::Done,
            Then::Yield => Action::Yield,
        }
    }

    fn dispatch(
        &mut self,
        _vp: u32,
        args: &Args,
        mem: &dyn GuestMemory,
        host: &mut dyn Host,
    ) -> Result<Then, HvStatus> {
        let c = Control::decode(args.control)?;
        let Some(f) = form(c.code) else {
            self.counters.unknown_hypercall(c.code);
            return Err(HvStatus::InvalidHypercallCode);
        };
        check_form(&c, f)?;
        match c.code {
            code::NOTIFY_LONG_SPIN_WAIT => {
                if !c.fast {
                    check_block(mem, args.input, 8)?;
                }
                // Advisory: the spinning VP gives its time to the lock holder.
                Ok(Then::Yield)
            }
            code::SEND_SYNTHETIC_CLUSTER_IPI => {
                let (head, mask) = if c.fast {
                    (args.input, args.output)
                } else {
                    check_block(mem, args.input, 16)?;
                    (read_u64(mem, args.input)?, read_u64(mem, args.input + 8)?)
                };
                let vector = ipi_vector(head)?;
                self.send_ipi(vector, mask, host);
                Ok(Then::Resume)
            }
            code::SEND_SYNTHETIC_CLUSTER_IPI_EX => {
                let banks = u64::from(c.varhead);
                check_block(mem, args.input, 24 + 8 * banks)?;
                let vector = ipi_vector(read_u64(mem, args.input)?)?;
                let format = read_u64(mem, args.input + 8)?;
                let valid = read_u64(mem, args.input + 16)?;
                let mask = match format {
                    VPSET_SPARSE_4K => {
                        if u64::from(valid.count_ones()) != banks {
                            return Err(HvStatus::InvalidHypercallInput);
                        }
                        // Bank 0 (VPs 0..63) comes first when present; higher banks name
                        // VPs this partition cannot have.
                        if valid & 1 != 0 {
                            read_u64(mem, args.input + 24)?
                        } else {
                            0
                        }
                    }
                    VPSET_ALL => u64::MAX,
                    _ => return Err(HvStatus::InvalidParameter),
                };
                self.send_ipi(vector, mask, host);
                Ok(Then::Resume)
            }
            code::POST_MESSAGE => {
                check_block(mem, args.input, POST_MESSAGE_HEADER)?;
                let connection = read_u64(mem, args.input)? as u32;
                let head = read_u64(mem, args.input + 8)?;
                let (kind, size) = (head as u32, (head >> 32) as usize);
                // Types with the top bit are the hypervisor's own.
                if kind == 0 || kind & 0x8000_0000 != 0 || size > crate::synic::MESSAGE_PAYLOAD_MAX
                {
                    return Err(HvStatus::InvalidParameter);
                }
                check_block(mem, args.input, POST_MESSAGE_HEADER + size as u64)?;
                let mut payload = [0u8; crate::synic::MESSAGE_PAYLOAD_MAX];
                mem.read(args.input + POST_MESSAGE_HEADER, &mut payload[..size])
                    .map_err(|_| HvStatus::InvalidAlignment)?;
                self.vmbus.post(connection, &payload[..size], mem.size())?;
                self.vmbus.after_post(mem);
                self.deliver_vmbus(mem, host);
                self.signal_channels(mem, host);
                Ok(Then::Resume)
            }
            code::SIGNAL_EVENT => {
                let input = if c.fast {
                    args.input
                } else {
                    check_block(mem, args.input, 8)?;
                    read_u64(mem, args.input)?
                };
                let relid = self
                    .vmbus
                    .by_connection(input as u32)
                    .ok_or(HvStatus::InvalidConnectionId)?;
                // Each channel's connection has one event flag.
                if input >> 32 != 0 {
                    return Err(HvStatus::InvalidParameter);
                }
                let served = self.vmbus.serve(relid, mem, host);
                if let Some(vp) = served.signal {
                    self.signal_channel(vp, relid, mem, host);
                }
                self.signal_channels(mem, host);
                Ok(if served.more {
                    Then::Continue
                } else {
                    Then::Resume
                })
            }
            _ => {
                self.counters.unknown_hypercall(c.code);
                Err(HvStatus::InvalidHypercallCode)
            }
        }
    }

    /// Delivered as fixed interrupts through each target's virtual APIC; VP indices that do
    /// not exist are ignored, as a mask built from "all CPUs" may name them.
    fn send_ipi(&mut self, vector: u8, mask: u64, host: &mut dyn Host) {
        for vp in 0..self.vcpus.min(64) {
            if mask & (1 << vp) != 0 {
                host.raise_vector(vp, vector, true);
            }
        }
    }
}

/// `hv_vpset.format`.
const VPSET_SPARSE_4K: u64 = 0;
const VPSET_ALL: u64 = 1;

/// `{u32 vector; u8 target_vtl; u8 reserved[3]}`: only VTL 0 exists here, and vectors below
/// 0x10 are exceptions, which an IPI must not be able to raise.
fn ipi_vector(head: u64) -> Result<u8, HvStatus> {
    let vector = head & 0xffff_ffff;
    let vtl = (head >> 32) & 0xff;
    if !(0x10..=0xff).contains(&vector) || vtl != 0 {
        return Err(HvStatus::InvalidParameter);
    }
    Ok(vector as u8)
}
