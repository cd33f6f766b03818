//! `cargo xtask bench vhd`: the same workloads on this crate and on qemu-img (QEMU's vpc
//! driver), on a 1 GiB dynamic image each, with ratios.
//!
//! Both sides use the page cache and end every write workload with a flush that reaches the
//! disk: qemu-img bench runs `-t writeback --flush-interval=COUNT` (one flush after the last
//! request, plus the flushes its vpc driver issues on every block allocation and bitmap
//! change) and closes the image (another flush); this crate writes, then calls
//! `Vhd::flush` (fdatasync, BAT update, fdatasync). QEMU runs its requests with queue depth
//! (16 for 1 MiB, 32 for 4 KiB) in its thread pool. This crate is synchronous: writes go
//! through one handle, one at a time; reads use one read-only handle per core (as a block
//! backend with a handle per queue would), each issuing its share of the same requests.
//! QEMU's time is the wall time of its process (it includes opening the image), ours is
//! open-to-flush.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vhd::{DiskType, OpenOptions};

const MIB: u64 = 1 << 20;
/// 4 KiB times a prime: every random request lands in a different 2 MiB block.
const STRIDE: u64 = 4096 * 7919;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Image size, with a K/M/G/T suffix: a multiple of 1 MiB, at least 4 MiB.
    #[arg(long, default_value = "1G")]
    size: String,
    #[arg(long, default_value_t = 200_000)]
    rand_reads: u64,
    #[arg(long, default_value_t = 20_000)]
    rand_writes: u64,
    #[arg(long, default_value = "target/vhd-bench")]
    dir: PathBuf,
}

struct Params {
    size: u64,
    rand_reads: u64,
    rand_writes: u64,
    dir: PathBuf,
}

fn parse(args: &BenchArgs) -> Result<Params, String> {
    let p = Params {
        size: super::size::parse(&args.size)?,
        rand_reads: args.rand_reads,
        rand_writes: args.rand_writes,
        dir: args.dir.clone(),
    };
    if p.size < 4 * MIB || !p.size.is_multiple_of(MIB) {
        return Err("bench: --size must be a multiple of 1 MiB, at least 4 MiB".into());
    }
    Ok(p)
}

fn qemu_img(args: &[&str]) -> Result<f64, String> {
    let start = Instant::now();
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| format!("bench: cannot run qemu-img ({e}); install qemu-utils"))?;
    let t = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "bench: qemu-img {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(t)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

struct Row {
    name: &'static str,
    unit: &'static str,
    janus: f64,
    qemu: f64,
}

fn janus_err(p: &Path) -> impl Fn(vhd::Error<std::io::Error>) -> String + '_ {
    move |e| vhd::fs::FsError::image(p, e).to_string()
}

/// Runs `f` on a freshly opened image and flushes; returns seconds.
fn timed(
    img: &Path,
    writable: bool,
    f: impl FnOnce(&mut vhd::Vhd<vhd::fs::FileIo>) -> Result<(), String>,
) -> Result<f64, String> {
    let start = Instant::now();
    let opts = if writable {
        OpenOptions::read_write()
    } else {
        OpenOptions::read_only()
    };
    let mut v = vhd::fs::open(img, opts).map_err(|e| e.to_string())?;
    f(&mut v)?;
    v.flush().map_err(janus_err(img))?;
    drop(v);
    Ok(start.elapsed().as_secs_f64())
}

