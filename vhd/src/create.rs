//! Creating images laid out as QEMU lays them out: footer copy at 0, header at 512, BAT at
//! 1536, then (differencing) the parent locator data, then the footer.

use crate::Error;
use crate::footer::{self, DiskType, FOOTER_SIZE, Footer};
use crate::geometry::{self, Geometry};
use crate::header::{self, DynHeader, HEADER_SIZE, LOCATOR_COUNT, Locator, NAME_LEN};
use crate::io::{self, Result, Storage};
use crate::layer::{Layer, MAX_BLOCK_SIZE};
use alloc::vec;
use alloc::vec::Vec;

/// QEMU's block size, and everyone else's default.
pub const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;
const HEADER_AT: u64 = 512;
const TABLE_AT: u64 = 1536;
/// QEMU writes "Virtual PC 2007" and a Windows host; copied so QEMU's size rules treat our
/// images exactly like its own.
const CREATOR_VERSION: u32 = 0x0005_0003;
const CREATOR_OS: u32 = u32::from_be_bytes(*b"Wi2k");

/// Parameters of a new image. The library has no clock or random source, so the caller
/// supplies the timestamp (seconds since 2000-01-01 UTC) and unique id.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    /// Keep the requested size exactly (creator `qem2`, maximum geometry) instead of rounding
    /// it up to a CHS geometry (creator `qemu`).
    pub force_size: bool,
    pub block_size: u32,
    pub timestamp: u32,
    pub uuid: [u8; 16],
}

impl CreateOptions {
    pub fn new(timestamp: u32, uuid: [u8; 16]) -> Self {
        CreateOptions {
            force_size: false,
            block_size: DEFAULT_BLOCK_SIZE,
            timestamp,
            uuid,
        }
    }
}

/// What a differencing child records about its parent.
#[derive(Debug, Clone, Copy)]
pub struct ParentLink<'a> {
    /// The parent's footer (its unique id, size, geometry and creator are copied).
    pub footer: &'a Footer,
    /// The parent's block size when it is sparse; the child uses the same.
    pub block_size: Option<u32>,
    /// Parent file modification time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// The parent's file name (stored in the header).
    pub name: &'a str,
    /// Path relative to the child's directory (`W2ru` locator), if any.
    pub relative: Option<&'a str>,
    /// Absolute path (`W2ku` locator), if any.
    pub absolute: Option<&'a str>,
}

fn empty<S: Storage>(io: &mut S) -> Result<(), S> {
    let len = io::len(io)?;
    if len != 0 {
        return Err(Error::NotEmpty(len));
    }
    Ok(())
}

fn new_footer(size: u64, geometry: Geometry, kind: DiskType, opts: &CreateOptions) -> Footer {
    Footer {
        features: footer::FEATURES_RESERVED,
        version: footer::VERSION,
        data_offset: if kind == DiskType::Fixed {
            u64::MAX
        } else {
            HEADER_AT
        },
        timestamp: opts.timestamp,
        creator_app: if opts.force_size { *b"qem2" } else { *b"qemu" },
        creator_version: CREATOR_VERSION,
        creator_os: CREATOR_OS,
        original_size: size,
        current_size: size,
        geometry,
        disk_type: kind.code(),
        uuid: opts.uuid,
        saved_state: 0,
        hidden: 0,
    }
}

fn sized<E>(size: u64, force_size: bool) -> core::result::Result<(u64, Geometry), Error<E>> {
    geometry::create_size(size, force_size).ok_or(Error::BadCreateSize(size))
}

/// Writes a fixed image of (about) `size` bytes into empty storage; returns its footer. The
/// data area is left to the storage to zero (a file grows sparse).
pub fn create_fixed<S: Storage>(io: &mut S, size: u64, opts: &CreateOptions) -> Result<Footer, S> {
    empty(io)?;
    let (size, geometry) = sized(size, opts.force_size)?;
    let f = new_footer(size, geometry, DiskType::Fixed, opts);
    io::write_at(io, size, &f.encode())?;
    io.flush()?;
    Ok(f)
}

