//! The files around a descriptor: its manifest of digests (`NAME.mf`, lines
//! `SHA256(file)= hex`) and the one-file form of a package (`.ova`: a tar archive, the
//! descriptor first, then the manifest, then the files in References order).

use crate::util::shown;
use anyhow::{Context, Result, anyhow, bail};
use sha2::Digest;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    fn name(self) -> &'static str {
        match self {
            Algo::Sha1 => "SHA1",
            Algo::Sha256 => "SHA256",
            Algo::Sha512 => "SHA512",
        }
    }
}

/// One line of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub algo: Algo,
    pub name: String,
    /// Lower-case hex.
    pub digest: String,
    pub line: usize,
}

/// Parses a manifest's text; errors name the line.
pub fn parse_mf(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || format!("line {}: '{line}' is not ALGORITHM(file)= digest", i + 1);
        let (algo, rest) = line.split_once('(').ok_or_else(bad)?;
        let (name, hex) = rest.rsplit_once(")=").ok_or_else(bad)?;
        let algo = match algo.trim().to_ascii_uppercase().as_str() {
            "SHA1" => Algo::Sha1,
            "SHA256" => Algo::Sha256,
            "SHA512" => Algo::Sha512,
            other => {
                return Err(format!(
                    "line {}: digest {other} is not one Janus checks (SHA1, SHA256, SHA512)",
                    i + 1
                ));
            }
        };
        let digest = hex.trim().to_ascii_lowercase();
        let want = match algo {
            Algo::Sha1 => 40,
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        };
        if digest.len() != want || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "line {}: '{}' is not a {} digest",
                i + 1,
                hex.trim(),
                algo.name()
            ));
        }
        out.push(Entry {
            algo,
            name: name.to_string(),
            digest,
            line: i + 1,
        });
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash<D: Digest>(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", shown(path)))?;
    let mut h = D::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", shown(path)))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The file's digest, lower-case hex.
pub fn digest(path: &Path, algo: Algo) -> Result<String> {
    match algo {
        Algo::Sha1 => hash::<sha1::Sha1>(path),
        Algo::Sha256 => hash::<sha2::Sha256>(path),
        Algo::Sha512 => hash::<sha2::Sha512>(path),
    }
}

/// A manifest of SHA-256 digests of `names` (paths relative to `dir`).
pub fn write_mf(dir: &Path, names: &[String]) -> Result<String> {
    let mut out = String::new();
    for n in names {
        out.push_str(&format!(
            "SHA256({n})= {}\n",
            digest(&dir.join(n), Algo::Sha256)?
        ));
    }
    Ok(out)
}

/// Checks every line of the manifest `mf` against the files beside it; returns the names it
/// covers. A mismatch names the file.
pub fn verify(mf: &Path) -> Result<Vec<String>> {
    let dir = mf.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(mf).with_context(|| format!("cannot read {}", shown(mf)))?;
    let entries = parse_mf(&text).map_err(|e| anyhow!("manifest {}: {e}", shown(mf)))?;
    let mut names = Vec::new();
    for e in entries {
        let file = safe_join(dir, &e.name)
            .map_err(|why| anyhow!("manifest {}: line {}: {why}", shown(mf), e.line))?;
        if !file.is_file() {
            bail!(
                "manifest {}: line {}: {} is not in the package",
                shown(mf),
                e.line,
                e.name
            );
        }
        let got = digest(&file, e.algo)?;
        if got != e.digest {
            bail!(
                "manifest {}: line {}: {} of {} is {got}, the manifest says {}: the file is not \
                 the one the package was made with",
                shown(mf),
                e.line,
                e.algo.name(),
                e.name,
                e.digest
            );
        }
        names.push(e.name);
    }
    Ok(names)
}

/// `dir/name` for a name inside the package (no root, no `..`).
pub fn safe_join(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = Path::new(name);
    if name.is_empty()
        || !p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("'{name}' is not a path inside the package"));
    }
    Ok(dir.join(p))
}

