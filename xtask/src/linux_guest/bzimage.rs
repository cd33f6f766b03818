//! bzImage → ELF vmlinux. The setup header names the compressed kernel exactly
//! (`payload_offset`/`payload_length`), so nothing is found by scanning for magic bytes; the
//! payload's first bytes then say which decompressor to run. The result must be an x86-64 ELF
//! with the `XEN_ELFNOTE_PHYS32_ENTRY` note, which is what makes it PVH-bootable. The header
//! and the ELF are read by `boot`'s parsers, the ones Janus loads guests with, so xtask
//! accepts what the hypervisor accepts; decompression is xtask's alone (the hypervisor only
//! ever loads the bzImage whole).

use anyhow::{Context, Result, anyhow, bail, ensure};
use boot::guest::layout::{MAX_RAM, VmLayout};
use boot::guest::linux::BzImage;
use boot::guest::{GuestLoadError, elf};
use std::io::Read;
use std::ops::Range;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The file range of the compressed payload inside a bzImage.
pub fn locate_payload(image: &[u8]) -> Result<Range<usize>> {
    let bz = BzImage::parse(image).map_err(|e| anyhow!("{e}"))?;
    let payload = bz.payload().ok_or_else(|| {
        anyhow!(
            "the header's payload_offset {:#x} + payload_length {:#x} run past the \
             protected-mode kernel ({:#x} bytes)",
            bz.header().payload_offset.get(),
            bz.header().payload_length.get(),
            bz.protected_mode_kernel().len()
        )
    })?;
    ensure!(!payload.is_empty(), "the header's payload_length is 0");
    let start = payload.as_ptr().addr() - image.as_ptr().addr();
    Ok(start..start + payload.len())
}

/// The compressors the kernel build can use, named by the payload's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    /// LZ4's legacy frame (`lz4 -l`), which is what Debian's cloud flavour uses.
    Lz4Legacy,
    /// Recognised but not decoded here.
    Unsupported(&'static str),
}

impl Compression {
    pub fn detect(payload: &[u8]) -> Option<Self> {
        const KNOWN: [(&[u8], Compression); 7] = [
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
            (&LZ4_LEGACY_MAGIC, Compression::Lz4Legacy),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Unsupported("zstd")),
            (b"BZh", Compression::Unsupported("bzip2")),
            (&[0x5d, 0, 0], Compression::Unsupported("lzma")),
            (&[0x89, b'L', b'Z', b'O'], Compression::Unsupported("lzo")),
        ];
        KNOWN
            .iter()
            .find(|(magic, _)| payload.starts_with(magic))
            .map(|&(_, c)| c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lz4Legacy => "lz4 (legacy frame)",
            Compression::Unsupported(n) => n,
        }
    }
}

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Uncompressed size of every block but the last in the legacy frame.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// Refuse to believe a size trailer above this (vmlinux is tens of MiB).
const MAX_VMLINUX: usize = 1 << 30;

/// Decompresses a payload. The kernel build appends the uncompressed size as a 4-byte LE
/// trailer to every compressed payload; it is stripped first and checked last.
pub fn decompress(payload: &[u8]) -> Result<(Compression, Vec<u8>)> {
    let kind = Compression::detect(payload).ok_or_else(|| {
        anyhow!(
            "payload starts with {:02x?}: no known compression magic",
            &payload[..payload.len().min(6)]
        )
    })?;
    ensure!(
        payload.len() > 8,
        "payload of {} bytes is too short",
        payload.len()
    );
    let (body, trailer) = payload.split_at(payload.len() - 4);
    let expected = u32::from_le_bytes(trailer.try_into().unwrap_or_default()) as usize;
    let capacity = expected.min(MAX_VMLINUX);
    let out = match kind {
        Compression::Gzip => {
            let mut out = Vec::with_capacity(capacity);
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .context("gzip payload")?;
            out
        }
        Compression::Xz => {
            let mut out = Vec::with_capacity(capacity);
            let mut input = body;
            match lzma_rs::xz_decompress(&mut input, &mut out) {
                Ok(()) => out,
                // lzma-rs has no branch-call-jump filters; Debian's generic kernel uses the
                // x86 one.
                Err(lzma_rs::error::Error::XzError(e)) if e.contains("filter") => {
                    xz_command(body, capacity)?
                }
                Err(e) => bail!("xz payload: {e:?}"),
            }
        }
        Compression::Lz4Legacy => lz4_legacy_decode(body, capacity)?,
        Compression::Unsupported(name) => {
            bail!(
                "the kernel is compressed with {name}, which is not supported (gzip, xz, lz4 are)"
            )
        }
    };
    ensure!(
        out.len() == expected,
        "{} payload decompressed to {} bytes, but its size trailer says {expected}",
        kind.name(),
        out.len()
    );
    Ok((kind, out))
}

