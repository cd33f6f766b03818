//! `cargo xtask vhd …`: the qemu-img-like VHD tool. Owned by the VHD work (issue 4).

mod bench;
pub(crate) mod image;
mod info;
pub mod size;

use clap::{Subcommand, ValueEnum};
use image::{Source, TempOutput};
use std::path::PathBuf;
use std::process::ExitCode;
use vhd::{DiskType, OpenOptions};

pub use bench::BenchArgs;

#[derive(Clone, Copy, ValueEnum)]
pub enum CreateKind {
    Fixed,
    Dynamic,
    Diff,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    Raw,
    Fixed,
    Dynamic,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum InfoFormat {
    #[default]
    Human,
    Json,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create an image. SIZE takes K/M/G/T suffixes (powers of 1024) and is rounded up to a
    /// CHS geometry as QEMU does, unless --force-size. A diff image takes its parent's size.
    Create {
        #[arg(short = 't', value_enum)]
        kind: CreateKind,
        /// Parent image of a differencing disk.
        #[arg(long)]
        parent: Option<PathBuf>,
        /// Keep the size exactly (QEMU's force_size=on).
        #[arg(long)]
        force_size: bool,
        file: PathBuf,
        size: Option<String>,
    },
    /// Describe an image (and its parents).
    Info {
        #[arg(long, value_enum, default_value = "human")]
        output: InfoFormat,
        file: PathBuf,
    },
    /// Check an image: exit 0 clean, 1 damaged, 2 unusable.
    Check { file: PathBuf },
    /// Convert between raw and VHD; the input kind is detected. A VHD input keeps its exact
    /// size; a raw input is rounded as `create` does, unless --force-size.
    Convert {
        #[arg(short = 'O', value_enum)]
        format: OutFormat,
        #[arg(long)]
        force_size: bool,
        input: PathBuf,
        output: PathBuf,
    },
    /// Compare the contents of two images (VHD or raw): exit 0 same, 1 different, 2 error.
    /// Where sizes differ, the longer one must be zero past the shorter.
    Compare { a: PathBuf, b: PathBuf },
    /// Janus vs qemu-img/qemu-io on a 1 GiB dynamic image.
    Bench(BenchArgs),
}

/// `cargo xtask vhd …`; returns the tool's exit code.
pub fn run(cmd: Cmd) -> ExitCode {
    match cmd {
        Cmd::Create {
            kind,
            parent,
            force_size,
            file,
            size,
        } => report(create(kind, parent, force_size, &file, size.as_deref())),
        Cmd::Info { output, file } => report(info::run(&file, output == InfoFormat::Json)),
        Cmd::Check { file } => check(&file),
        Cmd::Convert {
            format,
            force_size,
            input,
            output,
        } => report(convert(format, force_size, &input, &output)),
        Cmd::Compare { a, b } => compare(&a, &b),
        Cmd::Bench(args) => bench(&args),
    }
}

/// `cargo xtask bench vhd …`.
pub fn bench(args: &BenchArgs) -> ExitCode {
    report(bench::run(args))
}

fn report(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhd: {e}");
            ExitCode::from(1)
        }
    }
}

fn create(
    kind: CreateKind,
    parent: Option<PathBuf>,
    force_size: bool,
    file: &std::path::Path,
    size: Option<&str>,
) -> Result<(), String> {
    let mut opts = vhd::fs::create_options();
    opts.force_size = force_size;
    let out = TempOutput::new(file)?;
    match kind {
        CreateKind::Diff => {
            let parent = parent.ok_or("create -t diff needs --parent PARENT")?;
            let p = vhd::fs::open(&parent, OpenOptions::read_only()).map_err(|e| e.to_string())?;
            if let Some(s) = size {
                let want = size::parse(s)?;
                if want != p.size() {
                    return Err(format!(
                        "{}: a differencing disk has its parent's size ({} bytes), not {want}",
                        file.display(),
                        p.size()
                    ));
                }
            }
            drop(p);
            vhd::fs::create_differencing(out.path(), &parent, Some(file), &opts)
                .map_err(|e| e.to_string())?;
        }
        CreateKind::Fixed | CreateKind::Dynamic => {
            if parent.is_some() {
                return Err("--parent only applies to -t diff".into());
            }
            let size = size::parse(size.ok_or("missing SIZE")?)?;
            let dt = if matches!(kind, CreateKind::Fixed) {
                DiskType::Fixed
            } else {
                DiskType::Dynamic
            };
            vhd::fs::create(out.path(), dt, size, &opts).map_err(|e| e.to_string())?;
        }
    }
    out.commit()
}

