//! Raw access to host-physical memory: guest RAM and the frames this crate owns.
// UNSAFETY: the kernel identity-maps all RAM, so a host-physical address is a valid pointer for
// the frames the kernel handed us and for the guest RAM block; this module turns those
// addresses into volatile accesses and nothing else. Guest RAM is shared with running vCPUs,
// so it is only ever copied with volatile operations, never borrowed as a Rust reference.
#![expect(unsafe_code)]

use crate::nested::TableMemory;
use crate::{FrameSource, RamRegion};
use virt::ram_chunks::CHUNK;
use virt::{GuestMemory, MemError, check_range};

/// The host pointer for a host-physical address (the kernel's identity map: virtual ==
/// physical). The one place that knows about that mapping.
#[inline]
pub fn host_ptr(pa: u64) -> *mut u8 {
    pa as usize as *mut u8
}

/// Reads a u64 from a frame this crate owns (a table or control block).
pub(crate) fn read_frame_u64(frame: u64, index: usize) -> u64 {
    debug_assert!(index < 512);
    // SAFETY: `frame` is a 4 KiB identity-mapped frame from the FrameSource and index < 512.
    unsafe { core::ptr::read_volatile(host_ptr(frame).cast::<u64>().add(index & 511)) }
}

/// Writes a u64 into a frame this crate owns.
pub(crate) fn write_frame_u64(frame: u64, index: usize, value: u64) {
    // SAFETY: as in `read_frame_u64`.
    unsafe { core::ptr::write_volatile(host_ptr(frame).cast::<u64>().add(index & 511), value) }
}

/// Sets or clears bit `bit` in the bitmap that starts at frame `base` (spanning frames the
/// caller allocated contiguously in the sense of `frames[bit / 32768]`).
pub(crate) fn set_bitmap_bit(frames: &[u64], bit: usize, on: bool) {
    let Some(&frame) = frames.get(bit / (8 * 4096)) else {
        return;
    };
    let byte = (bit / 8) % 4096;
    // SAFETY: `frame` is a 4 KiB frame this crate allocated and byte < 4096.
    unsafe {
        let p = host_ptr(frame).add(byte);
        let v = core::ptr::read_volatile(p);
        let m = 1u8 << (bit % 8);
        core::ptr::write_volatile(p, if on { v | m } else { v & !m });
    }
}

/// Fills a frame with `byte`.
pub(crate) fn fill_frame(frame: u64, byte: u8) {
    // SAFETY: `frame` is a 4 KiB identity-mapped frame owned by this crate.
    unsafe { core::ptr::write_bytes(host_ptr(frame), byte, 4096) }
}

/// Guest RAM: the contiguous host block `[hpa_base, hpa_base + size)` seen at GPA 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRam {
    region: RamRegion,
}

impl GuestRam {
    /// `region` must be RAM the kernel gave to this VM, identity-mapped, for the VM's life.
    pub fn new(region: RamRegion) -> Self {
        GuestRam { region }
    }

    pub fn region(&self) -> RamRegion {
        self.region
    }

