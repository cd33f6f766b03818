//! Host orchestration for Janus: build, run, test, iso, bench, vhd.

mod bench_boot;
mod bench_disk;
mod bench_disk_guest;
mod bench_exits;
mod debian_image;
mod defmt_rx;
mod demo;
mod disk_boot_cases;
mod disk_cases;
mod disks;
mod emulator;
mod fuzz;
mod image;
mod iso;
mod linux_disk_cases;
mod linux_guest;
mod manifest;
mod ovf;
mod ovf_cases;
mod prereq;
mod pxe;
mod testsuite;
mod typist;
mod util;
mod vhd_cli;
mod xlcfg;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use emulator::{Emulator, RunSpec};
use image::BuildOpts;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use util::{out_dir, root, shown};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run and test the Janus hypervisor"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const DEFAULT_MANIFEST: &str = "manifests/default.toml";

#[derive(Subcommand)]
enum Cmd {
    /// Build target/janus/janus-boot and target/janus/janus-kernel.
    Build(BuildOpts),
    /// Boot Janus with a manifest's VMs under an emulator; exit 0 only on success. In a
    /// terminal, what is typed goes to one VM's console (Ctrl-] n: the next VM, Ctrl-] q: shut
    /// all down); otherwise it runs as with --until-login.
    Run {
        /// The VMs to run (TOML, xl.cfg .cfg, OVF .ovf/.ova); default: manifests/default.toml
        /// (the Debian image on both faces).
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "qemu")]
        emulator: Emulator,
        /// Seconds before the run counts as failed (default: 600; none in a terminal).
        #[arg(long)]
        timeout: Option<u64>,
        /// Nobody types: once every VM shows its login prompt, report the time each took and
        /// shut them all down cleanly; a VM that never shows one fails the run.
        #[arg(long)]
        until_login: bool,
        /// Extra words for the hypervisor's command line (e.g. janus.selftest=panic).
        #[arg(long, default_value = "")]
        cmdline: String,
        /// A raw file as an NVMe namespace of the host (QEMU only; repeat for namespace 2, …).
        #[arg(long)]
        nvme: Vec<PathBuf>,
        #[command(flatten)]
        build: BuildOpts,
    },
    /// Host unit tests plus boot tests under QEMU and Bochs.
    Test(testsuite::TestOpts),
    /// A GRUB ISO (multiboot) with janus-boot, the kernel and a manifest's modules.
    Iso {
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Where to write it; default target/janus/janus.iso.
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long, default_value = "")]
        cmdline: String,
        #[command(flatten)]
        build: BuildOpts,
    },
    /// A TFTP directory for PXE: janus-boot, the kernel, a manifest's modules and boot.ipxe;
    /// prints how to serve it (dnsmasq, QEMU). Files already there are not copied again.
    Pxe {
        /// Where to stage (a TFTP root, or a folder in one).
        #[arg(required_unless_present = "readme")]
        dir: Option<PathBuf>,
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Extra words for the hypervisor's command line (the script's `kernel` line).
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Print the README's PXE section (generated from manifests/demo.toml) and stage nothing.
        #[arg(long)]
        readme: bool,
        #[command(flatten)]
        build: BuildOpts,
    },
    /// Benchmarks: `boot`, `vhd`, `size`, `disk`, `exits`.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Run the libFuzzer targets (nightly + cargo-fuzz) for a bounded time each, or `guest`:
    /// the chaos guest on each face beside a neighbour, for `--ops` operations.
    Fuzz {
        /// One of vhd, xen-dispatch, xen-xenstore, xen-blkif, hyperv-dispatch, guest (default:
        /// all libFuzzer targets).
        target: Option<String>,
        /// Seconds per libFuzzer target.
        #[arg(long, default_value_t = 60)]
        time: u32,
        /// Operations per face for `guest`.
        #[arg(long, default_value_t = 100_000)]
        ops: u64,
        /// Seed for `guest` (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The Debian Linux test guest: `prepare`, or `boot` it directly under QEMU.
    #[command(hide = true)]
    LinuxGuest {
        #[command(subcommand)]
        cmd: linux_guest::Sub,
    },
    /// OVF packages: `export` a manifest's VMs (`run --manifest X.ovf|X.ova` runs one).
    Ovf {
        #[command(subcommand)]
        cmd: ovf::Cmd,
    },
    /// Guest disk images: `debian`, a bootable Debian 12 VHD from Debian's packages.
    Image {
        #[command(subcommand)]
        what: debian_image::Cmd,
    },
    /// The VHD host tool (create, info, check, convert, compare).
    Vhd {
        #[command(subcommand)]
        cmd: vhd_cli::Cmd,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Debian's kernel to its initramfs marker, under Janus on each face and directly under QEMU.
    Boot,
    /// Janus vs qemu-img/qemu-io on a 1 GiB dynamic image.
    Vhd(vhd_cli::BenchArgs),
    /// Stripped image sizes per feature set.
    Size,
    /// The hypervisor's NVMe + VHD volume path vs qemu-io on a 1 GiB dynamic image.
    Disk,
    /// Each kind of exit timed by the probe in guest TSC cycles, per face and emulator; the
    /// null hypercall against CPUID.
    Exits,
}

fn main() -> ExitCode {
    exec(Cli::parse())
}

/// The VHD tool sets its own exit codes (`check` and `compare` have three); every other
/// command passes, fails, or fails with an error.
fn exec(cli: Cli) -> ExitCode {
    match cli.cmd {
        Cmd::Vhd { cmd } => vhd_cli::run(cmd),
        Cmd::Bench {
            what: Bench::Vhd(args),
        } => vhd_cli::bench(&args),
        Cmd::Run {
            manifest,
            emulator,
            timeout,
            until_login,
            cmdline,
            nvme,
            build,
        } => match run(
            manifest,
            emulator,
            Watch {
                timeout,
                until_login,
            },
            cmdline,
            nvme,
            &build,
        ) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("xtask: error: {e:#}");
                ExitCode::FAILURE
            }
        },
        other => match dispatch(other) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("xtask: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn dispatch(cmd: Cmd) -> Result<bool> {
    match cmd {
        Cmd::Build(opts) => {
            image::build(&opts)?;
            Ok(true)
        }
        Cmd::Run { .. } => unreachable!("`exec` runs it for its exit code"),
        Cmd::Test(opts) => testsuite::test(&opts),
        Cmd::Iso {
            manifest,
            output,
            cmdline,
            build,
        } => {
            let images = image::build(&build)?;
            let staged = stage(manifest, &build)?;
            let out = output.unwrap_or_else(|| out_dir().join("janus.iso"));
            iso::make(
                &images.boot,
                &images.kernel,
                &staged.modules,
                &cmdline,
                &out_dir().join("iso"),
                &out,
            )?;
            println!(
                "iso: {} ({} bytes)",
                shown(&out),
                std::fs::metadata(&out)?.len()
            );
            Ok(true)
        }
        Cmd::Pxe { readme: true, .. } => {
            print!("{}", pxe::readme_section()?);
            Ok(true)
        }
        Cmd::Pxe {
            dir,
            manifest,
            cmdline,
            readme: false,
            build,
        } => {
            let dir = dir.ok_or_else(|| anyhow::anyhow!("no DIR given"))?;
            let images = image::build(&build)?;
            let staged = stage(manifest, &build)?;
            pxe::run(
                &dir,
                &images,
                &staged,
                &cmdline,
                512 + staged.guest_memory_mib,
                2.max(staged.max_vcpus),
            )?;
            Ok(true)
        }
        Cmd::Fuzz {
            target: Some(t),
            ops,
            seed,
            ..
        } if t == "guest" => fuzz::guest(ops, seed),
        Cmd::Fuzz { target, time, .. } => fuzz::run(target.as_deref(), time),
        Cmd::Bench { what: Bench::Size } => bench_size(),
        Cmd::Bench { what: Bench::Boot } => bench_boot::bench(),
        Cmd::Bench { what: Bench::Disk } => bench_disk::bench(),
        Cmd::Bench { what: Bench::Exits } => bench_exits::bench(),
        Cmd::LinuxGuest { cmd } => linux_guest::run(cmd),
        Cmd::Ovf { cmd } => ovf::run(cmd),
        Cmd::Image { what } => debian_image::run(what),
        Cmd::Vhd { .. }
        | Cmd::Bench {
            what: Bench::Vhd(_),
        } => unreachable!("handled before dispatch"),
    }
}

fn stage(manifest: Option<PathBuf>, build: &BuildOpts) -> Result<manifest::Staged> {
    // JANUS_STAGE lets runs in parallel (several worktrees' engineers, CI shards) stage apart.
    let stage =
        std::env::var_os("JANUS_STAGE").map_or_else(|| out_dir().join("run"), PathBuf::from);
    stage_in(manifest, build, &stage)
}

/// Stages `manifest` into `stage`. An OVF descriptor or package is translated first into the
/// manifest of the same VMs (beside `stage`, see `ovf`).
fn stage_in(
    manifest: Option<PathBuf>,
    build: &BuildOpts,
    stage: &std::path::Path,
) -> Result<manifest::Staged> {
    let path = manifest.unwrap_or_else(|| root().join(DEFAULT_MANIFEST));
    let from_ovf = ovf::is_package(&path).then(|| path.clone());
    let path = match &from_ovf {
        Some(p) => ovf::translate(p, stage)?,
        None => path,
    };
    // The Debian guest is fetched, the demo's disks made and the test guests built when a
    // manifest names them.
    if let Ok(text) = std::fs::read_to_string(&path) {
        linux_guest::prepare_for(&text)?;
        demo::prepare_for(&text)?;
    }
    // The test guests are built from source when a manifest names one.
    if std::fs::read_to_string(&path).is_ok_and(|t| t.contains("guests/probe")) {
        image::build_guest("probe", build.release)?;
    }
    let staged = manifest::load(&path, stage);
    match from_ovf {
        Some(p) => staged.with_context(|| ovf::context(&p)),
        None => staged,
    }
}

/// How `run` follows the VMs: `--timeout`, `--until-login`.
struct Watch {
    timeout: Option<u64>,
    until_login: bool,
}

/// A run nobody watches ends by itself within this, unless `--timeout` says otherwise.
const UNATTENDED_TIMEOUT_S: u64 = 600;

fn run(
    manifest: Option<PathBuf>,
    emulator: Emulator,
    watch: Watch,
    cmdline: String,
    nvme: Vec<PathBuf>,
    build: &BuildOpts,
) -> Result<u8> {
    use std::io::IsTerminal;
    let interactive = !watch.until_login && std::io::stdin().is_terminal();
    if interactive && emulator != Emulator::Qemu {
        anyhow::bail!("typing into the VMs needs --emulator qemu (or run with --until-login)");
    }
    let images = image::build(build)?;
    let staged = stage(manifest, build)?;
    for vm in &staged.manifest.vms {
        println!(
            "xtask: vm {} ({}, {} MiB, {} vCPU)",
            vm.name,
            vm.personality.as_str(),
            vm.memory_mib,
            vm.vcpus
        );
    }
    let names: Vec<String> = staged
        .manifest
        .vms
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    let input = if interactive {
        println!(
            "xtask: typing goes to one VM's console at a time: Ctrl-] n moves it to the next VM, \
             Ctrl-] q shuts every VM down, Ctrl-] ? lists the keys"
        );
        emulator::Input::Terminal
    } else {
        emulator::Input::Typist(Box::new(typist::UntilLogin::new(names.clone())))
    };
    let timeout = match (watch.timeout, interactive) {
        (Some(s), _) => Duration::from_secs(s),
        // Someone is at the keyboard: the run lasts until they end it.
        (None, true) => Duration::from_secs(u64::from(u32::MAX)),
        (None, false) => Duration::from_secs(UNATTENDED_TIMEOUT_S),
    };
    let spec = RunSpec {
        cmdline,
        timeout,
        echo: true,
        nvme: nvme.into_iter().map(Into::into).collect(),
        input,
        ..RunSpec::staged(&images, &staged)
    };
    let outcome = staged.disks.run(emulator, spec)?;
    for (vm, class) in outcome.vm_ends() {
        println!("xtask: vm {vm} ended: {class}");
    }
    let mut code = outcome.exit_code();
    if !interactive {
        let faces: Vec<&str> = staged
            .manifest
            .vms
            .iter()
            .map(|v| v.personality.as_str())
            .collect();
        for ((vm, secs), face) in demo::login_times(&outcome, &names)?.into_iter().zip(faces) {
            match secs {
                Some(s) => println!("login {vm} ({face}): {s:.1} s"),
                None if watch.until_login => {
                    println!("xtask: vm {vm} ({face}) never showed a login prompt");
                    if code == emulator::exit_code::PASS {
                        code = emulator::exit_code::VM_ERROR;
                    }
                }
                None => {}
            }
        }
    }
    match &outcome.verdict {
        Ok(()) => println!("xtask: run passed"),
        Err(why) => println!("xtask: run FAILED (exit code {code}): {why}"),
    }
    Ok(code)
}

/// Stripped image bytes per feature set, built in this invocation.
fn bench_size() -> Result<bool> {
    let sets: [(&str, Vec<String>, bool); 4] = [
        ("default", vec![], false),
        ("xen", vec!["xen".into()], true),
        ("hyperv", vec!["hyperv".into()], true),
        ("none", vec![], true),
    ];
    let mut default_size = 0;
    for (name, features, no_default) in sets {
        let opts = BuildOpts {
            release: true,
            features,
            no_default_features: no_default,
        };
        let images = image::build_in(&opts, &out_dir().join(format!("size-{name}")))?;
        let stripped = out_dir().join(format!("janus-kernel.{name}.stripped"));
        util::run(
            std::process::Command::new("objcopy")
                .arg("--strip-all")
                .arg(&images.kernel)
                .arg(&stripped),
        )?;
        let kernel = std::fs::metadata(&stripped)?.len();
        let boot = std::fs::metadata(&images.boot)?.len();
        println!("size {name}: kernel {kernel} B stripped, janus-boot {boot} B");
        if name == "default" {
            default_size = kernel + boot;
        }
    }
    println!("size janus/default: {default_size}");
    Ok(true)
}