fn check(file: &std::path::Path) -> ExitCode {
    let (mut v, paths) = match vhd::fs::open_with_paths(file, OpenOptions::read_only()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("vhd check: {e}");
            eprintln!("{}: image is unusable", file.display());
            return ExitCode::from(2);
        }
    };
    let mut damaged = false;
    for (layer, path) in v.layers_mut().iter_mut().zip(&paths) {
        let r = match layer.check() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vhd check: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        for f in &r.findings {
            let what = if f.is_damage() { "ERROR" } else { "note" };
            println!("{}: {what}: {f}", path.display());
        }
        if r.total_blocks > 0 {
            println!(
                "{}: {}/{} blocks allocated",
                path.display(),
                r.allocated_blocks,
                r.total_blocks
            );
        }
        damaged |= !r.is_clean();
    }
    if damaged {
        println!("{}: image is damaged", file.display());
        ExitCode::from(1)
    } else {
        println!("No errors were found on the image.");
        ExitCode::SUCCESS
    }
}

fn convert(
    format: OutFormat,
    force_size: bool,
    input: &std::path::Path,
    output: &std::path::Path,
) -> Result<(), String> {
    let mut src = Source::open(input)?;
    let size = src.size();
    let out = TempOutput::new(output)?;
    let keep_exact = force_size || src.is_vhd();
    match format {
        OutFormat::Raw => image::write_raw(&mut src, out.path())?,
        OutFormat::Fixed | OutFormat::Dynamic => {
            let kind = if format == OutFormat::Fixed {
                DiskType::Fixed
            } else {
                DiskType::Dynamic
            };
            image::write_vhd(&mut src, out.path(), kind, size, keep_exact)?;
        }
    }
    out.commit()
}

fn compare(a: &std::path::Path, b: &std::path::Path) -> ExitCode {
    match image::compare(a, b) {
        Ok(None) => {
            println!("Images are identical.");
            ExitCode::SUCCESS
        }
        Ok(Some(off)) => {
            println!("Content mismatch at offset {off}!");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("vhd compare: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use std::path::Path;
    use std::process::ExitCode;

    /// The exit code of `cargo xtask vhd ARGS…`, parsed by the real command tree.
    fn run(args: &[&str]) -> String {
        let argv = ["cargo xtask", "vhd"]
            .into_iter()
            .chain(args.iter().copied());
        let code = match crate::Cli::try_parse_from(argv) {
            Ok(cli) => crate::exec(cli),
            Err(e) => ExitCode::from(e.exit_code() as u8),
        };
        format!("{code:?}")
    }

    fn code(n: u8) -> String {
        format!("{:?}", std::process::ExitCode::from(n))
    }

    fn p(d: &Path, name: &str) -> String {
        d.join(name).to_string_lossy().into_owned()
    }

    #[test]
    fn tool_exit_codes_and_outputs() {
        let dir = std::env::temp_dir().join(format!("vhd-cli-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (base, child, raw, dynm, fixed) = (
            p(&dir, "base.vhd"),
            p(&dir, "child.vhd"),
            p(&dir, "data.raw"),
            p(&dir, "conv.vhd"),
            p(&dir, "conv-fixed.vhd"),
        );
        assert_eq!(run(&["create", "-t", "dynamic", &base, "16M"]), code(0));
        assert_eq!(
            run(&["create", "-t", "diff", "--parent", &base, &child]),
            code(0)
        );
        assert_eq!(run(&["info", "--output", "json", &child]), code(0));
        assert_eq!(run(&["check", &child]), code(0));
        assert_eq!(run(&["compare", &base, &child]), code(0));

        let mut data = vec![0u8; 3 << 20];
        data[12345..20000].fill(7);
        std::fs::write(&raw, &data).unwrap();
        assert_eq!(run(&["convert", "-O", "dynamic", &raw, &dynm]), code(0));
        assert_eq!(run(&["convert", "-O", "fixed", &dynm, &fixed]), code(0));
        assert_eq!(run(&["compare", &raw, &dynm]), code(0));
        assert_eq!(run(&["compare", &fixed, &raw]), code(0));
        assert_eq!(run(&["compare", &base, &dynm]), code(1));

        // Damaged (end footer lost, copy at 0 intact) and unusable images.
        let mut bytes = std::fs::read(&dynm).unwrap();
        let n = bytes.len();
        bytes[n - 512] ^= 0xff;
        std::fs::write(&dynm, &bytes).unwrap();
        assert_eq!(run(&["check", &dynm]), code(1));
        bytes[0] ^= 0xff;
        std::fs::write(&dynm, &bytes).unwrap();
        assert_eq!(run(&["check", &dynm]), code(2));
        assert_eq!(run(&["check", &p(&dir, "missing.vhd")]), code(2));

        // A failed conversion leaves nothing behind, not even its temporary file.
        std::fs::remove_file(&base).unwrap();
        let out = p(&dir, "never.raw");
        assert_eq!(run(&["convert", "-O", "raw", &child, &out]), code(1));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("never"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            run(&["create", "-t", "fixed", &p(&dir, "x.vhd"), "12Q"]),
            code(1)
        );
        assert_eq!(run(&["create", "-t", "diff", &p(&dir, "y.vhd")]), code(1));
        assert_eq!(run(&["bogus"]), code(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