/// Decompresses one xz stream with the `xz` command (`--single-stream` stops before the size
/// trailer that follows it).
fn xz_command(stream: &[u8], capacity: usize) -> Result<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    crate::prereq::tools(&[&crate::prereq::XZ])?;
    let mut child = Command::new(crate::prereq::XZ.binary)
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start xz")?;
    let mut stdin = child.stdin.take().context("xz stdin")?;
    let input = stream.to_vec();
    // Fed from another thread: xz's output would fill the pipe while we still wrote.
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::with_capacity(capacity);
    child
        .stdout
        .take()
        .context("xz stdout")?
        .read_to_end(&mut out)
        .context("reading xz's output")?;
    let status = child.wait().context("xz")?;
    let _ = feeder.join();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("xz -dc failed ({status}): {}", err.trim());
    }
    Ok(out)
}

/// Decodes LZ4's legacy frame: the magic, then blocks of `[u32 LE compressed size][LZ4
/// block]`, each up to 8 MiB uncompressed, to the end of the input. A repeated magic
/// (concatenated frames) is skipped.
pub fn lz4_legacy_decode(data: &[u8], capacity: usize) -> Result<Vec<u8>> {
    ensure!(
        data.starts_with(&LZ4_LEGACY_MAGIC),
        "not an LZ4 legacy frame (magic 02 21 4c 18 missing)"
    );
    let magic = u32::from_le_bytes(LZ4_LEGACY_MAGIC);
    let mut out = Vec::with_capacity(capacity);
    let mut pos = LZ4_LEGACY_MAGIC.len();
    while pos < data.len() {
        let size = u32_at(data, pos).ok_or_else(|| {
            anyhow!(
                "lz4: {} stray bytes at offset {pos} where a block size belongs",
                data.len() - pos
            )
        })?;
        pos += 4;
        if size == magic {
            continue;
        }
        let size = size as usize;
        let block = pos
            .checked_add(size)
            .and_then(|end| data.get(pos..end))
            .ok_or_else(|| {
                anyhow!(
                    "lz4: the block at offset {} claims {size} bytes, {} remain",
                    pos - 4,
                    data.len() - pos
                )
            })?;
        let start = out.len();
        out.resize(start + LZ4_LEGACY_BLOCK, 0);
        let n = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| anyhow!("lz4: the block at offset {}: {e}", pos - 4))?;
        out.truncate(start + n);
        ensure!(out.len() <= MAX_VMLINUX, "lz4: output exceeds 1 GiB");
        pos += size;
    }
    Ok(out)
}

/// What a PVH loader needs to know about a vmlinux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmlinux {
    /// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical PVH entry.
    pub pvh_entry: u64,
    /// Lowest physical address to one past the highest of the PT_LOAD segments (memsz).
    pub span: Range<u64>,
}

