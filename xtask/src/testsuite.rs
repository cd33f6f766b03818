//! `cargo xtask test`: host unit tests, then boots under QEMU and Bochs judged by the run
//! contract. Ends with one `N passed, M failed` line; exits non-zero on any failure.

use crate::emulator::{self, Emulator, Outcome, RunSpec};
use crate::image::{self, BuildOpts, Images};
use crate::util::{out_dir, root, run};
use crate::{manifest, prereq};
use anyhow::Result;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default, clap::Args)]
pub struct TestOpts {
    /// Skip the Bochs boots (they need a few seconds each).
    #[arg(long)]
    pub no_bochs: bool,
    /// Skip host unit tests.
    #[arg(long)]
    pub no_unit: bool,
    /// Only boot cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Add a case that must fail, to show that the suite turns red.
    #[arg(long)]
    pub inject_failure: bool,
}

mod cases;

use cases::{BANNER, Case, PROBE_HYPERV_OK, PROBE_OK, PROBE_XEN_OK, cases};

pub fn test(opts: &TestOpts) -> Result<bool> {
    let mut passed = 0;
    let mut failed: Vec<String> = Vec::new();

    prereq::rust_target()?;
    // The VHD interop tests compare against qemu-img; the boot tests need the emulators.
    prereq::tools(&[&prereq::QEMU_IMG, &prereq::QEMU])?;
    // Which QEMU and which TCG mode the results below come from.
    if let Ok(out) = Command::new(prereq::QEMU.binary).arg("--version").output() {
        let version = String::from_utf8_lossy(&out.stdout);
        println!(
            "xtask: {}, -accel {}",
            version.lines().next().unwrap_or("QEMU (no version line)"),
            crate::emulator::qemu::accel()
        );
    }
    if !opts.no_unit {
        let started = Instant::now();
        let ok = run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(root())
                .args(["test", "--workspace", "--quiet"]),
        )
        .is_ok();
        report(
            "host-unit-tests",
            ok,
            started,
            if ok { "" } else { "cargo test failed" },
        );
        if ok {
            passed += 1
        } else {
            failed.push("host-unit-tests".into())
        }
    }

    let images = image::build(&BuildOpts::default())?;
    image::build_guest("probe", false)?;
    let cases = cases(opts.inject_failure);
    let wanted = |c: &Case| {
        !(opts.no_bochs && c.emulator != Emulator::Qemu)
            && opts
                .filter
                .as_ref()
                .is_none_or(|f| c.name.contains(f.as_str()))
    };
    // A case's own manifest (made by its setup) may not exist yet; such cases say "linux".
    let uses_linux = |c: &Case| {
        c.name.contains("-linux")
            || std::fs::read_to_string(root().join(c.manifest))
                .is_ok_and(|m| m.contains("target/linux/"))
    };
    if cases.iter().any(|c| wanted(c) && uses_linux(c)) {
        crate::linux_guest::prepare()?;
    }
    if cases
        .iter()
        .any(|c| wanted(c) && c.manifest.contains("-generic"))
    {
        crate::linux_guest::prepare_flavour(crate::linux_guest::Flavour::Generic)?;
    }
    for case in cases {
        if opts.no_bochs && case.emulator != Emulator::Qemu {
            continue;
        }
        if opts
            .filter
            .as_ref()
            .is_some_and(|f| !case.name.contains(f.as_str()))
        {
            continue;
        }
        println!("\n=== {} ===", case.name);
        let started = Instant::now();
        let result = run_case(&case, &images);
        let why = match &result {
            Ok(()) => String::new(),
            Err(e) => e.clone(),
        };
        report(case.name, result.is_ok(), started, &why);
        if result.is_ok() {
            passed += 1
        } else {
            failed.push(case.name.to_string())
        }
    }

    // Power cuts during disk writes: ten runs of one case.
    const POWER_CUT: &str = "qemu-svm-disk-power-cut";
    if opts
        .filter
        .as_ref()
        .is_none_or(|f| POWER_CUT.contains(f.as_str()))
    {
        println!("\n=== {POWER_CUT} ===");
        let started = Instant::now();
        let r = crate::disk_cases::power_cut(&images, 10).map_err(|e| format!("{e:#}"));
        report(
            POWER_CUT,
            r.is_ok(),
            started,
            r.as_ref().err().map_or("", |e| e),
        );
        if r.is_ok() {
            passed += 1
        } else {
            failed.push(POWER_CUT.to_string())
        }
    }

    println!();
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
    }
    println!("{passed} passed, {} failed", failed.len());
    Ok(failed.is_empty())
}

