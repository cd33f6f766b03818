//! The manifest's disks on the host: each VHD image checked (with its parent chain) and given
//! an NVMe namespace of its own; before a run, writable sparse images get room to grow (the
//! namespace is the file, and its size is fixed while QEMU runs); after it, each is trimmed
//! back to the image it holds, so `qemu-img` and `cargo xtask vhd check` see a plain VHD file.

use crate::util::shown;
use ::manifest::{self as km, DiskSpec};
use anyhow::{Context, Result, anyhow, bail};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use vhd::{DiskType, OpenOptions as VhdOpen};

/// A layer's block table the hypervisor's volume layer holds in memory, at most.
pub const MAX_TABLE_ENTRIES: u32 = 65_536;

/// One image file, attached as namespace `index + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFile {
    pub path: PathBuf,
    /// Some disk writes it (never shared, never a parent).
    pub writable: bool,
    /// Disks that read it (read-only, or as a parent).
    pub readers: u32,
    pub sparse: bool,
}

#[derive(Debug, Default)]
pub struct DiskSet {
    pub files: Vec<DiskFile>,
}

impl DiskSet {
    fn nsid(&mut self, path: &Path, sparse: bool) -> u32 {
        let at = self
            .files
            .iter()
            .position(|f| f.path == path)
            .unwrap_or_else(|| {
                self.files.push(DiskFile {
                    path: path.to_path_buf(),
                    writable: false,
                    readers: 0,
                    sparse,
                });
                self.files.len() - 1
            });
        at as u32 + 1
    }

