//! One error type for every way an image can be unusable, so callers (and the malformed-image
//! corpus) can tell the cases apart instead of matching on strings.

use core::fmt;

/// Everything that can go wrong opening, reading, writing or creating an image.
///
/// `E` is the storage's own I/O error (`std::io::Error` on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error<E> {
    /// The storage failed.
    Io(E),
    /// The storage ended before a structure that must be there.
    UnexpectedEof { offset: u64 },
    /// The storage accepted zero bytes of a write.
    WriteZero { offset: u64 },
    /// The file is too short to hold what its metadata describes.
    Truncated { needed: u64, len: u64 },
    /// Neither footer copy carries the `conectix` cookie.
    BadFooterCookie,
    /// A footer has the cookie but its checksum does not match.
    BadFooterChecksum { stored: u32, computed: u32 },
    /// Footer file-format version other than 1.0.
    UnsupportedFooterVersion(u32),
    /// Disk type other than fixed (2), dynamic (3) or differencing (4).
    UnsupportedDiskType(u32),
    /// `current_size` is not a whole number of sectors.
    SizeNotSectorAligned(u64),
    /// `current_size` is above the 2040 GiB the format (and QEMU) allow.
    SizeTooLarge(u64),
    /// A fixed image whose length is not `current_size` plus its footer.
    FixedSizeMismatch { file_len: u64, current_size: u64 },
    /// The footer's pointer to the dynamic header is unusable.
    BadDataOffset(u64),
    /// The end footer and the copy at offset 0 describe different disks.
    FootersDisagree,
    /// The dynamic header lacks the `cxsparse` cookie.
    BadHeaderCookie,
    /// The dynamic header checksum does not match.
    BadHeaderChecksum { stored: u32, computed: u32 },
    /// The dynamic header's (unused) data offset is not all ones.
    BadHeaderDataOffset(u64),
    /// Dynamic header version other than 1.0.
    UnsupportedHeaderVersion(u32),
    /// Block size zero, not a power of two, or outside 512 B ..= 256 MiB.
    BadBlockSize(u32),
    /// The BAT has fewer entries than the disk size needs.
    TableTooSmall { entries: u32, needed: u64 },
    /// The BAT has more entries than any legal disk needs (refused before allocating it).
    TableTooLarge { entries: u32 },
    /// The BAT is misaligned or overlaps the footer copy or the dynamic header.
    BadTableOffset(u64),
    /// A BAT entry points past the end of the data area.
    BatEntryPastEof { block: u32, sector: u32 },
    /// A BAT entry points into the footer copy, header, BAT or parent locator data.
    BatEntryInMetadata { block: u32, sector: u32 },
    /// Two BAT entries point at overlapping areas.
    BlocksOverlap { block_a: u32, block_b: u32 },
    /// A parent locator's offset, space or length is unusable.
    BadLocator { index: usize },
    /// A parent locator has a platform code this library does not know.
    UnknownLocatorCode { index: usize, code: u32 },
    /// Locator or parent-name text is not valid UTF-16 (or does not fit the caller's buffer).
    BadLocatorText { index: usize },
    /// A differencing disk was opened without its parent.
    ParentRequired,
    /// A parent was supplied to an image that is not differencing.
    NotDifferencing,
    /// The parent's unique id is not the one the child records.
    ParentUuidMismatch,
    /// The parent is smaller than the child.
    ParentTooSmall { parent: u64, child: u64 },
    /// The same image appears twice in a differencing chain.
    ParentCycle,
    /// The differencing chain is deeper than [`crate::MAX_CHAIN_DEPTH`].
    ChainTooDeep,
    /// An access outside the virtual disk.
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// The image (or a parent layer) was opened read-only.
    ReadOnly,
    /// The footer's saved-state flag is set: writing would corrupt the saved VM state.
    SavedState,
    /// A creation request the format cannot represent.
    BadCreateSize(u64),
    /// Images are only created in empty storage.
    NotEmpty(u64),
}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Error::Io(e)
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            Io(e) => write!(f, "I/O error: {e:?}"),
            UnexpectedEof { offset } => write!(f, "unexpected end of file reading at {offset}"),
            WriteZero { offset } => write!(f, "storage accepted no bytes writing at {offset}"),
            Truncated { needed, len } => {
                write!(f, "file is truncated: {len} bytes, metadata needs {needed}")
            }
            BadFooterCookie => write!(f, "not a VHD: no 'conectix' footer at the end or start"),
            BadFooterChecksum { stored, computed } => write!(
                f,
                "footer checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            UnsupportedFooterVersion(v) => write!(f, "unsupported footer version {v:#010x}"),
            UnsupportedDiskType(t) => write!(f, "unsupported disk type {t}"),
            SizeNotSectorAligned(s) => write!(f, "disk size {s} is not a multiple of 512"),
            SizeTooLarge(s) => write!(f, "disk size {s} exceeds the 2040 GiB VHD limit"),
            FixedSizeMismatch {
                file_len,
                current_size,
            } => write!(
                f,
                "fixed image is {file_len} bytes but its footer says {current_size} + 512"
            ),
            BadDataOffset(o) => write!(f, "footer data offset {o:#x} does not point at a header"),
            FootersDisagree => write!(f, "end footer and offset-0 footer describe different disks"),
            BadHeaderCookie => write!(f, "dynamic header has no 'cxsparse' cookie"),
            BadHeaderChecksum { stored, computed } => write!(
                f,
                "dynamic header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            BadHeaderDataOffset(o) => {
                write!(f, "dynamic header data offset is {o:#x}, must be all ones")
            }
            UnsupportedHeaderVersion(v) => {
                write!(f, "unsupported dynamic header version {v:#010x}")
            }
            BadBlockSize(b) => write!(f, "invalid block size {b}"),
            TableTooSmall { entries, needed } => {
                write!(
                    f,
                    "block table too small: {entries} entries, disk needs {needed}"
                )
            }
            TableTooLarge { entries } => write!(f, "block table too large: {entries} entries"),
            BadTableOffset(o) => write!(f, "block table offset {o:#x} is invalid"),
            BatEntryPastEof { block, sector } => {
                write!(
                    f,
                    "block {block} at sector {sector:#x} lies past the end of the file"
                )
            }
            BatEntryInMetadata { block, sector } => {
                write!(
                    f,
                    "block {block} at sector {sector:#x} clobbers image metadata"
                )
            }
            BlocksOverlap { block_a, block_b } => {
                write!(f, "blocks {block_a} and {block_b} overlap")
            }
            BadLocator { index } => write!(f, "parent locator {index} is invalid"),
            UnknownLocatorCode { index, code } => {
                write!(
                    f,
                    "parent locator {index} has unknown platform code {code:#010x}"
                )
            }
            BadLocatorText { index } => write!(f, "parent locator {index} holds invalid text"),
            ParentRequired => write!(f, "differencing disk needs its parent"),
            NotDifferencing => write!(f, "image is not a differencing disk"),
            ParentUuidMismatch => write!(f, "parent unique id does not match the child's record"),
            ParentTooSmall { parent, child } => {
                write!(
                    f,
                    "parent ({parent} bytes) is smaller than the child ({child} bytes)"
                )
            }
            ParentCycle => write!(f, "differencing chain contains a cycle"),
            ChainTooDeep => write!(
                f,
                "differencing chain deeper than {} images",
                crate::MAX_CHAIN_DEPTH
            ),
            OutOfRange { offset, len, size } => write!(
                f,
                "access of {len} bytes at {offset} is outside the {size}-byte disk"
            ),
            ReadOnly => write!(f, "image is open read-only"),
            SavedState => write!(f, "image has a saved VM state; refusing to write"),
            BadCreateSize(s) => write!(f, "cannot create a VHD of {s} bytes"),
            NotEmpty(len) => write!(
                f,
                "target already holds {len} bytes; images are created in empty storage"
            ),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}
