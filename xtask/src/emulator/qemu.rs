//! QEMU TCG with `-cpu max` (SVM + NPT). COM1 is stdio, COM2 a UNIX socket that xtask
//! connects to before the guest starts (`wait=on`), so no defmt frame is lost.

use super::{Input, Outcome, RunSpec, Via, judge, new_lines};
use crate::defmt_rx::Decoder;
use crate::prereq;
use crate::util::describe;
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASS_STATUS: i32 = 33;
const FAIL_STATUS: i32 = 35;

/// What `-accel` gets unless `JANUS_QEMU_ACCEL` replaces it.
///
/// One thread for all vCPUs: with QEMU's multi-threaded TCG (7.2 and 10.0 alike) a nested
/// guest on vCPU 0 now and then finds every page walk failing right after VMRUN or #VMEXIT
/// while its tables and control registers are intact (README, Known issues); with one
/// thread it never did. `JANUS_QEMU_ACCEL=tcg` brings the parallel vCPUs back, and
/// `tcg,tb-size=8` (a tiny translation cache, flushed and kicking every vCPU all the time)
/// is the stress that exposes such races.
pub const DEFAULT_ACCEL: &str = "tcg,thread=single";

/// QEMU's `-accel` argument for every run xtask starts, Janus or the direct baseline.
pub fn accel() -> String {
    accel_from(std::env::var("JANUS_QEMU_ACCEL").ok())
}

fn accel_from(setting: Option<String>) -> String {
    setting.unwrap_or_else(|| DEFAULT_ACCEL.into())
}

/// The machine every run gets, Janus or a lab's copy of the command: the exit device is
/// how the hypervisor reports pass (33) or fail (35).
pub fn machine_args(accel: &str, memory_mib: u64, cpus: u8) -> Vec<String> {
    [
        "-machine",
        "q35",
        "-cpu",
        "max",
        "-accel",
        accel,
        "-m",
        &memory_mib.to_string(),
        "-smp",
        &cpus.to_string(),
        "-display",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]
    .map(String::from)
    .to_vec()
}

/// A network boot from `dir` through QEMU's own iPXE (the e1000's option ROM, as Debian's
/// `ipxe-qemu` ships it) over user-net TFTP: the path a lab machine takes.
pub fn pxe_args(dir: &std::path::Path) -> Result<Vec<String>> {
    let d = dir.display().to_string();
    if d.contains(',') {
        bail!("{d}: QEMU cannot take a TFTP directory with a comma");
    }
    Ok(vec![
        "-netdev".into(),
        format!("user,id=n0,tftp={d},bootfile={}", crate::pxe::SCRIPT),
        "-device".into(),
        "e1000,netdev=n0".into(),
        "-boot".into(),
        "n".into(),
    ])
}

fn loader_args(spec: &RunSpec) -> Result<Vec<std::ffi::OsString>> {
    let mut initrd = spec.kernel.display().to_string();
    for (path, _) in &spec.modules {
        let p = path.display().to_string();
        if p.contains(',') {
            bail!("{p}: QEMU cannot take a module path with a comma");
        }
        initrd.push(',');
        initrd.push_str(&p);
    }
    Ok(vec![
        "-kernel".into(),
        spec.boot.clone().into(),
        "-initrd".into(),
        initrd.into(),
        "-append".into(),
        spec.cmdline.clone().into(),
    ])
}