/// Writes an empty dynamic image of (about) `size` bytes into empty storage.
pub fn create_dynamic<S: Storage>(
    io: &mut S,
    size: u64,
    opts: &CreateOptions,
) -> Result<Footer, S> {
    empty(io)?;
    let (size, geometry) = sized(size, opts.force_size)?;
    let f = new_footer(size, geometry, DiskType::Dynamic, opts);
    write_sparse(io, &f, opts.block_size, None)?;
    Ok(f)
}

/// Writes an empty differencing image of `parent` into empty storage.
pub fn create_differencing<S: Storage>(
    io: &mut S,
    parent: &ParentLink<'_>,
    opts: &CreateOptions,
) -> Result<Footer, S> {
    empty(io)?;
    let p = parent.footer;
    let f = Footer {
        creator_app: p.creator_app,
        original_size: p.current_size,
        current_size: p.current_size,
        geometry: p.geometry,
        ..new_footer(p.current_size, p.geometry, DiskType::Differencing, opts)
    };
    let block_size = parent.block_size.unwrap_or(opts.block_size);
    write_sparse(io, &f, block_size, Some(parent))?;
    Ok(f)
}

fn write_sparse<S: Storage>(
    io: &mut S,
    f: &Footer,
    block_size: u32,
    parent: Option<&ParentLink<'_>>,
) -> Result<(), S> {
    if !block_size.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::BadBlockSize(block_size));
    }
    let entries = f.current_size.div_ceil(u64::from(block_size));
    let entries = u32::try_from(entries).map_err(|_| Error::BadCreateSize(f.current_size))?;
    let table_len = (u64::from(entries) * 4).next_multiple_of(512);
    let mut h = DynHeader {
        data_offset: u64::MAX,
        table_offset: TABLE_AT,
        version: header::VERSION,
        max_table_entries: entries,
        block_size,
        parent_uuid: [0; 16],
        parent_timestamp: 0,
        parent_name: [0; NAME_LEN],
        locators: [Locator::default(); LOCATOR_COUNT],
    };
    let mut end = TABLE_AT + table_len;
    let mut locator_data: Vec<(u64, Vec<u8>)> = Vec::new();
    if let Some(p) = parent {
        h.parent_uuid = p.footer.uuid;
        h.parent_timestamp = p.timestamp;
        header::utf8_to_utf16(p.name, true, &mut h.parent_name)
            .ok_or(Error::BadLocatorText { index: 0 })?;
        let paths = [
            (header::platform::W2RU, p.relative),
            (header::platform::W2KU, p.absolute),
        ];
        for (slot, (code, path)) in paths
            .iter()
            .filter_map(|(c, p)| Some((*c, (*p)?)))
            .enumerate()
        {
            let mut text = vec![0u8; path.len() * 4];
            let n = header::utf8_to_utf16(path, false, &mut text)
                .ok_or(Error::BadLocatorText { index: slot })?;
            text.truncate(n);
            let space = (n as u64).next_multiple_of(512).max(512);
            h.locators[slot] = Locator {
                code,
                data_space: u32::try_from(space).map_err(|_| Error::BadLocator { index: slot })?,
                data_length: n as u32,
                data_offset: end,
            };
            text.resize(space as usize, 0);
            locator_data.push((end, text));
            end += space;
        }
    }
    let head = f.encode();
    io::write_at(io, 0, &head)?;
    io::write_at(io, HEADER_AT, &h.encode())?;
    let ones = [0xffu8; 4096];
    let mut at = TABLE_AT;
    while at < TABLE_AT + table_len {
        let n = (TABLE_AT + table_len - at).min(ones.len() as u64) as usize;
        io::write_at(io, at, &ones[..n])?;
        at += n as u64;
    }
    for (off, data) in &locator_data {
        io::write_at(io, *off, data)?;
    }
    io::write_at(io, end, &head)?;
    io.flush()?;
    debug_assert_eq!(HEADER_SIZE as u64 + HEADER_AT, TABLE_AT);
    debug_assert_eq!(FOOTER_SIZE as u64, HEADER_AT);
    Ok(())
}

/// The [`ParentLink`] fields that come from an open parent layer.
pub fn link_from<'a, S: Storage>(
    parent: &'a Layer<S>,
    timestamp: u32,
    name: &'a str,
) -> ParentLink<'a> {
    ParentLink {
        footer: parent.footer(),
        block_size: parent.block_size().map(|b| b as u32),
        timestamp,
        name,
        relative: None,
        absolute: None,
    }
}
