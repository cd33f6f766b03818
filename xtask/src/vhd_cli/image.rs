//! Inputs (VHD or raw, detected), outputs written via a temporary file and renamed into place,
//! and the copy/compare loops built on them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vhd::fs::FileIo;
use vhd::{DiskType, OpenOptions, Vhd};

const CHUNK: usize = 2 << 20;

/// A readable disk: a VHD (any kind, parents resolved) or a raw file.
pub enum Source {
    Vhd(Box<Vhd<FileIo>>, PathBuf),
    Raw(File, u64, PathBuf),
}

/// Whether the file carries a VHD cookie at its end (any image) or its start (sparse images
/// whose end footer is damaged).
pub fn looks_like_vhd(path: &Path) -> Result<bool, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut cookie = [0u8; 8];
    for off in [len.saturating_sub(512), len.saturating_sub(511), 0] {
        if len >= off + 8 && f.read_exact_at(&mut cookie, off).is_ok() && &cookie == b"conectix" {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Source {
    pub fn open(path: &Path) -> Result<Source, String> {
        if looks_like_vhd(path)? {
            let v = vhd::fs::open(path, OpenOptions::read_only()).map_err(|e| e.to_string())?;
            Ok(Source::Vhd(Box::new(v), path.to_path_buf()))
        } else {
            let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let len = f
                .metadata()
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len();
            Ok(Source::Raw(f, len, path.to_path_buf()))
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Source::Vhd(v, _) => v.size(),
            Source::Raw(_, len, _) => *len,
        }
    }

    pub fn is_vhd(&self) -> bool {
        matches!(self, Source::Vhd(..))
    }

    pub fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<(), String> {
        match self {
            Source::Vhd(v, p) => v
                .read_at(off, buf)
                .map_err(|e| format!("{}: {}", p.display(), vhd::fs::FsError::image(p, e))),
            Source::Raw(f, _, p) => f
                .read_exact_at(buf, off)
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }
}

/// A file created under a temporary name next to its destination; removed unless committed,
/// so a failure never leaves a half-written output behind.
pub struct TempOutput {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempOutput {
    pub fn new(dest: &Path) -> Result<TempOutput, String> {
        let name = dest
            .file_name()
            .ok_or_else(|| format!("{}: not a file name", dest.display()))?;
        let dir = dest.parent().unwrap_or(Path::new(""));
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(format!(
                "{}: directory {} does not exist",
                dest.display(),
                dir.display()
            ));
        }
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        Ok(TempOutput {
            tmp,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn commit(mut self) -> Result<(), String> {
        if let Ok(f) = File::open(&self.tmp) {
            f.sync_all()
                .map_err(|e| format!("{}: {e}", self.dest.display()))?;
        }
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| format!("{}: {e}", self.dest.display()))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Copies `src` into a new sparse raw file.
pub fn write_raw(src: &mut Source, out: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", out.display());
    let f = File::options()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(err)?;
    let size = src.size();
    f.set_len(size).map_err(err)?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(CHUNK as u64) as usize;
        src.read_at(off, &mut buf[..n])?;
        if !is_zero(&buf[..n]) {
            f.write_all_at(&buf[..n], off).map_err(err)?;
        }
        off += n as u64;
    }
    f.sync_all().map_err(err)
}

/// Copies `src` into a new fixed or dynamic image; all-zero blocks stay unallocated.
pub fn write_vhd(
    src: &mut Source,
    out: &Path,
    kind: DiskType,
    size: u64,
    exact: bool,
) -> Result<(), String> {
    let mut opts = vhd::fs::create_options();
    // Keeping the exact size needs the maximum geometry unless CHS happens to match it.
    opts.force_size = exact && vhd::geometry::create_size(size, false).map(|s| s.0) != Some(size);
    vhd::fs::create(out, kind, size, &opts).map_err(|e| e.to_string())?;
    let mut dst = vhd::fs::open(out, OpenOptions::read_write()).map_err(|e| e.to_string())?;
    let werr = |e| vhd::fs::FsError::image(out, e).to_string();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(CHUNK as u64) as usize;
        src.read_at(off, &mut buf[..n])?;
        if !is_zero(&buf[..n]) {
            dst.write_at(off, &buf[..n]).map_err(werr)?;
        }
        off += n as u64;
    }
    dst.flush().map_err(werr)
}

/// The first offset where the two disks differ, or `None` when they hold the same data.
pub fn compare(a: &Path, b: &Path) -> Result<Option<u64>, String> {
    let mut sa = Source::open(a)?;
    let mut sb = Source::open(b)?;
    let (la, lb) = (sa.size(), sb.size());
    if la != lb {
        eprintln!(
            "Warning: image sizes differ: {} is {la} bytes, {} is {lb} bytes",
            a.display(),
            b.display()
        );
    }
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    let mut off = 0;
    let end = la.max(lb);
    while off < end {
        let n = (end - off).min(CHUNK as u64) as usize;
        fill(&mut sa, la, off, &mut ba[..n])?;
        fill(&mut sb, lb, off, &mut bb[..n])?;
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(off + i as u64));
        }
        off += n as u64;
    }
    Ok(None)
}

/// Reads what the source has at `off`, zero past its end.
fn fill(src: &mut Source, len: u64, off: u64, buf: &mut [u8]) -> Result<(), String> {
    buf.fill(0);
    if off < len {
        let n = ((len - off) as usize).min(buf.len());
        src.read_at(off, &mut buf[..n])?;
    }
    Ok(())
}