pub fn command(spec: &RunSpec, socket: &std::path::Path) -> Result<Command> {
    let accel = accel();
    let mut cmd = Command::new(prereq::QEMU.binary);
    // JANUS_QEMU_LOG=PATH: QEMU logs each CPU reset with the CPU state, and triple faults;
    // JANUS_QEMU_LOG_ITEMS replaces the `-d` list (e.g. `int,cpu_reset` with a FIFO at PATH).
    if let Ok(path) = std::env::var("JANUS_QEMU_LOG") {
        let items = std::env::var("JANUS_QEMU_LOG_ITEMS")
            .unwrap_or_else(|_| "cpu_reset,guest_errors".into());
        cmd.args(["-d", &items, "-D", &path]);
    }
    cmd.args(machine_args(&accel, spec.memory_mib, spec.cpus))
        // JANUS_QEMU_MONITOR=PATH opens QEMU's monitor on a UNIX socket (info registers -a
        // shows where each pCPU is when a run hangs).
        .args(match std::env::var("JANUS_QEMU_MONITOR") {
            Ok(path) => [
                "-monitor".to_string(),
                format!("unix:{path},server=on,wait=off"),
            ],
            Err(_) => ["-monitor".to_string(), "none".to_string()],
        })
        .args([
            "-chardev",
            "stdio,id=com1,signal=off",
            "-serial",
            "chardev:com1",
        ])
        .arg("-chardev")
        .arg(format!(
            "socket,id=com2,path={},server=on,wait=on",
            socket.display()
        ))
        .args(["-serial", "chardev:com2"]);
    match &spec.via {
        Via::Loader => cmd.args(loader_args(spec)?),
        Via::Pxe(dir) => cmd.args(pxe_args(dir)?),
    };
    if !spec.nvme.is_empty() {
        cmd.args(["-device", "nvme,id=nvme0,serial=janus"]);
    }
    for (k, ns) in spec.nvme.iter().enumerate() {
        let f = ns.file.display().to_string();
        if f.contains(',') {
            bail!("{f}: QEMU cannot take a drive path with a comma");
        }
        cmd.arg("-drive")
            .arg(format!(
                "file={f},format=raw,if=none,id=nvme{k},cache=writeback{}",
                if ns.read_only { ",read-only=on" } else { "" }
            ))
            .arg("-device")
            .arg(format!("nvme-ns,drive=nvme{k},bus=nvme0,nsid={}", k + 1));
    }
    // JANUS_QEMU_ARGS appends arguments (split at whitespace), e.g. `-action shutdown=pause`
    // to keep a triple-faulted machine for inspection through JANUS_QEMU_MONITOR.
    if let Ok(extra) = std::env::var("JANUS_QEMU_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    Ok(cmd)
}

pub fn run(mut spec: RunSpec) -> Result<Outcome> {
    let input = std::mem::take(&mut spec.input);
    let spec = &spec;
    prereq::tools(&[&prereq::QEMU])?;
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let socket = std::env::temp_dir().join(format!("janus-defmt-{}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let mut cmd = command(spec, &socket)?;
    if spec.echo {
        eprintln!("xtask: {}", describe(&cmd));
    }
    // QEMU's stdio backend puts a terminal in raw mode and restores it when it exits; a QEMU
    // killed at the time limit cannot, so xtask restores what it saved.
    let terminal = matches!(input, Input::Terminal);
    let saved_tty = terminal.then(save_terminal).flatten();
    let mut child = cmd
        .stdin(match input {
            Input::None => Stdio::null(),
            Input::Terminal => Stdio::inherit(),
            Input::Typist(_) => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let mut typist = match input {
        Input::Typist(t) => Some((t, child.stdin.take().context("no QEMU stdin")?)),
        _ => None,
    };

    let com1 = Arc::new(Mutex::new(Vec::<u8>::new()));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().context("no QEMU stdout")?;
    let echo = spec.echo;
    let com1_sink = Arc::clone(&com1);
    let lines_sink = Arc::clone(&lines);
    let started = Instant::now();
    let com1_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut clock = crate::linux_guest::LineClock::default();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let timed = clock.feed(&buf[..n], started.elapsed());
            if echo {
                let _ = std::io::stdout().write_all(&buf[..n]);
                let _ = std::io::stdout().flush();
            }
            if let Ok(mut c) = com1_sink.lock() {
                c.extend_from_slice(&buf[..n]);
            }
            if let Ok(mut l) = lines_sink.lock() {
                l.extend(timed);
            }
            if let Some((t, keys)) = typist.as_mut() {
                let typed = t.seen(&buf[..n]);
                if !typed.is_empty() {
                    let _ = keys.write_all(&typed);
                    let _ = keys.flush();
                }
            }
        }
        if let (Some(last), Ok(mut l)) = (clock.finish(started.elapsed()), lines_sink.lock()) {
            l.push(last);
        }
    });
    let mut stderr = child.stderr.take().context("no QEMU stderr")?;
    let stderr_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let defmt_lines = new_lines();
    let decoder = Decoder::for_elf(&spec.kernel)?;
    let connect_deadline = Instant::now() + Duration::from_secs(15);
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(s) => break Some(s),
            Err(_) if Instant::now() < connect_deadline && child.try_wait()?.is_none() => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => break None,
        }
    };
    // At the keyboard, the log channel would write over the console being typed on.
    let defmt_echo = echo && !terminal;
    let defmt_thread = stream.map(|s| {
        let lines = Arc::clone(&defmt_lines);
        std::thread::spawn(move || decoder.pump(s, &lines, defmt_echo))
    });

    let deadline = Instant::now() + spec.timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let _ = com1_thread.join();
    if let Some(saved) = saved_tty {
        restore_terminal(&saved);
    }
    let qemu_err = stderr_thread.join().unwrap_or_default();
    if let Some(t) = defmt_thread
        && let Ok(Err(e)) = t.join()
    {
        eprintln!("xtask: defmt decoding stopped: {e:#}");
    }
    let _ = std::fs::remove_file(&socket);

    let com1 =
        String::from_utf8_lossy(&com1.lock().map(|c| c.clone()).unwrap_or_default()).into_owned();
    let exit = match status.map(|s| s.code()) {
        None => Err(format!("timeout after {} s", spec.timeout.as_secs())),
        Some(Some(PASS_STATUS)) => Ok(()),
        Some(Some(FAIL_STATUS)) => Err("the hypervisor reported failure (exit status 35)".into()),
        Some(Some(code)) => Err(format!(
            "QEMU exited with status {code} (a triple fault or reset ends the run with 0){}",
            if qemu_err.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", qemu_err.trim())
            }
        )),
        Some(None) => Err("QEMU was killed by a signal".into()),
    };
    let verdict = judge(exit, &com1);
    let defmt = defmt_lines.lock().map(|l| l.clone()).unwrap_or_default();
    let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(Outcome {
        verdict,
        timed_out: status.is_none(),
        com1,
        lines,
        defmt,
    })
}