    /// Checks the image at `path` (and its parents) and gives each file a namespace.
    /// `Err` says what is wrong; the caller adds the file, VM and key.
    pub fn add(&mut self, path: &Path, read_only: bool) -> Result<DiskSpec> {
        let path = path
            .canonicalize()
            .with_context(|| format!("cannot read {}", shown(path)))?;
        recover(&path)?;
        let (mut image, paths) =
            vhd::fs::open_with_paths(&path, VhdOpen::read_only()).map_err(|e| anyhow!("{e}"))?;
        for (layer, p) in image.layers_mut().iter_mut().zip(&paths) {
            let entries = layer.header().map_or(0, |h| h.max_table_entries);
            if entries > MAX_TABLE_ENTRIES {
                bail!(
                    "{}: {entries} blocks; the hypervisor's volume layer takes at most \
                     {MAX_TABLE_ENTRIES} per image",
                    shown(p)
                );
            }
            let report = layer.check().map_err(|e| anyhow!("{}: {e}", shown(p)))?;
            if !report.is_clean() {
                bail!(
                    "{}: the image is damaged ({:?}); `cargo xtask vhd check` tells more",
                    shown(p),
                    report.findings
                );
            }
        }
        let chain: Vec<PathBuf> = paths
            .iter()
            .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
            .collect();
        let layers = image.layers();
        let top_sparse = layers[0].disk_type() != DiskType::Fixed;
        let nsid = self.nsid(&chain[0], top_sparse);
        let mut parents = Vec::new();
        for (p, l) in chain.iter().zip(layers).skip(1) {
            parents.push(self.nsid(p, l.disk_type() != DiskType::Fixed));
        }
        for (i, p) in chain.iter().enumerate() {
            let at = self.files.iter().position(|f| &f.path == p).unwrap_or(0);
            let f = &mut self.files[at];
            if i == 0 && !read_only {
                if f.writable || f.readers > 0 {
                    bail!(
                        "{} is already in use by another disk: a writable image is never shared",
                        shown(p)
                    );
                }
                f.writable = true;
            } else {
                if f.writable {
                    bail!(
                        "{} is written by another disk and cannot also be read as a disk or parent",
                        shown(p)
                    );
                }
                f.readers += 1;
            }
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = &name[..name.len().min(km::MAX_FILE - 1)];
        let mut spec = DiskSpec {
            name: name.try_into().map_err(|_| anyhow!("file name too long"))?,
            nsid,
            parents: Default::default(),
            read_only,
        };
        for n in parents {
            spec.parents.push(n).map_err(|_| {
                anyhow!(
                    "{}: a chain of more than {} images",
                    shown(&path),
                    km::MAX_CHAIN
                )
            })?;
        }
        Ok(spec)
    }

    /// Gives each writable sparse image room to grow into.
    pub fn grow(&self) -> Result<()> {
        for f in self.files.iter().filter(|f| f.writable && f.sparse) {
            let mut io = vhd::fs::FileIo::new(open_rw(&f.path)?);
            let len = io.file().metadata()?.len();
            let room = vhd::container::room_to_grow(&mut io, len)
                .map_err(|e| anyhow!("{}: {e}", shown(&f.path)))?;
            io.file()
                .set_len(room.next_multiple_of(512))
                .with_context(|| format!("cannot extend {}", shown(&f.path)))?;
        }
        Ok(())
    }

    /// Trims every writable image back to the image it holds (after a run, however it ended).
    pub fn trim(&self) -> Result<()> {
        for f in self.files.iter().filter(|f| f.writable && f.sparse) {
            trim(&f.path)?;
        }
        Ok(())
    }

    /// The files as NVMe namespaces, in namespace order.
    pub fn namespaces(&self) -> Vec<crate::emulator::Namespace> {
        self.files
            .iter()
            .map(|f| crate::emulator::Namespace {
                file: f.path.clone(),
                read_only: !f.writable,
            })
            .collect()
    }

    /// Runs `spec` with these disks attached after the namespaces it names already: room
    /// to grow before, and each image trimmed back after, however the run ended.
    pub fn run(
        &self,
        emulator: crate::emulator::Emulator,
        mut spec: crate::emulator::RunSpec,
    ) -> Result<crate::emulator::Outcome> {
        let extra = std::mem::take(&mut spec.nvme);
        spec.nvme = self.namespaces();
        spec.nvme.extend(extra);
        self.grow()?;
        let outcome = crate::emulator::run(emulator, spec);
        self.trim()?;
        outcome
    }
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {} for writing", shown(path)))
}

/// The file's length after trimming: where its image ends.
pub fn trim(path: &Path) -> Result<u64> {
    let mut io = vhd::fs::FileIo::new(open_rw(path)?);
    let len = io.file().metadata()?.len();
    let end = vhd::container::image_len(&mut io, len)
        .map_err(|e| anyhow!("{}: cannot find the image's end: {e}", shown(path)))?;
    if end != len {
        io.file()
            .set_len(end)
            .with_context(|| format!("cannot trim {}", shown(path)))?;
        io.file().sync_all()?;
    }
    Ok(end)
}

/// A file left with room to grow by a run that did not finish: trimmed before it is used.
fn recover(path: &Path) -> Result<()> {
    let mut io = vhd::fs::FileIo::new(
        File::open(path).with_context(|| format!("cannot read {}", shown(path)))?,
    );
    let len = io.file().metadata()?.len();
    match vhd::container::image_len(&mut io, len) {
        Ok(end) if end < len => {
            drop(io);
            trim(path)?;
            println!(
                "xtask: {}: trimmed to its image ({end} bytes) after a run that did not end",
                shown(path)
            );
            Ok(())
        }
        // Whole, or not a VHD at all (the open that follows says why).
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = crate::util::out_dir().join("test-disks").join(tag);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn dynamic(dir: &Path, name: &str, size: u64) -> PathBuf {
        let p = dir.join(name);
        vhd::fs::create(&p, DiskType::Dynamic, size, &vhd::fs::create_options()).unwrap();
        p
    }

    #[test]
    fn namespaces_are_shared_read_only_and_never_written_twice() {
        let d = scratch("share");
        let base = dynamic(&d, "base.vhd", 4 << 20);
        let child = d.join("child.vhd");
        vhd::fs::create_differencing(&child, &base, None, &vhd::fs::create_options()).unwrap();
        let mut set = DiskSet::default();
        let c = set.add(&child, false).unwrap();
        assert_eq!((c.nsid, c.parents.as_slice()), (1, &[2][..]));
        // The base again, read-only: the same namespace.
        let b = set.add(&base, true).unwrap();
        assert_eq!(b.nsid, 2);
        // Written twice, or written while another disk reads it: refused.
        assert!(set.add(&child, false).is_err());
        assert!(
            set.add(&base, false)
                .unwrap_err()
                .to_string()
                .contains("already in use")
        );
        let mut set2 = DiskSet::default();
        set2.add(&base, false).unwrap();
        assert!(
            set2.add(&child, false)
                .unwrap_err()
                .to_string()
                .contains("written by another")
        );
        let ns: Vec<_> = set
            .namespaces()
            .into_iter()
            .map(|n| (n.file, n.read_only))
            .collect();
        assert_eq!(
            ns,
            [
                (child.canonicalize().unwrap(), false),
                (base.canonicalize().unwrap(), true)
            ]
        );
    }

    #[test]
    fn room_to_grow_is_trimmed_away_and_an_interrupted_run_is_recovered() {
        let d = scratch("grow");
        let p = dynamic(&d, "g.vhd", 8 << 20);
        let len = std::fs::metadata(&p).unwrap().len();
        let mut set = DiskSet::default();
        set.add(&p, false).unwrap();
        set.grow().unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() > len);
        // As if the run were killed: the next use trims it first.
        let mut again = DiskSet::default();
        again.add(&p, false).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), len);
        set.grow().unwrap();
        set.trim().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), len);
    }

    #[test]
    fn bad_images_are_named() {
        let d = scratch("bad");
        let t = d.join("text.vhd");
        std::fs::write(&t, b"not a disk").unwrap();
        let e = DiskSet::default().add(&t, false).unwrap_err().to_string();
        assert!(e.contains("text.vhd"), "{e}");
        let e = DiskSet::default()
            .add(&d.join("missing.vhd"), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.vhd") && e.contains("cannot read"),
            "{e}"
        );
    }
}