fn report(name: &str, ok: bool, started: Instant, why: &str) {
    let secs = started.elapsed().as_secs_f64();
    if ok {
        println!("test {name} ... ok ({secs:.1} s)");
    } else {
        println!("test {name} ... FAILED ({secs:.1} s): {why}");
    }
}

fn run_case(case: &Case, images: &Images) -> Result<(), String> {
    let manifest = root().join(case.manifest);
    let stage = out_dir().join("test-stage").join(case.name);
    if let Some(setup) = case.setup {
        crate::disk_cases::step(setup)?;
    }
    let own;
    let images = if case.features.is_empty() {
        images
    } else {
        let opts = BuildOpts {
            release: false,
            features: case.features.iter().map(|f| f.to_string()).collect(),
            no_default_features: true,
        };
        let dir = out_dir().join(format!("image-{}", case.features.join("-")));
        own = image::build_in(&opts, &dir).map_err(|e| format!("{e:#}"))?;
        &own
    };
    // An OVF package runs as the manifest of the same VMs, as `cargo xtask run` runs it.
    let manifest = if crate::ovf::is_package(&manifest) {
        crate::ovf::translate(&manifest, &stage).map_err(|e| format!("{e:#}"))?
    } else {
        manifest
    };
    let staged = manifest::load(&manifest, &stage).map_err(|e| format!("{e:#}"))?;
    let via = if case.pxe {
        let dir = out_dir().join("test-pxe").join(case.name);
        crate::pxe::stage(images, &staged, case.cmdline, &dir).map_err(|e| format!("{e:#}"))?;
        emulator::Via::Pxe(dir)
    } else {
        emulator::Via::Loader
    };
    let nvme = if case.cmdline.contains(NVME_SELFTEST) {
        vec![nvme_scratch_disk(case.name).map_err(|e| format!("{e:#}"))?]
    } else {
        vec![]
    };
    let disks = &staged.disks;
    let names: Vec<String> = staged
        .manifest
        .vms
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    let input = match case.typing {
        cases::Typing::Nobody => emulator::Input::None,
        cases::Typing::UntilLogin => {
            emulator::Input::Typist(Box::new(crate::typist::UntilLogin::new(names.clone())))
        }
        cases::Typing::LogInAndType => {
            emulator::Input::Typist(Box::new(crate::typist::LogInAndType::new(names.clone())))
        }
    };
    let spec = RunSpec {
        via,
        cmdline: case.cmdline.to_string(),
        timeout: Duration::from_secs(case.timeout_s),
        echo: true,
        nvme: nvme.iter().cloned().map(Into::into).collect(),
        input,
        ..RunSpec::staged(images, &staged)
    };
    if let Some(tamper) = case.tamper {
        // Tampered disks are read-only ones: neither grown nor trimmed, so damaging them now
        // is the same as before the run starts.
        crate::disk_cases::step(tamper)?;
    }
    let outcome = disks
        .run(case.emulator, spec)
        .map_err(|e| format!("{e:#}"))?;
    check(case, &outcome).map_err(|e| with_stops(e, &outcome))?;
    if case.typing == cases::Typing::UntilLogin {
        for (vm, secs) in
            crate::demo::login_times(&outcome, &names).map_err(|e| format!("{e:#}"))?
        {
            match secs {
                Some(s) => println!("login {vm}: {s:.1} s"),
                None => return Err(format!("vm {vm} never showed a login prompt")),
            }
        }
    }
    if let Some(verify) = case.verify {
        crate::disk_cases::step(verify)?;
    }
    if let Some(disk) = nvme.first() {
        check_nvme_disk(&std::fs::read(disk).map_err(|e| format!("{e}"))?)?;
    }
    // The boots that follow, each judged as a case of its own.
    for next in &case.then {
        println!("\n--- {} ---", next.name);
        run_case(next, images).map_err(|e| format!("{}: {e}", next.name))?;
    }
    Ok(())
}