/// Unpacks the `.ova` at `ova` into `dir` (which must exist); returns the descriptor's path.
pub fn extract_ova(ova: &Path, dir: &Path) -> Result<PathBuf> {
    let f =
        std::fs::File::open(ova).with_context(|| format!("OVA {}: cannot read it", shown(ova)))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut descriptor = None;
    let entries = ar
        .entries()
        .with_context(|| format!("OVA {}: not a tar archive", shown(ova)))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("OVA {}: a damaged entry", shown(ova)))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let dst = safe_join(dir, &name).map_err(|e| anyhow!("OVA {}: {e}", shown(ova)))?;
        if kind.is_dir() {
            std::fs::create_dir_all(&dst)?;
            continue;
        }
        if !kind.is_file() {
            bail!(
                "OVA {}: '{name}' is not a plain file ({kind:?}); a package holds files only",
                shown(ova)
            );
        }
        if descriptor.is_none() {
            if !name.to_ascii_lowercase().ends_with(".ovf") {
                bail!(
                    "OVA {}: its first file is '{name}'; an OVA starts with its descriptor (.ovf)",
                    shown(ova)
                );
            }
            descriptor = Some(dst.clone());
        }
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out =
            std::fs::File::create(&dst).with_context(|| format!("cannot write {}", shown(&dst)))?;
        std::io::copy(&mut entry, &mut out)
            .with_context(|| format!("OVA {}: cannot unpack '{name}'", shown(ova)))?;
    }
    descriptor.ok_or_else(|| anyhow!("OVA {}: holds no descriptor (.ovf)", shown(ova)))
}

/// Writes `names` (relative to `dir`, the descriptor first) as the tar archive `ova`.
pub fn write_ova(ova: &Path, dir: &Path, names: &[String]) -> Result<()> {
    let out = std::fs::File::create(ova).with_context(|| format!("cannot write {}", shown(ova)))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(out));
    for n in names {
        let src = dir.join(n);
        let f =
            std::fs::File::open(&src).with_context(|| format!("cannot read {}", shown(&src)))?;
        let meta = f.metadata()?;
        let mut h = tar::Header::new_ustar();
        h.set_path(n)
            .with_context(|| format!("'{n}' cannot be named in a tar archive"))?;
        h.set_size(meta.len());
        h.set_mode(0o644);
        h.set_mtime(
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        );
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, f)
            .with_context(|| format!("cannot write {}", shown(ova)))?;
    }
    b.into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", shown(ova)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines() {
        let e = parse_mf(
            "SHA256(a b.ovf)= 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\n\n\
             SHA1(x(1).vhd)=a94a8fe5ccb19ba61c4c0873d391e987982fbbd3\n",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].algo, e[0].name.as_str()), (Algo::Sha256, "a b.ovf"));
        assert!(e[0].digest.starts_with("9f86d0"));
        assert_eq!(
            (e[1].algo, e[1].name.as_str(), e[1].line),
            (Algo::Sha1, "x(1).vhd", 3)
        );
        assert!(parse_mf("MD5(a)= 00").unwrap_err().contains("MD5"));
        assert!(parse_mf("SHA256 a 00").unwrap_err().contains("line 1"));
        assert!(
            parse_mf("SHA256(a)= 00")
                .unwrap_err()
                .contains("not a SHA256 digest")
        );
    }

    #[test]
    fn digests_of_known_text() {
        let d = std::env::temp_dir().join(format!("janus-ovf-digest-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("t");
        std::fs::write(&f, b"test").unwrap();
        assert_eq!(
            digest(&f, Algo::Sha256).unwrap(),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(
            digest(&f, Algo::Sha1).unwrap(),
            "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"
        );
        assert!(
            digest(&f, Algo::Sha512)
                .unwrap()
                .starts_with("ee26b0dd4af7e749")
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A tar archive of `(name, bytes)` entries, names written as given.
    fn tar_of(path: &Path, entries: &[(&str, &[u8])]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, bytes) in entries {
            let mut h = tar::Header::new_gnu();
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *bytes).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn an_ova_starts_with_its_descriptor_and_stays_inside_its_directory() {
        let d = std::env::temp_dir().join(format!("janus-ova-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let out = d.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let ova = d.join("x.ova");
        tar_of(&ova, &[("x.ovf", b"<a/>"), ("sub/k", b"k")]);
        assert_eq!(extract_ova(&ova, &out).unwrap(), out.join("x.ovf"));
        assert_eq!(std::fs::read(out.join("sub/k")).unwrap(), b"k");
        for (entries, want) in [
            (
                &[("k", &b"k"[..]), ("x.ovf", b"<a/>")][..],
                "its first file is 'k'",
            ),
            (
                &[("x.ovf", b"<a/>"), ("../evil", b"!")],
                "'../evil' is not a path inside",
            ),
            (&[("/etc/evil", b"!")], "not a path inside"),
            (&[], "holds no descriptor"),
        ] {
            tar_of(&ova, entries);
            let e = format!("{:#}", extract_ova(&ova, &out).unwrap_err());
            assert!(e.contains(want) && e.contains("x.ova"), "{e}");
        }
        assert!(!d.join("evil").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn names_stay_inside_the_package() {
        let d = Path::new("/pkg");
        assert_eq!(safe_join(d, "a/b.vhd").unwrap(), Path::new("/pkg/a/b.vhd"));
        for bad in ["../x", "/etc/passwd", "a/../../x", ""] {
            assert!(safe_join(d, bad).is_err(), "{bad}");
        }
    }
}
