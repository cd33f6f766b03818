//! The ELF inside a bzImage, for the Xen face's PVH boot (as Xen decompresses dom0 kernels in
//! the hypervisor). The setup header names the compressed payload; its first bytes name the
//! compressor; the kernel build appends the uncompressed size as a 4-byte trailer, which says
//! how much room to make before anything is decoded. Decoded here: LZ4's legacy frame
//! (Debian's cloud kernels) and gzip; xz (Debian's generic kernels, with the x86 BCJ filter)
//! and the rest are named and refused.

use boot::guest::linux::BzImage;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not a bzImage (or its header does not hold together).
    NotBzImage,
    /// A compressor this loader does not decode, by name.
    Unsupported(&'static str),
    /// The compressed data is damaged (at this byte of the payload).
    Corrupt(&'static str),
    /// The size trailer is not what the payload decodes to.
    SizeMismatch { trailer: usize, decoded: usize },
    /// The room given is smaller than the trailer says.
    TooSmall { need: usize },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NotBzImage => f.write_str("the kernel is neither an ELF nor a bzImage"),
            Error::Unsupported(n) => write!(
                f,
                "the kernel is compressed with {n}, which the hypervisor does not decode (lz4, gzip)"
            ),
            Error::Corrupt(what) => write!(f, "the kernel's compressed payload is damaged: {what}"),
            Error::SizeMismatch { trailer, decoded } => write!(
                f,
                "the kernel decompressed to {decoded} bytes, its size trailer says {trailer}"
            ),
            Error::TooSmall { need } => write!(f, "{need} bytes are needed to decompress it"),
        }
    }
}

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// A vmlinux is tens of MiB; a trailer above this is not believed.
pub const MAX_VMLINUX: usize = 256 << 20;

pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(b"\x7fELF")
}

/// The compressed payload of a bzImage and the size it decodes to.
pub fn payload(image: &[u8]) -> Result<(&[u8], usize), Error> {
    let bz = BzImage::parse(image).map_err(|_| Error::NotBzImage)?;
    let p = bz.payload().ok_or(Error::NotBzImage)?;
    if p.len() < 8 {
        return Err(Error::NotBzImage);
    }
    let (body, trailer) = p.split_at(p.len() - 4);
    let size = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
    if size == 0 || size > MAX_VMLINUX {
        return Err(Error::Corrupt("the size trailer"));
    }
    Ok((body, size))
}

fn compressor(body: &[u8]) -> Result<Kind, Error> {
    const NAMED: [(&[u8], &str); 5] = [
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0x5d, 0, 0], "lzma"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
    ];
    if body.starts_with(&LZ4_LEGACY_MAGIC) {
        return Ok(Kind::Lz4);
    }
    if body.starts_with(&[0x1f, 0x8b]) {
        return Ok(Kind::Gzip);
    }
    match NAMED.iter().find(|(m, _)| body.starts_with(m)) {
        Some((_, name)) => Err(Error::Unsupported(name)),
        None => Err(Error::Unsupported("an unknown compressor")),
    }
}

enum Kind {
    Lz4,
    Gzip,
}

/// Decodes the payload `body` of a bzImage into `out` (at least the trailer's size); the
/// bytes written, which equal the trailer's size.
pub fn decompress(body: &[u8], size: usize, out: &mut [u8]) -> Result<usize, Error> {
    let out = out.get_mut(..size).ok_or(Error::TooSmall { need: size })?;
    let n = match compressor(body)? {
        Kind::Lz4 => lz4_legacy(body, out)?,
        Kind::Gzip => gzip(body, out)?,
    };
    if n != size {
        return Err(Error::SizeMismatch {
            trailer: size,
            decoded: n,
        });
    }
    Ok(n)
}

/// The magic, then blocks of `[u32 LE compressed size][LZ4 block]`, each at most 8 MiB
/// decoded; a repeated magic (concatenated frames) is skipped.
fn lz4_legacy(data: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    let magic = u32::from_le_bytes(LZ4_LEGACY_MAGIC);
    let mut pos = LZ4_LEGACY_MAGIC.len();
    let mut written = 0;
    while pos < data.len() {
        let Some(size) = data.get(pos..pos + 4) else {
            return Err(Error::Corrupt("a truncated block size"));
        };
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        pos += 4;
        if size == magic {
            continue;
        }
        let block = pos
            .checked_add(size as usize)
            .and_then(|end| data.get(pos..end))
            .ok_or(Error::Corrupt("a block longer than the payload"))?;
        pos += block.len();
        let room = out.len() - written;
        let dst = &mut out[written..written + room.min(LZ4_LEGACY_BLOCK)];
        written += lz4_flex::block::decompress_into(block, dst)
            .map_err(|_| Error::Corrupt("an LZ4 block"))?;
    }
    Ok(written)
}