/// The hypervisor's NVMe self-test; a case asking for it gets a scratch disk as namespace 1.
pub(super) const NVME_SELFTEST: &str = "janus.selftest=nvme";
/// The scratch disk: 8 MiB of zeros, 512-byte LBAs (QEMU's default).
const NVME_DISK_BYTES: u64 = 8 << 20;

fn nvme_scratch_disk(case: &str) -> Result<std::path::PathBuf> {
    let dir = out_dir().join("nvme");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{case}.img"));
    let f = std::fs::File::create(&path)?;
    f.set_len(NVME_DISK_BYTES)?;
    Ok(path)
}

/// The kernel's `drivers::nvme::selftest_pattern`: the bytes its self-test writes.
fn nvme_pattern(offset: u64) -> u8 {
    ((offset >> 9) as u8).wrapping_mul(31) ^ (offset as u8) ^ 0xa5
}

/// What the self-test leaves on the disk: 64 KiB of the pattern at LBA 8, the complement
/// in LBA 3, zeros elsewhere. Checked on the host, so a write that only reached the
/// controller's cache, or landed at the wrong place, fails the case.
fn check_nvme_disk(disk: &[u8]) -> Result<(), String> {
    if disk.len() as u64 != NVME_DISK_BYTES {
        return Err(format!("the NVMe disk is {} bytes now", disk.len()));
    }
    let multi = 8 * 512..8 * 512 + 64 * 1024;
    let single = 3 * 512..4 * 512;
    for (i, &got) in disk.iter().enumerate() {
        let off = i as u64;
        let want = if multi.contains(&off) {
            nvme_pattern(off)
        } else if single.contains(&off) {
            !nvme_pattern(off)
        } else {
            0
        };
        if got != want {
            return Err(format!(
                "the NVMe disk holds {got:#04x} at byte {off:#x}, the self-test wrote {want:#04x}"
            ));
        }
    }
    Ok(())
}

/// End-of-VM findings that fail any run that otherwise passes: an EOI with nothing in
/// service (an interrupt delivered twice, or never given), and damage to tables that are
/// built once (a VM's nested tables, the host's own).
const MUST_NOT_APPEAR: &[&str] = &[
    "EOIs with no interrupt in service",
    "nested tables CHANGED",
    "host page tables CHANGED",
];

/// A failure's reason followed by how each VM ended in the hypervisor's words, so that the
/// one `FAILED` line says what happened even where only that line of a long log is kept.
fn with_stops(why: String, outcome: &Outcome) -> String {
    let stops: Vec<&str> = outcome
        .com1
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("vm ") && l.contains(": stopped: "))
        .collect();
    if stops.is_empty() {
        why
    } else {
        format!("{why} [{}]", stops.join("; "))
    }
}

