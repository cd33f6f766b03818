//! The xenstore ring page (`xenstore_domain_interface`): two 1 KiB byte rings with
//! free-running indices. Indices that claim more than a ring's worth of data mean the guest
//! broke the ring; the caller stops serving it.

use virt::GuestMemory;

pub const RING_SIZE: u32 = 1024;
const REQ: u64 = 0;
const RSP: u64 = 1024;
const REQ_CONS: u64 = 2048;
const REQ_PROD: u64 = 2052;
const RSP_CONS: u64 = 2056;
const RSP_PROD: u64 = 2060;
pub const PAGE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken;

/// Copies `data` into a ring at `base` starting at free-running index `at`, wrapping.
fn copy_in(mem: &dyn GuestMemory, base: u64, at: u32, data: &[u8]) -> Result<(), Broken> {
    let off = (at % RING_SIZE) as usize;
    let first = data.len().min(RING_SIZE as usize - off);
    mem.write(base + off as u64, &data[..first])
        .map_err(|_| Broken)?;
    if first < data.len() {
        mem.write(base, &data[first..]).map_err(|_| Broken)?;
    }
    Ok(())
}

fn copy_out(mem: &dyn GuestMemory, base: u64, at: u32, buf: &mut [u8]) -> Result<(), Broken> {
    let off = (at % RING_SIZE) as usize;
    let first = buf.len().min(RING_SIZE as usize - off);
    mem.read(base + off as u64, &mut buf[..first])
        .map_err(|_| Broken)?;
    if first < buf.len() {
        mem.read(base, &mut buf[first..]).map_err(|_| Broken)?;
    }
    Ok(())
}

fn indices(mem: &dyn GuestMemory, cons: u64, prod: u64) -> Result<(u32, u32), Broken> {
    let c = mem.read_u32(cons).map_err(|_| Broken)?;
    let p = mem.read_u32(prod).map_err(|_| Broken)?;
    if p.wrapping_sub(c) > RING_SIZE {
        return Err(Broken);
    }
    Ok((c, p))
}

/// Takes up to `buf.len()` request bytes; returns how many.
pub fn take_request(mem: &dyn GuestMemory, page: u64, buf: &mut [u8]) -> Result<usize, Broken> {
    let (c, p) = indices(mem, page + REQ_CONS, page + REQ_PROD)?;
    let n = (p.wrapping_sub(c) as usize).min(buf.len());
    if n == 0 {
        return Ok(0);
    }
    copy_out(mem, page + REQ, c, &mut buf[..n])?;
    mem.write_u32(page + REQ_CONS, c.wrapping_add(n as u32))
        .map_err(|_| Broken)?;
    Ok(n)
}

/// Puts as much of `data` as fits into the response ring; returns how much.
pub fn put_response(mem: &dyn GuestMemory, page: u64, data: &[u8]) -> Result<usize, Broken> {
    let (c, p) = indices(mem, page + RSP_CONS, page + RSP_PROD)?;
    let room = (RING_SIZE - p.wrapping_sub(c)) as usize;
    let n = room.min(data.len());
    if n == 0 {
        return Ok(0);
    }
    copy_in(mem, page + RSP, p, &data[..n])?;
    // The data is in place before the producer index says so (x86 keeps stores in order).
    mem.write_u32(page + RSP_PROD, p.wrapping_add(n as u32))
        .map_err(|_| Broken)?;
    Ok(n)
}

/// A fresh connection: indices, features, `connection` (0 = connected) and `error` zeroed.
pub fn reset(mem: &dyn GuestMemory, page: u64) -> Result<(), Broken> {
    mem.write(page, &[0u8; PAGE as usize]).map_err(|_| Broken)
}