/// The terminal's settings (`stty -g`), when standard input is one.
fn save_terminal() -> Option<String> {
    let out = Command::new("stty")
        .arg("-g")
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn restore_terminal(saved: &str) {
    let _ = Command::new("stty")
        .arg(saved)
        .stdin(Stdio::inherit())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn single_threaded_tcg_unless_told_otherwise() {
        assert_eq!(accel_from(None), "tcg,thread=single");
        assert_eq!(accel_from(Some("tcg".into())), "tcg");
    }

    /// The runner's command line carries the accelerator `accel` chooses.
    #[test]
    fn command_uses_the_chosen_accelerator() {
        let spec = RunSpec {
            via: super::Via::Loader,
            boot: "boot".into(),
            kernel: "kernel".into(),
            modules: vec![("m".into(), "m".into())],
            cmdline: String::new(),
            timeout: Duration::from_secs(1),
            memory_mib: 64,
            cpus: 2,
            echo: false,
            nvme: vec![],
            input: Default::default(),
        };
        let cmd = command(&spec, std::path::Path::new("s.sock")).unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = args
            .iter()
            .position(|a| a == "-accel")
            .expect("-accel given");
        assert_eq!(args[at + 1], accel());
        assert_eq!(args.iter().filter(|a| *a == "-accel").count(), 1);
        assert!(!args.iter().any(|a| a.starts_with("nvme")));
    }

    /// A PXE boot hands QEMU no kernel: its iPXE fetches the script from the directory.
    #[test]
    fn a_pxe_boot_goes_through_the_network_rom() {
        let spec = RunSpec {
            via: Via::Pxe("tftp/dir".into()),
            boot: "boot".into(),
            kernel: "kernel".into(),
            modules: vec![("m".into(), "m".into())],
            cmdline: String::new(),
            timeout: Duration::from_secs(1),
            memory_mib: 64,
            cpus: 2,
            echo: false,
            nvme: vec![],
            input: Default::default(),
        };
        let args: Vec<String> = command(&spec, std::path::Path::new("s.sock"))
            .unwrap()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.iter().any(|a| a == "-kernel" || a == "-initrd"));
        let at = args.iter().position(|a| a == "-netdev").unwrap();
        assert_eq!(
            args[at..at + 6],
            [
                "-netdev",
                "user,id=n0,tftp=tftp/dir,bootfile=boot.ipxe",
                "-device",
                "e1000,netdev=n0",
                "-boot",
                "n"
            ]
        );
    }

    /// Each file is a namespace of one controller, numbered from 1 in order.
    #[test]
    fn nvme_files_become_namespaces() {
        let spec = RunSpec {
            via: super::Via::Loader,
            boot: "boot".into(),
            kernel: "kernel".into(),
            modules: vec![],
            cmdline: String::new(),
            timeout: Duration::from_secs(1),
            memory_mib: 64,
            cpus: 2,
            echo: false,
            nvme: vec![
                PathBuf::from("a.img").into(),
                crate::emulator::Namespace {
                    file: "b.img".into(),
                    read_only: true,
                },
            ],
            input: Default::default(),
        };
        let args: Vec<String> = command(&spec, std::path::Path::new("s.sock"))
            .unwrap()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let tail = &args[args
            .iter()
            .position(|a| a == "nvme,id=nvme0,serial=janus")
            .unwrap()..];
        assert_eq!(
            tail[..9],
            [
                "nvme,id=nvme0,serial=janus",
                "-drive",
                "file=a.img,format=raw,if=none,id=nvme0,cache=writeback",
                "-device",
                "nvme-ns,drive=nvme0,bus=nvme0,nsid=1",
                "-drive",
                "file=b.img,format=raw,if=none,id=nvme1,cache=writeback,read-only=on",
                "-device",
                "nvme-ns,drive=nvme1,bus=nvme0,nsid=2",
            ]
        );
        let mut bad = spec;
        bad.nvme = vec![PathBuf::from("a,b.img").into()];
        assert!(command(&bad, std::path::Path::new("s.sock")).is_err());
    }
}