/// Checks that `data` is an x86-64 ELF with a Xen PHYS32_ENTRY note and returns it.
pub fn inspect_vmlinux(data: &[u8]) -> Result<Vmlinux> {
    // The largest VM Janus can build: a kernel refused here is refused in every VM.
    let layout = VmLayout::new(MAX_RAM, 1).map_err(|e| anyhow!("{e}"))?;
    let info = elf::inspect(data, &layout).map_err(|e| anyhow!("{e}"))?;
    ensure!(info.class64, "not ELF64 (a 32-bit ELF)");
    let pvh_entry = info
        .pvh_entry
        .ok_or_else(|| anyhow!("{}", GuestLoadError::MissingPvhNote))?;
    Ok(Vmlinux {
        pvh_entry: pvh_entry.into(),
        span: info.span.start..info.span.end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // Setup header offsets (Documentation/arch/x86/boot.rst).
    const SETUP_SECTS: usize = 0x1f1;
    const BOOT_FLAG: usize = 0x1fe;
    const JUMP: usize = 0x200;
    const HEADER: usize = 0x202;
    const VERSION: usize = 0x206;
    const LOADFLAGS: usize = 0x211;
    const PAYLOAD_OFFSET: usize = 0x248;
    const PAYLOAD_LENGTH: usize = 0x24c;
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    const PT_NOTE: u32 = 4;

    /// A bzImage-shaped buffer: `setup_sects` setup sectors, then a protected-mode part
    /// that holds `payload` at `payload_offset`.
    fn synthetic_bzimage(setup_sects: u8, payload_offset: u32, payload: &[u8]) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            setup_sects as usize
        };
        let pm = (sects + 1) * 512;
        let mut img = vec![0u8; pm + payload_offset as usize + payload.len() + 64];
        img[SETUP_SECTS] = setup_sects;
        img[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        // A short jmp over a header that ends at 0x26c, as a 2.15 kernel's does.
        img[JUMP..JUMP + 2].copy_from_slice(&[0xeb, 0x6a]);
        img[HEADER..HEADER + 4].copy_from_slice(b"HdrS");
        img[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        img[LOADFLAGS] = 1;
        img[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&payload_offset.to_le_bytes());
        img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let at = pm + payload_offset as usize;
        img[at..at + payload.len()].copy_from_slice(payload);
        img
    }

    fn with_trailer(mut compressed: Vec<u8>, raw_len: usize) -> Vec<u8> {
        compressed.extend_from_slice(&(raw_len as u32).to_le_bytes());
        compressed
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: runs of a counter mixed with an LCG.
        let mut x = 0x1234_5678u32;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 7 < 4 {
                    (i / 64) as u8
                } else {
                    (x >> 24) as u8
                }
            })
            .collect()
    }

    fn lz4_legacy(raw: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in raw.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    #[test]
    fn the_setup_header_locates_the_payload() {
        let payload = [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5];
        let img = synthetic_bzimage(39, 0x2cc, &payload);
        let p = locate_payload(&img).unwrap();
        assert_eq!(p, 0x5000 + 0x2cc..0x5000 + 0x2cc + payload.len());
        assert_eq!(&img[p], &payload);
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let img = synthetic_bzimage(0, 16, b"abcdefgh");
        let p = locate_payload(&img).unwrap();
        assert_eq!(p.start, 5 * 512 + 16);
    }

    #[test]
    fn a_bad_header_is_an_error_not_a_panic() {
        let good = synthetic_bzimage(3, 0, b"xxxxxxxx");
        assert!(locate_payload(&good[..0x100]).is_err());
        let mut no_magic = good.clone();
        no_magic[HEADER] = b'X';
        assert!(locate_payload(&no_magic).is_err());
        let mut old = good.clone();
        old[VERSION..VERSION + 2].copy_from_slice(&0x0207u16.to_le_bytes());
        let e = locate_payload(&old).unwrap_err().to_string();
        assert!(e.contains("2.07"), "{e}");
        let mut past_end = good.clone();
        past_end[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(locate_payload(&past_end).is_err());
        let mut huge_off = good;
        huge_off[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(locate_payload(&huge_off).is_err());
        for n in 0..0x260 {
            let _ = locate_payload(&vec![0xff; n]);
        }
    }

    #[test]
    fn lz4_legacy_round_trips_across_blocks() {
        let raw = sample(LZ4_LEGACY_BLOCK * 2 + 12345);
        let framed = lz4_legacy(&raw);
        assert_eq!(lz4_legacy_decode(&framed, raw.len()).unwrap(), raw);
        let (kind, out) = decompress(&with_trailer(framed, raw.len())).unwrap();
        assert_eq!(kind, Compression::Lz4Legacy);
        assert_eq!(out, raw);
    }

    #[test]
    fn lz4_legacy_skips_a_repeated_magic() {
        let (a, b) = (sample(1000), sample(3000));
        let mut framed = lz4_legacy(&a);
        framed.extend_from_slice(&lz4_legacy(&b));
        let mut both = a;
        both.extend_from_slice(&b);
        assert_eq!(lz4_legacy_decode(&framed, 0).unwrap(), both);
    }

    #[test]
    fn lz4_legacy_errors_on_damage() {
        let raw = sample(100_000);
        let framed = lz4_legacy(&raw);
        assert!(lz4_legacy_decode(&framed[..framed.len() - 10], 0).is_err());
        assert!(lz4_legacy_decode(&framed[1..], 0).is_err());
        let mut stray = framed.clone();
        stray.extend_from_slice(&[1, 2]);
        assert!(lz4_legacy_decode(&stray, 0).is_err());
        let mut garbage = framed;
        for b in &mut garbage[8..40] {
            *b = 0xff;
        }
        let _ = lz4_legacy_decode(&garbage, 0);
    }

    #[test]
    fn gzip_and_xz_payloads_decompress_and_the_trailer_is_checked() {
        let raw = sample(300_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        let (kind, out) = decompress(&with_trailer(gz.clone(), raw.len())).unwrap();
        assert_eq!((kind, out.as_slice()), (Compression::Gzip, raw.as_slice()));
        let e = decompress(&with_trailer(gz, raw.len() + 1)).unwrap_err();
        assert!(e.to_string().contains("size trailer"), "{e}");

        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut raw.as_slice(), &mut xz).unwrap();
        let (kind, out) = decompress(&with_trailer(xz, raw.len())).unwrap();
        assert_eq!((kind, out.as_slice()), (Compression::Xz, raw.as_slice()));
    }

    #[test]
    fn unknown_and_unsupported_compressions_are_named() {
        let e = decompress(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("zstd"), "{e}");
        assert!(decompress(b"hello world, not compressed").is_err());
        assert!(decompress(&[]).is_err());
    }

    /// A minimal ELF64 of 4 KiB: one PT_LOAD of the whole file at 16 MiB (so that the PVH
    /// entry lies in its file bytes) and one PT_NOTE holding `notes`.
    fn synthetic_elf(class: u8, notes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        let mut note_bytes = Vec::new();
        for (name, ty, desc) in notes {
            note_bytes.extend_from_slice(&((name.len() + 1) as u32).to_le_bytes());
            note_bytes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&ty.to_le_bytes());
            note_bytes.extend_from_slice(name);
            note_bytes.push(0);
            while note_bytes.len() % 4 != 0 {
                note_bytes.push(0);
            }
            note_bytes.extend_from_slice(desc);
            while note_bytes.len() % 4 != 0 {
                note_bytes.push(0);
            }
        }
        const FILE_LEN: usize = 0x1000;
        let (ehsize, phentsize, phnum) = (64usize, 56usize, 2usize);
        let notes_at = ehsize + phentsize * phnum;
        let mut f = vec![0u8; notes_at];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = class;
        f[5] = 1; // little endian
        f[6] = 1; // version
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
        f[32..40].copy_from_slice(&(ehsize as u64).to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&(ehsize as u16).to_le_bytes());
        f[54..56].copy_from_slice(&(phentsize as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        let phdr =
            |f: &mut Vec<u8>, i: usize, ty: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| {
                let p = ehsize + i * phentsize;
                f[p..p + 4].copy_from_slice(&ty.to_le_bytes());
                f[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
                f[p + 16..p + 24].copy_from_slice(&(paddr | 0xffff_ffff_8000_0000).to_le_bytes());
                f[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
                f[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
                f[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
                f[p + 48..p + 56].copy_from_slice(&4u64.to_le_bytes());
            };
        let nlen = note_bytes.len() as u64;
        phdr(
            &mut f,
            0,
            PT_LOAD,
            0,
            0x100_0000,
            FILE_LEN as u64,
            0x20_0000,
        );
        phdr(&mut f, 1, PT_NOTE, notes_at as u64, 0x100_0000, nlen, nlen);
        f.extend_from_slice(&note_bytes);
        f.resize(FILE_LEN, 0);
        f
    }

    #[test]
    fn the_pvh_note_is_found_with_either_descriptor_size() {
        let entry8 = 0x100_0850u64.to_le_bytes();
        let elf = synthetic_elf(
            2,
            &[
                (b"Xen", 6, b"linux\0"),
                (b"GNU", 18, &[0; 4]),
                (b"Xen", 18, &entry8),
            ],
        );
        let v = inspect_vmlinux(&elf).unwrap();
        assert_eq!(v.pvh_entry, 0x100_0850);
        assert_eq!(v.span, 0x100_0000..0x120_0000);

        let entry4 = 0x100_0600u32.to_le_bytes();
        let v = inspect_vmlinux(&synthetic_elf(2, &[(b"Xen", 18, &entry4)])).unwrap();
        assert_eq!(v.pvh_entry, 0x100_0600);
    }

    #[test]
    fn a_vmlinux_without_the_note_or_not_elf64_is_refused() {
        let e = inspect_vmlinux(&synthetic_elf(2, &[(b"Xen", 6, b"linux\0")])).unwrap_err();
        assert!(e.to_string().contains("PHYS32_ENTRY"), "{e}");
        let e = inspect_vmlinux(&synthetic_elf(2, &[(b"Xen", 18, &[1, 2])])).unwrap_err();
        assert!(e.to_string().contains("PHYS32_ENTRY note malformed"), "{e}");
        let outside = 0x900_0000u64.to_le_bytes();
        assert!(inspect_vmlinux(&synthetic_elf(2, &[(b"Xen", 18, &outside)])).is_err());
        assert!(inspect_vmlinux(&synthetic_elf(1, &[])).is_err());
        assert!(inspect_vmlinux(b"MZ not an elf").is_err());
        let good = synthetic_elf(2, &[(b"Xen", 18, &0x100_0000u64.to_le_bytes())]);
        for n in 0..good.len() {
            let _ = inspect_vmlinux(&good[..n]);
        }
    }
}