    /// Zeroes what `[gpa, gpa + len)` touches of RAM not yet used since the VM got it (see
    /// `virt::ram_chunks`) and copies in the fills recorded for it, so that the hypervisor's
    /// reads and writes on the guest's behalf see what the guest would. The range must lie
    /// inside RAM. Not inlined: every guest memory access calls it, and inlined it cost 8 KB
    /// of text.
    #[inline(never)]
    pub fn ready(&self, gpa: u64, len: u64) {
        let Some(chunks) = self.region.chunks else {
            return;
        };
        let region = self.region;
        chunks.ready(gpa, len, |i| {
            let start = (i as u64).saturating_mul(CHUNK);
            if start < region.size {
                let bytes = CHUNK.min(region.size - start);
                // Only what no fill covers is zeroed: a chunk of kernel is written once.
                let mut covered = [(0u64, 0u64); virt::ram_chunks::MAX_FILLS];
                let mut n = 0;
                for f in chunks.fills() {
                    if let Some((at, _, len)) = f.within(start, start + bytes) {
                        covered[n] = (at, at + len as u64);
                        n += 1;
                    }
                }
                let covered = &mut covered[..n];
                covered.sort_unstable();
                let mut gap = start;
                for &(from, to) in covered
                    .iter()
                    .chain([(start + bytes, start + bytes)].iter())
                {
                    if from > gap {
                        // SAFETY: `[gap, from)` lies inside the chunk, inside the VM's RAM
                        // block, which the kernel gave to this VM and keeps mapped; the
                        // tracker lets one caller at a time ready it, before any vCPU can
                        // reach it through the nested tables.
                        unsafe {
                            zero(
                                host_ptr(region.hpa_base).wrapping_add(gap as usize),
                                from - gap,
                            )
                        };
                    }
                    gap = gap.max(to);
                }
                for f in chunks.fills() {
                    let Some((at, from, n)) = f.within(start, start + bytes) else {
                        continue;
                    };
                    // SAFETY: `f.src` is the start of a `&'static [u8]` of `f.len` bytes
                    // (`RamChunks::add_fill` takes only those) and `[from, from + n)` lies
                    // inside it; the destination lies inside this chunk, which only this
                    // caller touches now (as for the zeroing above).
                    unsafe {
                        opaque_copy(
                            host_ptr(region.hpa_base).wrapping_add(at as usize),
                            (f.src as *const u8).wrapping_add(from),
                            n,
                        )
                    };
                }
            }
        });
    }

    /// Writes `data` (bytes the host keeps for ever: a guest's kernel or initrd module) to
    /// `gpa` when its chunks are first used rather than now, where they are all unused yet;
    /// else now. A VM's loader uses it before the VM runs.
    pub fn write_kept(&self, gpa: u64, data: &'static [u8]) -> Result<(), MemError> {
        check_range(self.region.size, gpa, data.len())?;
        match self.region.chunks {
            Some(chunks) if chunks.add_fill(gpa, data) => Ok(()),
            _ => self.write(gpa, data),
        }
    }

    /// Whether zeroes written to `[gpa, gpa + len)` now would change nothing: RAM not used yet
    /// that no fill lands in is zeroed on first use anyway.
    pub fn zeroes_pending(&self, gpa: u64, len: u64) -> bool {
        self.region
            .chunks
            .is_some_and(|c| c.zeroes_pending(gpa, len))
    }
}

impl GuestMemory for GuestRam {
    fn size(&self) -> u64 {
        self.region.size
    }

    fn dma_range(&self, gpa: u64, len: u64) -> Option<u64> {
        check_range(self.region.size, gpa, usize::try_from(len).ok()?).ok()?;
        self.ready(gpa, len);
        self.region.hpa_base.checked_add(gpa)
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = check_range(self.region.size, gpa, buf.len())?;
        self.ready(gpa, buf.len() as u64);
        let src = host_ptr(self.region.hpa_base).wrapping_add(off);
        // SAFETY: check_range proved [off, off+len) lies inside the guest block, which the
        // kernel keeps mapped for the VM's lifetime; `buf` is ours and does not overlap it.
        unsafe { opaque_copy(buf.as_mut_ptr(), src, buf.len()) };
        Ok(())
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let off = check_range(self.region.size, gpa, data.len())?;
        self.ready(gpa, data.len() as u64);
        let dst = host_ptr(self.region.hpa_base).wrapping_add(off);
        // SAFETY: as in `read`.
        unsafe { opaque_copy(dst, data.as_ptr(), data.len()) };
        Ok(())
    }
}

