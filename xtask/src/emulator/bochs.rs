//! Bochs, headless, booting a GRUB ISO: `corei7_skylake_x` for VMX+EPT+unrestricted guest,
//! `ryzen` for SVM with NRIP save. Debian's Bochs has its debugger built in, so it is driven
//! by an rc file (`c` then `quit`): the kernel's magic breakpoint ends the run with status 0.

use super::{Emulator, Outcome, RunSpec, judge, new_lines};
use crate::defmt_rx::{Decoder, split_frames};
use crate::prereq;
use crate::util::{out_dir, shown};
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn model(emulator: Emulator) -> &'static str {
    match emulator {
        Emulator::BochsSvm => "ryzen",
        _ => "corei7_skylake_x",
    }
}

fn bochsrc(emulator: Emulator, spec: &RunSpec, dir: &Path, iso: &Path) -> String {
    format!(
        "megs: {megs}\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/vgabios/vgabios.bin\n\
         cpu: model={model}, count={cpus}, ips=100000000, reset_on_triple_fault=0\n\
         ata0-master: type=cdrom, path={iso}, status=inserted\n\
         boot: cdrom\n\
         display_library: rfb, options=\"timeout=0\"\n\
         com1: enabled=1, mode=file, dev={com1}\n\
         com2: enabled=1, mode=file, dev={com2}\n\
         log: {log}\n\
         panic: action=fatal\nerror: action=report\ninfo: action=report\ndebug: action=ignore\n\
         clock: sync=none, time0=local\n\
         mouse: enabled=0\nport_e9_hack: enabled=1\nspeaker: enabled=0\n\
         sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
         magic_break: enabled=1\n",
        megs = spec.memory_mib,
        model = model(emulator),
        cpus = spec.cpus,
        iso = iso.display(),
        com1 = dir.join("com1.txt").display(),
        com2 = dir.join("com2.bin").display(),
        log = dir.join("bochs.log").display(),
    )
}

pub fn run(emulator: Emulator, spec: &RunSpec) -> Result<Outcome> {
    if !spec.nvme.is_empty() {
        anyhow::bail!("Bochs has no NVMe controller: NVMe disks need the QEMU runner");
    }
    if spec.via != super::Via::Loader {
        anyhow::bail!("Bochs boots from a GRUB ISO: PXE boots need the QEMU runner");
    }
    prereq::tools(&[&prereq::BOCHS])?;
    let dir = out_dir().join(match emulator {
        Emulator::BochsSvm => "bochs-svm",
        _ => "bochs",
    });
    std::fs::create_dir_all(&dir)?;
    let iso = dir.join("janus.iso");
    crate::iso::make(
        &spec.boot,
        &spec.kernel,
        &spec.modules,
        &spec.cmdline,
        &dir.join("iso"),
        &iso,
    )?;
    for f in ["com1.txt", "com2.bin", "bochs.log"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let rc = dir.join("bochsrc.txt");
    std::fs::write(&rc, bochsrc(emulator, spec, &dir, &iso))?;
    let cont = dir.join("continue.rc");
    std::fs::write(&cont, "c\nquit\n")?;
    if spec.echo {
        eprintln!(
            "xtask: bochs -q -f {} -rc {} ({} model)",
            shown(&rc),
            shown(&cont),
            model(emulator)
        );
    }
    let console = File::create(dir.join("bochs.out"))?;
    let mut child = Command::new(prereq::BOCHS.binary)
        .arg("-q")
        .arg("-f")
        .arg(&rc)
        .arg("-rc")
        .arg(&cont)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("cannot start bochs")?;

    let done = Arc::new(AtomicBool::new(false));
    let tail = {
        let done = Arc::clone(&done);
        let path = dir.join("com1.txt");
        let echo = spec.echo;
        std::thread::spawn(move || tail_file(&path, &done, echo))
    };
    let deadline = Instant::now() + spec.timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    done.store(true, Ordering::Relaxed);
    let com1 = tail.join().unwrap_or_default();

    let defmt = new_lines();
    let com2 = std::fs::read(dir.join("com2.bin")).unwrap_or_default();
    Decoder::for_elf(&spec.kernel)?.pump(com2.as_slice(), &defmt, spec.echo)?;
    let defmt = defmt.lock().map(|l| l.clone()).unwrap_or_default();
    let (frames, _) = split_frames(&com2);
    if frames.len() != defmt.len() && spec.echo {
        eprintln!(
            "xtask: COM2 held {} frames, {} decoded",
            frames.len(),
            defmt.len()
        );
    }

    let exit = match status.map(|s| s.code()) {
        None => Err(format!("timeout after {} s", spec.timeout.as_secs())),
        Some(Some(0)) => Ok(()),
        Some(code) => Err(format!(
            "Bochs exited with {code:?} (shutdown port or triple fault); see {}",
            shown(&dir.join("bochs.out"))
        )),
    };
    let verdict = judge(exit, &com1);
    // Bochs runs on its own emulated clock: arrival times say nothing about guest time.
    let lines = {
        let mut clock = crate::linux_guest::LineClock::default();
        let mut l = clock.feed(com1.as_bytes(), Duration::ZERO);
        l.extend(clock.finish(Duration::ZERO));
        l
    };
    Ok(Outcome {
        verdict,
        timed_out: status.is_none(),
        com1,
        lines,
        defmt,
    })
}

/// Follows a file Bochs appends to, echoing new bytes; returns everything read.
fn tail_file(path: &Path, done: &AtomicBool, echo: bool) -> String {
    let mut all = Vec::new();
    let mut pos = 0u64;
    loop {
        let finished = done.load(Ordering::Relaxed);
        if let Ok(mut f) = File::open(path)
            && f.seek(SeekFrom::Start(pos)).is_ok()
        {
            let mut chunk = Vec::new();
            if f.read_to_end(&mut chunk).is_ok() && !chunk.is_empty() {
                pos += chunk.len() as u64;
                if echo {
                    let _ = std::io::stdout().write_all(&chunk);
                    let _ = std::io::stdout().flush();
                }
                all.extend(chunk);
            }
        }
        if finished {
            return String::from_utf8_lossy(&all).into_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