/// Runs a read workload with one read-only handle per core, request `i` on handle
/// `i % threads` (QEMU spreads its queue over its thread pool the same way); returns seconds.
fn parallel_reads(
    img: &Path,
    count: u64,
    len: usize,
    offset: impl Fn(u64) -> u64 + Sync,
) -> Result<f64, String> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4) as u64;
    let start = Instant::now();
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let offset = &offset;
                sc.spawn(move || -> Result<(), String> {
                    let mut v =
                        vhd::fs::open(img, OpenOptions::read_only()).map_err(|e| e.to_string())?;
                    let mut buf = vec![0u8; len];
                    let mut i = t;
                    while i < count {
                        v.read_at(offset(i), &mut buf).map_err(janus_err(img))?;
                        i += threads;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| "bench: reader thread panicked".to_string())?
        })
    })?;
    Ok(start.elapsed().as_secs_f64())
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    let p = parse(args)?;
    std::fs::create_dir_all(&p.dir).map_err(|e| format!("{}: {e}", p.dir.display()))?;
    let jimg = p.dir.join("janus.vhd");
    let qimg = p.dir.join("qemu.vhd");
    let _ = std::fs::remove_file(&jimg);
    let _ = std::fs::remove_file(&qimg);
    let size = p.size;
    let chunks = size / MIB;
    let size_arg = size.to_string();
    let stride = STRIDE.to_string();
    println!(
        "vhd bench: {} MiB dynamic images in {}, {} random reads, {} random overwrites (4 KiB, stride {STRIDE})",
        size / MIB,
        p.dir.display(),
        p.rand_reads,
        p.rand_writes
    );

    let mut rows = Vec::new();
    let mut opts = vhd::fs::create_options();
    opts.force_size = true;

    // Sequential write into a fresh image.
    vhd::fs::create(&jimg, DiskType::Dynamic, size, &opts).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; MIB as usize];
    let j = timed(&jimg, true, |v| {
        for i in 0..chunks {
            v.write_at(i * MIB, &buf).map_err(janus_err(&jimg))?;
        }
        Ok(())
    })?;
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vpc",
        "-o",
        "subformat=dynamic,force_size=on",
        s(&qimg),
        &size_arg,
    ])?;
    let c = chunks.to_string();
    let q = qemu_img(&[
        "bench",
        "-q",
        "-f",
        "vpc",
        "-t",
        "writeback",
        "-w",
        "--pattern=90",
        "-s",
        "1M",
        "-S",
        "1M",
        "-c",
        &c,
        "-d",
        "16",
        &format!("--flush-interval={c}"),
        s(&qimg),
    ])?;
    let mb = (size / MIB) as f64;
    rows.push(Row {
        name: "seq-write",
        unit: "MiB/s",
        janus: mb / j,
        qemu: mb / q,
    });

    // Sequential read of the written image.
    // Four passes, so the run is long enough to time.
    let reads = 4 * chunks;
    let j = parallel_reads(&jimg, reads, MIB as usize, |i| i % chunks * MIB)?;
    let rc = reads.to_string();
    let q = qemu_img(&[
        "bench",
        "-q",
        "-f",
        "vpc",
        "-t",
        "writeback",
        "-s",
        "1M",
        "-S",
        "1M",
        "-c",
        &rc,
        "-d",
        "16",
        s(&qimg),
    ])?;
    rows.push(Row {
        name: "seq-read",
        unit: "MiB/s",
        janus: 4.0 * mb / j,
        qemu: 4.0 * mb / q,
    });

    // Random 4 KiB reads, qemu-img bench's offset rule: (i * stride) mod size.
    let n = p.rand_reads;
    let j = parallel_reads(&jimg, n, 4096, |i| i * STRIDE % size)?;
    let nr = n.to_string();
    let q = qemu_img(&[
        "bench",
        "-q",
        "-f",
        "vpc",
        "-t",
        "writeback",
        "-s",
        "4k",
        "-S",
        &stride,
        "-c",
        &nr,
        "-d",
        "32",
        s(&qimg),
    ])?;
    rows.push(Row {
        name: "rand-read-4k",
        unit: "IOPS",
        janus: n as f64 / j,
        qemu: n as f64 / q,
    });

    // Random 4 KiB overwrites of allocated blocks, then a flush.
    let n = p.rand_writes;
    let small = vec![0xa5u8; 4096];
    let j = timed(&jimg, true, |v| {
        for i in 0..n {
            v.write_at(i * STRIDE % size, &small)
                .map_err(janus_err(&jimg))?;
        }
        Ok(())
    })?;
    let nw = n.to_string();
    let q = qemu_img(&[
        "bench",
        "-q",
        "-f",
        "vpc",
        "-t",
        "writeback",
        "-w",
        "--pattern=165",
        "-s",
        "4k",
        "-S",
        &stride,
        "-c",
        &nw,
        "-d",
        "32",
        &format!("--flush-interval={nw}"),
        s(&qimg),
    ])?;
    rows.push(Row {
        name: "rand-overwrite-4k",
        unit: "IOPS",
        janus: n as f64 / j,
        qemu: n as f64 / q,
    });

    // Same workloads, same data: the two images must hold the same bytes.
    let same = super::image::compare(&jimg, &qimg)?;
    let _ = std::fs::remove_file(&jimg);
    let _ = std::fs::remove_file(&qimg);
    if let Some(off) = same {
        return Err(format!(
            "bench: janus and qemu images differ at offset {off}"
        ));
    }

    println!(
        "{:<18} {:>14} {:>14} {:>12}",
        "workload", "janus", "qemu-img", "janus/qemu"
    );
    for r in &rows {
        println!(
            "{:<18} {:>9.0} {:<5}{:>9.0} {:<5}{:>11.2}",
            r.name,
            r.janus,
            r.unit,
            r.qemu,
            r.unit,
            r.janus / r.qemu
        );
    }
    for r in &rows[1..] {
        println!("vhd janus/qemu {}: {:.2}", r.name, r.janus / r.qemu);
    }
    println!(
        "vhd janus/qemu seq-write: {:.2}",
        rows[0].janus / rows[0].qemu
    );
    Ok(())
}