/// Copies `len` bytes with `rep movs`. The compiler sees only an opaque instruction, so
/// like a volatile access it assumes nothing about memory a running guest may change, and it
/// is one instruction instead of a byte loop (loading a 50 MiB kernel under an emulator).
///
/// # Safety
/// Both ranges must be valid for `len` bytes and must not overlap.
unsafe fn opaque_copy(dst: *mut u8, src: *const u8, len: usize) {
    // Quadwords first, then the odd bytes: emulators run string instructions one element at
    // a time, so eight bytes a step is eight times fewer steps.
    // SAFETY: upheld by the caller; DF is clear in the kernel and in Rust code generally.
    unsafe {
        core::arch::asm!(
            "rep movsq",
            "mov rcx, {tail}",
            "rep movsb",
            tail = in(reg) len % 8,
            inout("rcx") len / 8 => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Zeroes `len` bytes with `rep stos`, quadwords first (as in `opaque_copy`): for guest RAM
/// here and for the kernel's zeroed frames, where a byte loop would be slow under an emulator.
///
/// # Safety
/// `[dst, dst + len)` must be memory the caller owns and nothing else accesses meanwhile.
pub unsafe fn zero(dst: *mut u8, len: u64) {
    // SAFETY: upheld by the caller; DF is clear.
    unsafe {
        core::arch::asm!(
            "rep stosq",
            "mov rcx, {tail}",
            "rep stosb",
            tail = in(reg) len % 8,
            inout("rcx") len / 8 => _,
            inout("rdi") dst => _,
            in("rax") 0u64,
            options(nostack, preserves_flags)
        );
    }
}

/// Nested-table memory from the kernel's frame source.
pub struct HostTables<'a, F: FrameSource + ?Sized>(pub &'a mut F);

impl<F: FrameSource + ?Sized> TableMemory for HostTables<'_, F> {
    fn alloc_table(&mut self) -> Option<u64> {
        self.0.alloc_zeroed_frame()
    }
    fn read_entry(&self, table: u64, index: usize) -> u64 {
        read_frame_u64(table, index)
    }
    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        write_frame_u64(table, index, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the 32-byte step, at every misalignment of both ends, copies
    /// exactly its bytes and nothing next to them.
    #[test]
    fn guest_ram_copies_exact_ranges() {
        let mut backing = vec![0u8; 4096];
        let ram = GuestRam::new(RamRegion {
            hpa_base: backing.as_mut_ptr() as u64,
            size: backing.len() as u64,
            chunks: None,
        });
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 1) as u8).collect();
        for len in [0usize, 1, 7, 8, 31, 32, 33, 63, 64, 65, 100, 200] {
            for gpa in 0..9u64 {
                for skew in 0..9usize {
                    let src = &data[skew..(skew + len).min(data.len())];
                    ram.write(1000, &[0xee; 300]).unwrap();
                    ram.write(1000 + gpa, src).unwrap();
                    let mut back = vec![0u8; 300];
                    ram.read(1000, &mut back).unwrap();
                    let g = gpa as usize;
                    assert!(back[..g].iter().all(|&b| b == 0xee), "before {len}/{gpa}");
                    assert_eq!(&back[g..g + src.len()], src, "copy {len}/{gpa}/{skew}");
                    assert!(back[g + src.len()..].iter().all(|&b| b == 0xee), "after");
                }
            }
        }
        assert!(ram.write(4090, &[1; 7]).is_err());
    }

    /// `backing` as a VM's RAM whose chunks are all unused yet.
    fn tracked(backing: &mut [u8]) -> GuestRam {
        GuestRam::new(RamRegion {
            hpa_base: backing.as_mut_ptr() as u64,
            size: backing.len() as u64,
            chunks: Some(Box::leak(Box::new(virt::RamChunks::new()))),
        })
    }

    /// What the VM had in its RAM before stays invisible: the first read or write of a chunk
    /// zeroes all of it (and only it), later ones leave the guest's data alone.
    #[test]
    fn first_use_of_a_chunk_zeroes_it_whole() {
        let size = 2 * CHUNK as usize + 8192;
        let mut backing = vec![0xA5u8; size];
        let ram = tracked(&mut backing);
        ram.write(CHUNK + 16, &[7; 4]).unwrap();
        let mut b = [0u8; 8];
        ram.read(CHUNK + 12, &mut b).unwrap();
        assert_eq!(b, [0, 0, 0, 0, 7, 7, 7, 7]);
        assert!(
            backing[..CHUNK as usize].iter().all(|&x| x == 0xA5),
            "chunk 0 untouched"
        );
        assert!(
            backing[2 * CHUNK as usize..].iter().all(|&x| x == 0xA5),
            "chunk 2 untouched"
        );
        ram.write(CHUNK + 100, &[9]).unwrap();
        ram.read(CHUNK + 12, &mut b).unwrap();
        assert_eq!(
            b,
            [0, 0, 0, 0, 7, 7, 7, 7],
            "a clean chunk is not zeroed again"
        );
        // The short last chunk: zeroed up to the end of RAM, not beyond.
        ram.read(2 * CHUNK, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        assert!(backing[2 * CHUNK as usize..].iter().all(|&x| x == 0));
        assert!(ram.read(size as u64 - 4, &mut b).is_err());
    }

    /// A device may write guest RAM only once it is ready: the address handed out is the
    /// range's own, its chunk zeroed first (so a later first use cannot wipe what the device
    /// wrote), and nothing outside RAM gets one.
    #[test]
    fn a_dma_range_is_readied_ram_or_nothing() {
        let size = 2 * CHUNK as usize;
        let mut backing = vec![0xA5u8; size];
        let base = backing.as_mut_ptr() as u64;
        let ram = tracked(&mut backing);
        assert_eq!(
            ram.dma_range(CHUNK + 0x1000, 0x2000),
            Some(base + CHUNK + 0x1000)
        );
        assert!(
            backing[CHUNK as usize..].iter().all(|&x| x == 0),
            "chunk 1 zeroed"
        );
        assert!(
            backing[..CHUNK as usize].iter().all(|&x| x == 0xA5),
            "chunk 0 untouched"
        );
        // What a device then writes stays.
        backing[CHUNK as usize + 0x1000] = 0x42;
        assert_eq!(
            ram.dma_range(CHUNK + 0x1000, 1),
            Some(base + CHUNK + 0x1000)
        );
        assert_eq!(backing[CHUNK as usize + 0x1000], 0x42);
        assert_eq!(ram.dma_range(size as u64 - 8, 16), None);
        assert_eq!(ram.dma_range(u64::MAX - 4, 8), None);
    }

    /// A fill lands when its chunk is first used, after the zeroing, and only there: the
    /// chunk's other bytes are zero, its neighbours untouched until used; a write over a
    /// clean chunk happens at once.
    #[test]
    fn kept_writes_land_on_first_use() {
        static IMAGE: [u8; 300] = [0x3C; 300];
        let size = 3 * CHUNK as usize;
        let mut backing = vec![0xA5u8; size];
        let ram = tracked(&mut backing);
        let at = 2 * CHUNK - 100;
        ram.write_kept(at, &IMAGE).unwrap();
        assert!(backing.iter().all(|&x| x == 0xA5), "nothing written yet");
        assert!(ram.zeroes_pending(0, 16));
        assert!(!ram.zeroes_pending(at + 90, 16), "a fill lands there");
        let mut b = [0u8; 4];
        ram.read(2 * CHUNK - 2, &mut b).unwrap();
        assert_eq!(b, [0x3C, 0x3C, 0x3C, 0x3C]);
        let (c1, c3) = (CHUNK as usize, 3 * CHUNK as usize);
        assert!(
            backing[c1..c1 * 2 - 100].iter().all(|&x| x == 0),
            "chunk 1 zeroed up to it"
        );
        assert!(
            backing[c1 * 2 + 200..c3].iter().all(|&x| x == 0),
            "chunk 2 after it"
        );
        assert_eq!(backing[2 * CHUNK as usize + 199], 0x3C);
        assert_eq!(backing[2 * CHUNK as usize + 200], 0);
        assert!(
            backing[..CHUNK as usize].iter().all(|&x| x == 0xA5),
            "chunk 0 unused"
        );
        // Over clean RAM: written now.
        ram.write_kept(CHUNK, &IMAGE[..8]).unwrap();
        assert_eq!(backing[CHUNK as usize + 7], 0x3C);
        assert!(ram.write_kept(size as u64 - 8, &IMAGE).is_err());
    }
}
