//! The guest booted by QEMU TCG itself, without Janus: proof that the kernel, vmlinux and
//! initramfs work, and the baseline that `bench boot` compares Janus against.

use super::LinuxGuest;
use super::console::{GuestReport, LineClock, TimedLine, parse_console};
use crate::prereq;
use crate::util::describe;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Kernel options shared by every boot of the test guest (the manifests use the same):
/// fewer console messages, no KASLR (repeatable placement), and a panic ends the VM.
/// guest.md measured no boot-time gain from lpj=/tsc= tweaks, so they are left out.
pub const COMMON_CMDLINE: &str = "quiet panic=-1 nokaslr";

/// How QEMU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Entry {
    /// The ELF vmlinux through its PVH note (what the Xen face does).
    Pvh,
    /// The bzImage through the Linux boot protocol (what the Hyper-V face does).
    Bzimage,
}

#[derive(Clone, Debug)]
pub struct DirectBoot {
    pub entry: Entry,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub timeout: Duration,
    /// Seconds between JANUS-CLOCK 1 and 2.
    pub clockwait_s: u32,
    /// Copy the console to stdout while it runs.
    pub echo: bool,
    /// More kernel command-line words (after the common ones).
    pub cmdline_extra: String,
    /// More QEMU arguments (a disk, say).
    pub qemu_extra: Vec<String>,
}

impl DirectBoot {
    pub fn pvh(vcpus: u8, memory_mib: u32, timeout: Duration) -> Self {
        DirectBoot {
            entry: Entry::Pvh,
            vcpus,
            memory_mib,
            timeout,
            clockwait_s: 5,
            echo: false,
            cmdline_extra: String::new(),
            qemu_extra: Vec::new(),
        }
    }

    pub fn cmdline(&self) -> String {
        let mut c = format!(
            "console=ttyS0 janus.face=none janus.vcpus={} janus.clockwait={} {COMMON_CMDLINE}",
            self.vcpus, self.clockwait_s
        );
        if !self.cmdline_extra.is_empty() {
            c.push(' ');
            c.push_str(&self.cmdline_extra);
        }
        c
    }
}

#[derive(Debug)]
pub struct BootReport {
    pub guest: GuestReport,
    /// The whole console, stamped with arrival times since QEMU was started.
    pub lines: Vec<TimedLine>,
    /// QEMU's exit status; `None` when it was killed at the timeout.
    pub exit: Option<ExitStatus>,
    /// From starting QEMU to its exit (or the kill).
    pub wall: Duration,
    pub qemu_stderr: String,
}

impl BootReport {
    /// From starting QEMU to the arrival of JANUS-GUEST-MARKER.
    pub fn time_to_marker(&self) -> Option<Duration> {
        self.guest.marker
    }

    pub fn clock_ratio(&self) -> Option<f64> {
        self.guest.clock_ratio()
    }

    /// Everything wrong with this boot; empty means it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.guest.problems("none");
        match self.exit {
            None => p.insert(
                0,
                format!(
                    "timeout: QEMU killed after {:.1} s",
                    self.wall.as_secs_f64()
                ),
            ),
            Some(s) if !s.success() => {
                p.push(format!("QEMU exited with {s}: {}", self.qemu_stderr.trim()))
            }
            Some(_) => {}
        }
        p
    }
}

/// Reads `source` to its end on a thread, stamping each line with its arrival time since
/// `start`; with `echo`, copies the bytes to stdout as they come. Works for any console
/// stream (QEMU's stdout here, Janus's COM1 in the lead's runner).
pub fn spawn_capture<R: Read + Send + 'static>(
    mut source: R,
    start: Instant,
    echo: bool,
) -> JoinHandle<Vec<TimedLine>> {
    std::thread::spawn(move || {
        let mut clock = LineClock::default();
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match source.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let at = start.elapsed();
                    if echo {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    lines.extend(clock.feed(&buf[..n], at));
                }
            }
        }
        lines.extend(clock.finish(start.elapsed()));
        lines
    })
}

/// Boots `guest` directly under QEMU's TCG and reads its console.
pub fn direct_boot(guest: &LinuxGuest, opts: &DirectBoot) -> Result<BootReport> {
    prereq::tools(&[&prereq::QEMU])?;
    let kernel = match opts.entry {
        Entry::Pvh => &guest.vmlinux,
        Entry::Bzimage => &guest.bzimage,
    };
    let mut cmd = Command::new(prereq::QEMU.binary);
    // The same accelerator as the Janus runs, so that a benchmark compares like with like.
    cmd.args(["-accel", &crate::emulator::qemu::accel(), "-cpu", "max"])
        .args(["-smp", &opts.vcpus.to_string()])
        .args(["-m", &opts.memory_mib.to_string()])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-net",
            "none",
        ])
        .args([
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(&guest.initramfs)
        .args(["-append", &opts.cmdline()])
        .args(&opts.qemu_extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", describe(&cmd)))?;
    let stdout = child.stdout.take().context("no QEMU stdout")?;
    let mut stderr = child.stderr.take().context("no QEMU stderr")?;
    let console = spawn_capture(stdout, start, opts.echo);
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = start + opts.timeout;
    let exit = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = start.elapsed();
    let lines = console.join().unwrap_or_default();
    let qemu_stderr = err_thread.join().unwrap_or_default();
    Ok(BootReport {
        guest: parse_console(&lines, None),
        lines,
        exit,
        wall,
        qemu_stderr,
    })
}