fn check(case: &Case, outcome: &Outcome) -> Result<(), String> {
    match (&outcome.verdict, case.pass) {
        (Ok(()), false) => return Err("the run passed but must fail".into()),
        (Err(e), true) => return Err(e.clone()),
        _ => {}
    }
    let code = outcome.exit_code();
    if code != case.exit_code {
        return Err(format!(
            "`run` would exit with {code}, not {} ({:?})",
            case.exit_code, outcome.verdict
        ));
    }
    let ends = outcome.vm_ends();
    for (vm, class) in case.ends {
        if !ends.iter().any(|(v, c)| v == vm && c == class) {
            return Err(format!(
                "the hypervisor did not record vm {vm} ending as {class} (it recorded {ends:?})"
            ));
        }
    }
    let restarts = outcome.vm_restarts();
    for vm in case.restarts {
        if !restarts.iter().any(|(v, _)| v == vm) {
            return Err(format!("the hypervisor did not record vm {vm} restarting"));
        }
    }
    let com1: Vec<&str> = if case.pass {
        let probe = match case.manifest {
            m if m.ends_with("demo.toml") => PROBE_OK,
            "manifests/probe-xen.toml" => PROBE_XEN_OK,
            "manifests/probe-hyperv.toml" => PROBE_HYPERV_OK,
            _ => &[],
        };
        // With `janus.nosmp` the hypervisor says it runs on the BSP only.
        let one_cpu = case.cmdline.contains("janus.nosmp");
        BANNER
            .iter()
            .map(|w| match *w {
                w if one_cpu && w.starts_with("smp: ") => "smp: 1 pCPU(s) online",
                w => w,
            })
            .chain(probe.iter().copied())
            .chain(case.com1.iter().copied())
            .collect()
    } else {
        case.com1.to_vec()
    };
    for want in com1 {
        if !outcome.com1.lines().any(|l| line_says(l, want)) {
            return Err(format!("COM1 lacks {want:?}"));
        }
    }
    if let Some(bad) = case
        .absent
        .iter()
        .find(|b| outcome.com1.lines().any(|l| shows(l, b)))
    {
        return Err(format!("COM1 shows {bad:?}"));
    }
    for (text, most) in case.at_most {
        let n = outcome.com1.lines().filter(|l| shows(l, text)).count();
        if n > *most {
            return Err(format!("COM1 shows {text:?} {n} times (at most {most})"));
        }
    }
    if case.pass
        && let Some(bad) = MUST_NOT_APPEAR
            .iter()
            .find(|b| outcome.com1.lines().any(|l| line_says(l, b)))
    {
        return Err(format!("COM1 reports {bad:?}"));
    }
    for want in case.defmt {
        if !outcome.defmt.iter().any(|l| l.contains(want)) {
            return Err(format!(
                "defmt lacks {want:?} (decoded: {:?})",
                outcome.defmt
            ));
        }
    }
    if let Some(&(_, vm, least)) = cases::FAIR_SHARES.iter().find(|(c, ..)| *c == case.name) {
        fair_share(outcome, vm, least)?;
    }
    let stamps = outcome.console_stamps();
    for (vm, face) in case.linux {
        let lines = hypervisor_timed(&outcome.lines, vm, stamps.get(*vm))?;
        let report = crate::linux_guest::parse_console(&lines, Some(vm));
        let problems = report.problems(face);
        if !problems.is_empty() {
            return Err(format!(
                "Linux guest '{vm}' ({face} face): {}",
                problems.join("; ")
            ));
        }
        if let Some(r) = report.clock_ratio() {
            println!("{vm}: guest clock / hypervisor clock = {r:.4}");
        }
    }
    Ok(())
}

/// VM `vm` ran for at least `least` of the time it contended for a pCPU, as the hypervisor
/// measured it (its `vm-cpu` record; no guest can write one), and contended long enough for
/// that to mean something.
fn fair_share(outcome: &Outcome, vm: &str, least: f64) -> Result<(), String> {
    let times = outcome.cpu_times();
    let Some((_, t)) = times.iter().find(|(v, _)| v == vm) else {
        return Err(format!("the hypervisor reported no cpu time for vm {vm}"));
    };
    let share = t.share().unwrap_or(0.0);
    println!(
        "vm {vm}: {} ms on pCPUs, contended {} ms, ran {:.1}% of that (at least {:.0}% wanted)",
        t.run_us / 1000,
        t.contending_us() / 1000,
        share * 100.0,
        least * 100.0
    );
    if t.contending_us() < cases::MIN_CONTENDING_US {
        return Err(format!(
            "vm {vm} contended for a pCPU only {} ms: it did not share one",
            t.contending_us() / 1000
        ));
    }
    if share < least {
        return Err(format!(
            "vm {vm} got {:.1}% of its pCPU while contending, less than {:.0}%",
            share * 100.0,
            least * 100.0
        ));
    }
    Ok(())
}

