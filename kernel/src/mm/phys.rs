//! The one physical frame allocator of the machine, fed from the multiboot memory map.
#![expect(unsafe_code)]
// UNSAFETY: the allocator's bitmap and zeroed frames are raw physical memory, reachable
// through the identity map.

use super::frame::{FRAME_SIZE, FrameAllocator, FrameError};
use boot::mbinfo::{MachineInfo, RegionKind};
use boot::placement::place_above;
use core::ops::Range;
use spin::Mutex;

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

#[derive(Debug)]
pub struct MemorySummary {
    pub usable: u64,
    pub free: u64,
    pub top: u64,
}

/// Builds the allocator. Everything in `used` (the kernel image and all below it, modules,
/// the multiboot block) stays allocated for ever. `limit` bounds where the bitmap may go
/// (memory mapped right now).
pub fn init(info: &MachineInfo<'_>, used: &[Range<u64>], limit: u64) -> Option<MemorySummary> {
    let top = info.top_of_ram();
    let bytes = FrameAllocator::bitmap_bytes(top);
    let at = place_above(&info.regions, used, bytes, FRAME_SIZE, limit)?;
    // SAFETY: [at, at+bytes) is usable RAM above everything in use and inside the current
    // identity map; it becomes the bitmap and is reserved below, so nothing else gets it.
    let bits = unsafe { core::slice::from_raw_parts_mut(at as *mut u64, (bytes / 8) as usize) };
    let mut alloc = FrameAllocator::new(bits, top);
    for r in info.regions.iter().filter(|r| r.kind == RegionKind::Usable) {
        alloc.add_free(r.start, r.end);
    }
    for r in used {
        alloc.reserve(r.start, r.end);
    }
    alloc.reserve(at, at + bytes);
    let summary = MemorySummary {
        usable: info.usable_bytes(),
        free: alloc.free_bytes(),
        top,
    };
    *FRAMES.lock() = Some(alloc);
    Some(summary)
}

/// `count` zeroed, contiguous frames aligned to `align` bytes.
pub fn alloc_zeroed(count: u64, align: u64) -> Result<u64, FrameError> {
    let pa = FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::OutOfMemory { frames: count })?
        .alloc(count, align)?;
    // SAFETY: the frames were just allocated to us and are identity mapped.
    unsafe { vcpu::zero_host(vcpu::host_ptr(pa), count * FRAME_SIZE) };
    Ok(pa)
}

/// `count` contiguous frames aligned to `align` bytes, holding whatever they held: for guest
/// RAM, which is zeroed chunk by chunk on first use (`virt::ram_chunks`).
pub fn alloc_unzeroed(count: u64, align: u64) -> Result<u64, FrameError> {
    FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::OutOfMemory { frames: count })?
        .alloc(count, align)
}

pub fn free(pa: u64, count: u64) -> Result<(), FrameError> {
    FRAMES
        .lock()
        .as_mut()
        .ok_or(FrameError::NotAllocated { addr: pa })?
        .free(pa, count)
}

pub fn free_bytes() -> u64 {
    FRAMES.lock().as_ref().map_or(0, FrameAllocator::free_bytes)
}

/// The allocator as the vCPU layer's frame source.
pub struct Frames;

impl vcpu::FrameSource for Frames {
    fn alloc_zeroed_frame(&mut self) -> Option<u64> {
        alloc_zeroed(1, FRAME_SIZE).ok()
    }

    fn alloc_zeroed_contiguous(&mut self, count: usize) -> Option<u64> {
        alloc_zeroed(count as u64, FRAME_SIZE).ok()
    }
}
