//! A guest-physical access the nested tables refused: device memory claimed on the VM's bus
//! is emulated; anything else outside RAM behaves as on a real board with nothing at that
//! address — reads return all ones, writes are dropped. Both come from the decoded
//! instruction, so no mapping is created per address the guest probes.

use super::Machine;
use super::interrupts::DeviceCx;
use super::state::{VcpuState, Vm};
use vcpu::Vcpu;
use virt::mmio::{self, Access, CodeSize};
use virt::{Action, NestedFault, SegReg, StopReason};

pub fn emulate<C, V: Vcpu>(
    vm: &Vm<C>,
    index: u8,
    st: &mut VcpuState<V>,
    m: &dyn Machine,
    f: NestedFault,
) -> Action {
    let unsupported = |what, detail| {
        Action::Stop(StopReason::Unsupported {
            vcpu: index,
            what,
            detail,
        })
    };
    let ram = vm.info.get().map_or(0, |i| i.ram.size);
    if f.gpa < ram {
        // RAM is mapped RWX a chunk at a time, on first use; a fault in a mapped chunk is a
        // nested-table bug.
        return match super::ram::populate(vm, m, f.gpa) {
            super::ram::Populate::Mapped => Action::Retry,
            // Another vCPU can map the chunk between this vCPU's fault and its handling here
            // (both touched it first at once): enter again, once per chunk, with the nested
            // TLB flushed. A second fault on the same mapped chunk is a nested-table bug.
            super::ram::Populate::AlreadyMapped => {
                let chunk = virt::ram_chunks::RamChunks::index(f.gpa);
                if st.ram_race.replace(chunk) == Some(chunk) {
                    unsupported("nested fault inside guest RAM", f.gpa)
                } else {
                    st.ram_races = st.ram_races.saturating_add(1);
                    st.vcpu.flush_nested_tlb();
                    Action::Retry
                }
            }
            super::ram::Populate::Failed => unsupported("no host memory to map guest RAM", f.gpa),
        };
    }
    // Only a data access by the instruction at RIP can be emulated from its decoding: a
    // fault in the guest's own page walk, an instruction fetch, or the delivery of an event
    // would make us emulate the wrong thing.
    if f.during_walk || f.exec || st.vcpu.event_pending() {
        let what = if f.exec {
            "instruction fetch from unbacked memory"
        } else if f.during_walk {
            "guest page tables in unbacked memory"
        } else {
            "event delivery through unbacked memory"
        };
        return unsupported(what, f.gpa);
    }
    let ctl = st.vcpu.control_regs();
    let cs = st.vcpu.segment(SegReg::Cs);
    let rip = st.vcpu.regs().rip;
    let cpl = st.vcpu.cpl();
    let (bytes, n, long) = virt::insn_len::fetch(st.vcpu.memory(), &ctl, &cs, rip, cpl);
    let mode = if long {
        CodeSize::Bits64
    } else if cs.default_big() {
        CodeSize::Bits32
    } else {
        CodeSize::Bits16
    };
    let Some(insn) = mmio::decode(&bytes[..n], mode) else {
        return unsupported(
            "unemulated instruction touching device or unbacked memory",
            f.gpa,
        );
    };
    // The vCPU's own APIC page comes first: it is per vCPU, and moves with IA32_APIC_BASE.
    let own_apic = st.lapic.mmio_page().filter(|&p| f.gpa & !0xFFF == p);
    if own_apic.is_some() {
        let off = f.gpa & 0xFFF;
        let now = m.tsc();
        let regs = st.vcpu.regs_mut();
        match insn.access {
            Access::Load {
                reg,
                high_byte,
                dest_size,
            } => {
                let value = st.lapic.mmio_read(off, insn.size, now);
                let old = regs.gpr(reg).unwrap_or(0);
                regs.set_gpr(reg, mmio::merge_load(old, value, dest_size, high_byte));
            }
            Access::StoreReg { reg, high_byte } => {
                let value = mmio::store_value(regs.gpr(reg).unwrap_or(0), insn.size, high_byte);
                let effect = st.lapic.mmio_write(off, insn.size, value, now);
                super::interrupts::apic_written(vm, m, index, &st.lapic, effect);
            }
            Access::StoreImm(value) => {
                let effect = st.lapic.mmio_write(off, insn.size, value, now);
                super::interrupts::apic_written(vm, m, index, &st.lapic, effect);
            }
        }
        return retire(st, insn.len);
    }
    let device = vm.bus.get().and_then(|b| b.mmio(f.gpa));
    let mut cx = DeviceCx::new(vm, m);
    let regs = st.vcpu.regs_mut();
    match insn.access {
        Access::Load {
            reg,
            high_byte,
            dest_size,
        } => {
            let ones = if insn.size >= 8 {
                u64::MAX
            } else {
                (1u64 << (8 * u32::from(insn.size))) - 1
            };
            let value = device.map_or(ones, |(d, off)| d.read(off, insn.size, &mut cx));
            let old = regs.gpr(reg).unwrap_or(0);
            regs.set_gpr(reg, mmio::merge_load(old, value, dest_size, high_byte));
        }
        Access::StoreReg { reg, high_byte } => {
            let value = mmio::store_value(regs.gpr(reg).unwrap_or(0), insn.size, high_byte);
            if let Some((d, off)) = device {
                d.write(off, insn.size, value, &mut cx);
            }
        }
        Access::StoreImm(value) => {
            if let Some((d, off)) = device {
                d.write(off, insn.size, value, &mut cx);
            }
        }
    }
    retire(st, insn.len)
}

/// Retired here from the decoded length: a nested page fault has no instruction length.
fn retire<V: Vcpu>(st: &mut VcpuState<V>, len: u8) -> Action {
    if st.vcpu.skip_instruction(u64::from(len)).is_err() {
        return Action::Fault(virt::Event::UD);
    }
    Action::Retry
}