/// RFC 1952: a 10-byte header, optional fields by its flags, raw deflate, then CRC and size.
fn gzip(data: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    const FHCRC: u8 = 2;
    let bad = Error::Corrupt("the gzip header");
    let (&method, &flags) = (data.get(2).ok_or(bad)?, data.get(3).ok_or(bad)?);
    if method != 8 {
        return Err(bad);
    }
    let mut pos = 10;
    if flags & FEXTRA != 0 {
        let len = data.get(pos..pos + 2).ok_or(bad)?;
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = data
                .get(pos..)
                .ok_or(bad)?
                .iter()
                .position(|&b| b == 0)
                .ok_or(bad)?;
            pos += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    let deflate = data.get(pos..).ok_or(bad)?;
    miniz_oxide::inflate::decompress_slice_iter_to_slice(
        out,
        core::iter::once(deflate),
        false,
        true,
    )
    .map_err(|_| Error::Corrupt("the deflate stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_legacy_frames_decode() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        let block = lz4_flex::block::compress(&data);
        let mut frame = LZ4_LEGACY_MAGIC.to_vec();
        frame.extend_from_slice(&(block.len() as u32).to_le_bytes());
        frame.extend_from_slice(&block);
        let mut out = vec![0u8; data.len()];
        assert_eq!(decompress(&frame, data.len(), &mut out), Ok(data.len()));
        assert_eq!(out, data);
        // A size that disagrees, a truncated frame, too little room.
        let mut out = vec![0u8; data.len() + 1];
        assert!(matches!(
            decompress(&frame, data.len() + 1, &mut out),
            Err(Error::SizeMismatch { .. }) | Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            decompress(&frame[..frame.len() - 10], data.len(), &mut out),
            Err(Error::Corrupt(_))
        ));
        assert_eq!(
            decompress(&frame, data.len(), &mut [0u8; 10]),
            Err(Error::TooSmall { need: data.len() })
        );
    }

    /// What the kernel build's gzip writes: a header (here with a file name, which `gzip -n`
    /// leaves out), raw deflate, CRC and size.
    #[test]
    fn gzip_payloads_decode() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 / 13) as u8).collect();
        let mut gz = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(b"vmlinux.bin\0");
        gz.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(&data, 9));
        gz.extend_from_slice(&[0; 8]);
        let mut out = vec![0u8; data.len()];
        assert_eq!(decompress(&gz, data.len(), &mut out), Ok(data.len()));
        assert_eq!(out, data);
        // Another method than deflate, and a cut stream.
        let mut bad = gz.clone();
        bad[2] = 7;
        assert!(matches!(
            decompress(&bad, data.len(), &mut out),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            decompress(&gz[..gz.len() / 2], data.len(), &mut out),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn other_compressors_are_named() {
        let mut out = [0u8; 16];
        assert_eq!(
            decompress(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1], 4, &mut out),
            Err(Error::Unsupported("xz"))
        );
        assert_eq!(
            decompress(&[0x28, 0xb5, 0x2f, 0xfd], 4, &mut out),
            Err(Error::Unsupported("zstd"))
        );
        assert_eq!(
            decompress(&[1, 2, 3, 4], 4, &mut out),
            Err(Error::Unsupported("an unknown compressor"))
        );
        assert_eq!(payload(b"not a kernel at all"), Err(Error::NotBzImage));
    }

    /// Debian's own kernels, where `cargo xtask linux-guest prepare` cached them: the cloud
    /// kernel's payload decodes to exactly the vmlinux xtask made of it.
    #[test]
    fn the_cached_debian_kernel_decodes_to_its_vmlinux() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/linux");
        let (Ok(bz), Ok(elf)) = (
            std::fs::read(root.join("bzImage")),
            std::fs::read(root.join("vmlinux")),
        ) else {
            eprintln!("no cached kernel: not checked");
            return;
        };
        let (body, size) = payload(&bz).unwrap();
        assert_eq!(size, elf.len());
        let mut out = vec![0u8; size];
        assert_eq!(decompress(body, size, &mut out), Ok(size));
        assert!(is_elf(&out));
        assert!(out == elf, "the hypervisor's decoding differs from xtask's");
    }
}