/// Whether COM1 line `line` says `want`. A guest's lines all begin with its VM's `[name] `
/// (the hypervisor prefixes and escapes them), so an expectation that begins with `[` is met
/// only by a line that begins with it, and any other only by the hypervisor's own lines: no
/// guest can print another VM's line, or the hypervisor's.
fn line_says(line: &str, want: &str) -> bool {
    // A guest's line: its VM's prefix (which only the hypervisor writes), then the text
    // anywhere after it, as a prompt let out unfinished may come first on the line.
    if let Some((vm, text)) = want.split_once("] ").filter(|_| want.starts_with('[')) {
        line.strip_prefix(vm)
            .and_then(|l| l.strip_prefix("] "))
            .is_some_and(|l| l.contains(text))
    } else if want.starts_with('[') {
        line.starts_with(want)
    } else {
        !line.starts_with('[') && line.contains(want)
    }
}

/// What must not appear: a guest's text (no `[vm] ` in `bad`) in any VM's line or the
/// hypervisor's, else as `line_says` reads it.
fn shows(line: &str, bad: &str) -> bool {
    if bad.starts_with('[') {
        line_says(line, bad)
    } else {
        line.contains(bad)
    }
}

/// `vm`'s COM1 lines, each timed by the hypervisor's stamp of it (its clock, not the host's
/// arrival time, which load on the host can move); the other lines as they were.
pub(crate) fn hypervisor_timed(
    lines: &[crate::linux_guest::TimedLine],
    vm: &str,
    stamps: Option<&Vec<(u32, u64)>>,
) -> Result<Vec<crate::linux_guest::TimedLine>, String> {
    let prefix = format!("[{vm}] ");
    let stamps = stamps.map_or(&[][..], |s| s.as_slice());
    let mut k = 0;
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let mut l = l.clone();
        if l.text.starts_with(&prefix) {
            let Some(&(n, ns)) = stamps.get(k) else {
                return Err(format!(
                    "the hypervisor stamped {} of vm {vm}'s console lines, COM1 holds more",
                    stamps.len()
                ));
            };
            if n as usize != k {
                return Err(format!("vm {vm}'s console stamps skip from {k} to {n}"));
            }
            l.at = std::time::Duration::from_nanos(ns);
            k += 1;
        }
        out.push(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_how_each_vm_stopped() {
        let outcome = |com1: &str| crate::emulator::Outcome {
            verdict: Err("x".into()),
            timed_out: false,
            com1: com1.into(),
            lines: Vec::new(),
            defmt: Vec::new(),
        };
        let o = outcome(
            "[a] vm a: stopped: forged by the guest\nvm a: stopped: guest crash 0x1\r\nvm b: stopped: powered off\n",
        );
        assert_eq!(
            with_stops("it failed".into(), &o),
            "it failed [vm a: stopped: guest crash 0x1; vm b: stopped: powered off]"
        );
        assert_eq!(
            with_stops("it failed".into(), &outcome("no end\n")),
            "it failed"
        );
    }

    #[test]
    fn a_guest_cannot_say_what_the_hypervisor_or_another_vm_says() {
        assert!(line_says(
            "vm a: stopped: powered off",
            "vm a: stopped: powered off"
        ));
        assert!(!line_says(
            "[b] vm a: stopped: powered off",
            "vm a: stopped: powered off"
        ));
        assert!(line_says(
            "[a] probe: verdict: PASS",
            "[a] probe: verdict: PASS"
        ));
        assert!(!line_says(
            "[b] [a] probe: verdict: PASS",
            "[a] probe: verdict: PASS"
        ));
        assert!(line_says(
            "  vcpu 0: walk 0x0: L4 entry at 0x1",
            "vcpu 0: walk 0x0: L4"
        ));
        // A prompt let out unfinished may come first on a guest's line; the prefix still
        // names whose line it is.
        assert!(line_says(
            "[a] janus-debian login: JANUS-DEBIAN seen seen-xen",
            "[a] JANUS-DEBIAN seen seen-xen"
        ));
        assert!(!line_says(
            "[b] janus-debian login: [a] JANUS-DEBIAN seen",
            "[a] JANUS-DEBIAN seen"
        ));
        // What must not appear is found in guests' lines too.
        assert!(shows(
            "[a] JANUS-DEBIAN system degraded: x",
            "JANUS-DEBIAN system degraded"
        ));
        assert!(!shows("[a] flood 29", "[a] flood 2999"));
    }

    /// The cross-face case's boots are the manifests `setup_move` writes, one per face of
    /// `MOVE_FACES`, each checked on the host after it.
    #[test]
    fn the_moving_disk_boots_on_the_faces_its_manifests_name() {
        use crate::linux_disk_cases::{MOVE_FACES, move_vm};
        let case = cases::cases(false)
            .into_iter()
            .find(|c| c.name == "qemu-svm-linux-disk-moves-between-faces")
            .unwrap();
        let boots: Vec<&Case> = std::iter::once(&case).chain(&case.then).collect();
        assert_eq!(boots.len(), MOVE_FACES.len());
        for (i, (boot, face)) in boots.iter().zip(MOVE_FACES).enumerate() {
            let step = i + 1;
            assert_eq!(
                boot.manifest,
                format!("target/janus/linux-disk-moves/{step}-{}.toml", face.name())
            );
            assert_eq!(boot.linux, [(move_vm(face), face.name())]);
            assert_eq!(boot.ends, [(move_vm(face), "poweroff")]);
            assert!(boot.verify.is_some() && boot.then.is_empty() == (i > 0));
            assert_eq!(boot.setup.is_some(), step == 1);
            let done = format!(
                "[{}] JANUS-CHECK disk-move ok janus-move step {step} /dev/",
                move_vm(face)
            );
            assert!(boot.com1.iter().any(|l| l.starts_with(&done)), "{done}");
        }
    }

    #[test]
    fn the_nvme_disk_check_wants_the_pattern_in_place() {
        let mut disk = vec![0u8; NVME_DISK_BYTES as usize];
        assert!(check_nvme_disk(&disk).is_err());
        for (off, b) in disk.iter_mut().enumerate() {
            if (4096..4096 + 65536).contains(&off) {
                *b = nvme_pattern(off as u64);
            } else if (1536..2048).contains(&off) {
                *b = !nvme_pattern(off as u64);
            }
        }
        assert_eq!(check_nvme_disk(&disk), Ok(()));
        disk[4096 + 65536] = 1;
        assert!(check_nvme_disk(&disk).unwrap_err().contains("byte 0x11000"));
        assert!(check_nvme_disk(&disk[..512]).is_err());
    }

    #[test]
    fn guest_lines_take_the_hypervisors_time() {
        let tl = |t: u64, s: &str| crate::linux_guest::TimedLine {
            at: std::time::Duration::from_millis(t),
            text: s.into(),
        };
        let lines = [
            tl(5, "[x] a"),
            tl(6, "janus: y"),
            tl(7, "[x] b"),
            tl(8, "[z] c"),
        ];
        let stamps = vec![(0, 1_000), (1, 2_000)];
        let out = hypervisor_timed(&lines, "x", Some(&stamps)).unwrap();
        let at: Vec<u128> = out.iter().map(|l| l.at.as_nanos()).collect();
        assert_eq!(at, [1_000, 6_000_000, 2_000, 8_000_000]);
        assert!(hypervisor_timed(&lines, "x", Some(&vec![(0, 1)])).is_err());
        assert!(hypervisor_timed(&lines, "x", Some(&vec![(0, 1), (2, 3)])).is_err());
    }
}
