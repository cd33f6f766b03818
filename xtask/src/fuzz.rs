//! `cargo xtask fuzz [TARGET] [--time S]`: the project's libFuzzer targets (cargo-fuzz, on a
//! nightly toolchain), each for a bounded time, through the scripts CI runs, and how many
//! executions each survived. The same fuzz bodies run on stable, seeded, in `cargo xtask test`.

use crate::util::root;
use anyhow::{Context, Result, bail};
use std::process::Command;

/// (name, script, libFuzzer target).
pub const TARGETS: &[(&str, &str, &str)] = &[
    ("vhd", "fuzz/run.sh", "open_read_write"),
    ("xen-dispatch", "abi-xen/fuzz/run.sh", "dispatch"),
    ("xen-xenstore", "abi-xen/fuzz/run.sh", "xenstore"),
    ("xen-blkif", "abi-xen/fuzz/run.sh", "blkif"),
    ("hyperv-dispatch", "abi-hyperv/fuzz/run.sh", "dispatch"),
];

/// libFuzzer's closing "Done N runs in S second(s)".
pub fn executions(output: &str) -> Option<u64> {
    output.lines().rev().find_map(|l| {
        l.split("Done ")
            .nth(1)?
            .split(" runs")
            .next()?
            .trim()
            .parse()
            .ok()
    })
}

pub fn run(target: Option<&str>, secs: u32) -> Result<bool> {
    let chosen: Vec<_> = TARGETS
        .iter()
        .filter(|(n, ..)| target.is_none_or(|t| t == *n))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
        bail!(
            "no fuzz target '{}'; targets: {}",
            target.unwrap_or(""),
            names.join(", ")
        );
    }
    let mut ok = true;
    for (name, script, inner) in chosen {
        // The vhd script has one target and takes no name.
        let mut cmd = Command::new("sh");
        cmd.arg(root().join(script)).arg(secs.to_string());
        if !script.starts_with("fuzz/") {
            cmd.arg(inner);
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {script}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match (out.status.success(), executions(&text)) {
            (true, Some(n)) => println!("fuzz {name}: {n} executions survived in {secs} s"),
            (true, None) => println!("fuzz {name}: finished (no execution count reported)"),
            (false, _) => {
                ok = false;
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!(
                    "fuzz {name}: FAILED ({})\n{}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_execution_count_is_read_from_libfuzzer() {
        let out = "#2 INITED\n#1000 pulse\nDone 123456 runs in 31 second(s)\n";
        assert_eq!(executions(out), Some(123456));
        assert_eq!(executions("crash"), None);
    }

    #[test]
    fn every_target_has_its_script() {
        for (name, script, inner) in TARGETS {
            let text = std::fs::read_to_string(root().join(script)).unwrap();
            assert!(
                script.starts_with("fuzz/") || text.contains("[TARGET]") || *inner == "dispatch",
                "{name}: {script} takes no target name"
            );
        }
    }
}
