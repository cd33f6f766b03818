//! Host files: storage that syncs on flush, opening differencing chains by their parent
//! locators, and creating images on disk.

use crate::footer::DiskType;
use crate::header::{self, platform};
use crate::{
    CreateOptions, Error, Layer, MAX_CHAIN_DEPTH, OpenOptions, ParentLink, VHD_EPOCH_UNIX, Vhd,
};
use embedded_io::{ErrorType, Read, Seek, SeekFrom, Write};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A file used with positioned I/O (no seek system calls). `flush` is `fdatasync`: the write
/// order in the crate docs relies on it.
#[derive(Debug)]
pub struct FileIo {
    file: File,
    pos: u64,
}

impl FileIo {
    pub fn new(file: File) -> Self {
        FileIo { file, pos: 0 }
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ErrorType for FileIo {
    type Error = io::Error;
}

impl Read for FileIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FileIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Seek for FileIo {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let base = match pos {
            SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            SeekFrom::End(d) => (self.file.metadata()?.len(), d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        self.pos = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// A problem with a named file.
#[derive(Debug)]
pub enum FsError {
    /// The file could not be opened or created.
    File { path: PathBuf, error: io::Error },
    /// The file is not a usable image, or an operation on it failed.
    Image {
        path: PathBuf,
        error: Error<io::Error>,
    },
    /// No parent locator (nor the parent name) leads to a file with the recorded unique id.
    ParentNotFound { path: PathBuf, tried: Vec<PathBuf> },
}

impl FsError {
    pub fn image(path: &Path, error: Error<io::Error>) -> Self {
        FsError::Image {
            path: path.to_path_buf(),
            error,
        }
    }

    /// The library error, if this is one.
    pub fn vhd_error(&self) -> Option<&Error<io::Error>> {
        match self {
            FsError::Image { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::File { path, error } => write!(f, "{}: {error}", path.display()),
            FsError::Image { path, error } => match error {
                Error::Io(e) => write!(f, "{}: I/O error: {e}", path.display()),
                e => write!(f, "{}: {e}", path.display()),
            },
            FsError::ParentNotFound { path, tried } => {
                write!(f, "{}: parent image not found (tried", path.display())?;
                for (i, t) in tried.iter().enumerate() {
                    write!(f, "{}{}", if i == 0 { " " } else { ", " }, t.display())?;
                }
                if tried.is_empty() {
                    write!(f, " nothing: no usable locator")?;
                }
                write!(f, ")")
            }
        }
    }
}

impl std::error::Error for FsError {}

fn open_file(path: &Path, writable: bool) -> Result<File, FsError> {
    File::options()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|error| FsError::File {
            path: path.to_path_buf(),
            error,
        })
}

/// Opens one image file without following parents.
pub fn open_layer(path: &Path, opts: OpenOptions) -> Result<Layer<FileIo>, FsError> {
    let file = open_file(path, opts.writable)?;
    Layer::open(FileIo::new(file), opts).map_err(|e| FsError::image(path, e))
}

/// Opens an image and, for a differencing disk, its chain of parents (read-only).
pub fn open(path: &Path, opts: OpenOptions) -> Result<Vhd<FileIo>, FsError> {
    let (vhd, _) = open_with_paths(path, opts)?;
    Ok(vhd)
}

/// Like [`open`], also returning the path of every layer (the top first).
pub fn open_with_paths(
    path: &Path,
    opts: OpenOptions,
) -> Result<(Vhd<FileIo>, Vec<PathBuf>), FsError> {
    let mut layers = vec![open_layer(path, opts)?];
    let mut paths = vec![path.to_path_buf()];
    let mut seen = vec![canonical(path)];
    let parent_opts = OpenOptions {
        writable: false,
        ..opts
    };
    loop {
        let last = layers.len() - 1;
        if layers[last].disk_type() != DiskType::Differencing {
            break;
        }
        let child_path = paths[last].clone();
        if layers.len() >= MAX_CHAIN_DEPTH {
            return Err(FsError::image(&child_path, Error::ChainTooDeep));
        }
        let (parent, ppath) = find_parent(&mut layers[last], &child_path, &seen, parent_opts)?;
        seen.push(canonical(&ppath));
        layers.push(parent);
        paths.push(ppath);
    }
    match Vhd::from_layers(layers) {
        Ok(v) => Ok((v, paths)),
        Err(e) => Err(FsError::image(path, e)),
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Candidate parent paths in the order the spec prefers: relative locator, absolute locator,
/// other locators, then the parent's name next to the child.
pub fn parent_candidates(layer: &mut Layer<FileIo>, child: &Path) -> Result<Vec<PathBuf>, FsError> {
    let dir = child.parent().unwrap_or(Path::new("")).to_path_buf();
    let Some(h) = layer.header().cloned() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let order = [
        platform::W2RU,
        platform::W2KU,
        platform::MACX,
        platform::WI2R,
        platform::WI2K,
    ];
    for code in order {
        for (i, l) in h.locators.iter().enumerate() {
            if l.code != code {
                continue;
            }
            let mut raw = vec![0u8; l.data_length as usize];
            layer
                .read_locator(i, &mut raw)
                .map_err(|e| FsError::image(child, e))?;
            let text = match code {
                platform::W2RU | platform::W2KU => {
                    let mut utf8 = vec![0u8; raw.len() * 2];
                    let n = header::utf16_to_utf8(&raw, false, &mut utf8)
                        .ok_or_else(|| FsError::image(child, Error::BadLocatorText { index: i }))?;
                    utf8.truncate(n);
                    String::from_utf8(utf8).unwrap_or_default()
                }
                _ => {
                    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                    String::from_utf8(raw[..end].to_vec())
                        .map_err(|_| FsError::image(child, Error::BadLocatorText { index: i }))?
                }
            };
            if let Some(p) = locator_path(&text, &dir) {
                out.push(p);
            }
        }
    }
    let mut name = [0u8; 1024];
    if let Some(n) = header::utf16_to_utf8(&h.parent_name, true, &mut name)
        && n > 0
        && let Ok(s) = std::str::from_utf8(&name[..n])
        && let Some(p) = locator_path(s, &dir)
    {
        out.push(p);
    }
    out.dedup();
    Ok(out)
}

/// Maps a locator's text to a host path: `file://` URLs, Windows separators, `.\` relatives.
fn locator_path(text: &str, dir: &Path) -> Option<PathBuf> {
    let t = text.strip_prefix("file://").unwrap_or(text);
    if t.is_empty() {
        return None;
    }
    let unix = t.replace('\\', "/");
    let is_drive = unix.len() >= 2 && unix.as_bytes()[1] == b':';
    if unix.starts_with('/') || is_drive {
        return Some(PathBuf::from(unix));
    }
    let rel = unix.strip_prefix("./").unwrap_or(&unix);
    Some(dir.join(rel))
}

fn find_parent(
    child: &mut Layer<FileIo>,
    child_path: &Path,
    seen: &[PathBuf],
    opts: OpenOptions,
) -> Result<(Layer<FileIo>, PathBuf), FsError> {
    let want = child.header().map(|h| h.parent_uuid).unwrap_or_default();
    let tried = parent_candidates(child, child_path)?;
    let mut mismatch = None;
    for cand in &tried {
        if !cand.is_file() {
            continue;
        }
        if seen.contains(&canonical(cand)) {
            return Err(FsError::image(child_path, Error::ParentCycle));
        }
        let layer = open_layer(cand, opts)?;
        if layer.footer().uuid == want {
            return Ok((layer, cand.clone()));
        }
        mismatch = Some(cand.clone());
    }
    if mismatch.is_some() {
        return Err(FsError::image(child_path, Error::ParentUuidMismatch));
    }
    Err(FsError::ParentNotFound {
        path: child_path.to_path_buf(),
        tried,
    })
}

/// Seconds since the VHD epoch, now (0 before 2000).
pub fn vhd_now() -> u32 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(unix.saturating_sub(VHD_EPOCH_UNIX)).unwrap_or(u32::MAX)
}

/// A random (version 4) UUID from the OS, falling back to time and process id.
pub fn new_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    let ok = File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut u));
    if ok.is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        u[..8].copy_from_slice(&(t as u64).to_le_bytes());
        u[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        u[12..].copy_from_slice(&((t >> 64) as u32).to_le_bytes());
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// Default creation options: now, a fresh UUID, QEMU's rounding.
pub fn create_options() -> CreateOptions {
    CreateOptions::new(vhd_now(), new_uuid())
}

fn create_new(path: &Path) -> Result<FileIo, FsError> {
    File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map(FileIo::new)
        .map_err(|error| FsError::File {
            path: path.to_path_buf(),
            error,
        })
}

/// Creates a new fixed or dynamic image file (which must not exist yet).
pub fn create(path: &Path, kind: DiskType, size: u64, opts: &CreateOptions) -> Result<(), FsError> {
    let mut io = create_new(path)?;
    let r = match kind {
        DiskType::Fixed => crate::create_fixed(&mut io, size, opts),
        DiskType::Dynamic => crate::create_dynamic(&mut io, size, opts),
        DiskType::Differencing => Err(Error::ParentRequired),
    };
    r.map(|_| ()).map_err(|e| FsError::image(path, e))
}

/// Creates a differencing image at `path` over `parent`, recording both a relative and an
/// absolute locator. `link_as` is the path to store as the relative locator's target (the
/// final location of the child when `path` is a temporary name); it defaults to `path`.
pub fn create_differencing(
    path: &Path,
    parent: &Path,
    link_as: Option<&Path>,
    opts: &CreateOptions,
) -> Result<(), FsError> {
    let p = open_layer(parent, OpenOptions::read_only())?;
    let mtime = std::fs::metadata(parent)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let timestamp = u32::try_from(mtime.saturating_sub(VHD_EPOCH_UNIX)).unwrap_or(0);
    let abs = canonical(parent);
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let child_final = link_as.unwrap_or(path);
    let child_dir = child_final
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .map(canonical);
    let relative = child_dir.and_then(|d| relative_path(&d, &abs));
    let absolute = abs.to_string_lossy().into_owned();
    let link = ParentLink {
        relative: relative.as_deref(),
        absolute: Some(&absolute),
        ..crate::link_from(&p, timestamp, &name)
    };
    let mut io = create_new(path)?;
    crate::create_differencing(&mut io, &link, opts)
        .map(|_| ())
        .map_err(|e| FsError::image(path, e))
}

/// `target` relative to directory `from`, in the `.\dir\file` form Windows writes.
fn relative_path(from: &Path, target: &Path) -> Option<String> {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut parts: Vec<String> = vec![".".into()];
    parts.extend(std::iter::repeat_n("..".to_string(), from.len() - common));
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    Some(parts.join("\\"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = relative_path(Path::new("/a/b"), Path::new("/a/c/p.vhd"));
        assert_eq!(r.as_deref(), Some(".\\..\\c\\p.vhd"));
        let r = relative_path(Path::new("/a"), Path::new("/a/p.vhd"));
        assert_eq!(r.as_deref(), Some(".\\p.vhd"));
        let d = Path::new("/x/y");
        assert_eq!(
            locator_path(".\\..\\c\\p.vhd", d),
            Some(PathBuf::from("/x/y/../c/p.vhd"))
        );
        assert_eq!(
            locator_path("file://./p.vhd", d),
            Some(PathBuf::from("/x/y/p.vhd"))
        );
        assert_eq!(
            locator_path("C:\\v\\p.vhd", d),
            Some(PathBuf::from("C:/v/p.vhd"))
        );
    }
}
