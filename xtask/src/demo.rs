//! The default demo (manifests/default.toml): the Debian image on both faces, each VM on a
//! differencing child of it under target/janus/demo/, and the time each VM took to its login
//! prompt on the hypervisor's clock.

use crate::emulator::Outcome;
use crate::util::{out_dir, shown};
use anyhow::{Result, anyhow};
use std::path::PathBuf;

/// Where the demo's children live, as manifests name it.
const DIR: &str = "target/janus/demo/";

/// The demo disks `manifest` (its text) names.
fn named(manifest: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut rest = manifest;
    while let Some(at) = rest.find(DIR) {
        let tail = &rest[at + DIR.len()..];
        let end = tail.find(['"', '\'', '\n']).unwrap_or(tail.len());
        let file = &tail[..end];
        if file.ends_with(".vhd") && !file.contains('/') {
            let path = out_dir().join("demo").join(file);
            if !out.contains(&path) {
                out.push(path);
            }
        }
        rest = tail;
    }
    out
}

/// Makes each demo disk the manifest names that is missing, or no longer a child of the
/// current Debian image (rebuilt since), as a new child of the image.
pub fn prepare_for(manifest: &str) -> Result<()> {
    let disks = named(manifest);
    if disks.is_empty() {
        return Ok(());
    }
    let base = crate::debian_image::ensure_default()?;
    std::fs::create_dir_all(out_dir().join("demo"))?;
    for disk in disks {
        if disk.exists() {
            match vhd::fs::open(&disk, vhd::OpenOptions::read_only()) {
                Ok(_) => continue,
                Err(e) => println!("xtask: {} ({e}): made anew from the image", shown(&disk)),
            }
            std::fs::remove_file(&disk)?;
        }
        vhd::fs::create_differencing(&disk, &base, None, &vhd::fs::create_options())
            .map_err(|e| anyhow!("{}: {e}", shown(&disk)))?;
        println!(
            "xtask: {}: a differencing child of {}",
            shown(&disk),
            shown(&base)
        );
    }
    Ok(())
}

/// Seconds from the VMs' start to each VM's login prompt, on the hypervisor's clock: the stamp
/// it gave the VM's first console line that ends in `login:`, less its `vms-start` record.
/// `None` for a VM that never showed one.
pub fn login_times(outcome: &Outcome, vms: &[String]) -> Result<Vec<(String, Option<f64>)>> {
    let start = outcome.numbers("vms-start").first().copied();
    let stamps = outcome.console_stamps();
    let mut out = Vec::new();
    for vm in vms {
        let timed = crate::testsuite::hypervisor_timed(&outcome.lines, vm, stamps.get(vm))
            .map_err(anyhow::Error::msg)?;
        let prefix = format!("[{vm}] ");
        let at = timed
            .iter()
            .find(|l| {
                l.text
                    .strip_prefix(&prefix)
                    .is_some_and(crate::typist::is_login_prompt)
            })
            .and_then(|l| {
                let ns = l.at.as_nanos() as u64;
                Some(ns.checked_sub(start?)? as f64 / 1e9)
            });
        out.push((vm.clone(), at));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_disks_are_read_from_the_manifest() {
        let m = "path = \"../target/janus/demo/a.vhd\"\n\
                 path = \"../target/janus/demo/b.vhd\"\n\
                 path = \"../target/janus/demo/a.vhd\"\n\
                 path = \"../target/janus/demo/sub/c.vhd\"\n\
                 path = \"../target/janus/debian.vhd\"\n";
        let got: Vec<String> = named(m)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["a.vhd", "b.vhd"]);
        assert!(named("kernel = \"x\"").is_empty());
    }

    #[test]
    fn login_times_come_from_the_hypervisors_stamps() {
        let tl = |t: u64, s: &str| crate::linux_guest::TimedLine {
            at: std::time::Duration::from_millis(t),
            text: s.into(),
        };
        let outcome = Outcome {
            verdict: Ok(()),
            timed_out: false,
            com1: String::new(),
            lines: vec![
                tl(1, "[x] Debian GNU/Linux 12"),
                tl(2, "[x] janus-debian login: "),
                // What y prints counts for y alone, whatever it says.
                tl(3, "[y] x-host login: "),
                tl(4, "[z] Last login: Fri Dec  4 03:40:00 UTC 2026 on hvc0"),
            ],
            defmt: [
                "info vms-start 1000000000",
                "info con x 0 2000000000",
                "info con x 1 4500000000",
                "info con y 0 5000000000",
                "info con z 0 6000000000",
            ]
            .map(String::from)
            .to_vec(),
        };
        let t = login_times(&outcome, &["x".into(), "y".into(), "z".into()]).unwrap();
        assert_eq!(
            t,
            [
                ("x".to_string(), Some(3.5)),
                ("y".to_string(), Some(4.0)),
                ("z".to_string(), None)
            ]
        );
    }
}
