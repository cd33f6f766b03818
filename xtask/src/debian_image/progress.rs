//! Progress while the image builds: stage lines with the seconds since the start, and
//! mmdebstrap's verbose output boiled down to its own stage lines, a tally of what apt
//! fetched, and one line per package as dpkg sets it up. Everything goes to a log file too.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

pub struct Progress {
    start: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            start: Instant::now(),
        }
    }

    pub fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// One line: `[  12s] debian: what`.
    pub fn say(&self, what: &str) {
        println!("[{:>4.0}s] debian: {what}", self.secs());
        let _ = std::io::stdout().flush();
    }
}

/// Turns mmdebstrap's lines into progress lines.
#[derive(Default)]
pub struct Filter {
    fetched: usize,
    fetched_bytes: f64,
}

impl Filter {
    /// The progress lines `line` gives, if any.
    pub fn line(&mut self, line: &str) -> Vec<String> {
        let line = line.trim_end();
        if let Some(bytes) = fetched(line) {
            self.fetched += 1;
            self.fetched_bytes += bytes;
            return vec![];
        }
        let shown = if let Some(m) = line.strip_prefix("I: ") {
            if m.starts_with("running --customize-hook") {
                Some("running the customize hook".to_string())
            } else if m.starts_with("running --") || m.starts_with("running special hook") {
                None
            } else {
                Some(m.to_string())
            }
        } else if let Some(rest) = line.strip_prefix("Setting up ") {
            // "Setting up systemd (252.39-1~deb12u2) ..."
            let rest = rest.trim_end_matches(" ...");
            Some(format!("installed {}", rest.replace(['(', ')'], "")))
        } else if let Some(m) = line.strip_prefix("janus: ") {
            Some(m.to_string())
        } else if line.starts_with("update-initramfs:")
            || line.starts_with("E: ")
            || line.starts_with("W: ")
            || line.starts_with("dpkg: error")
        {
            Some(line.to_string())
        } else {
            None
        };
        match shown {
            Some(s) => {
                let mut out = self.tally();
                out.push(s);
                out
            }
            None => vec![],
        }
    }

    /// "fetched N packages (X MB)" for the fetches since the last one, if any.
    pub fn tally(&mut self) -> Vec<String> {
        if self.fetched == 0 {
            return vec![];
        }
        let s = format!(
            "fetched {} package{} ({:.1} MB)",
            self.fetched,
            if self.fetched == 1 { "" } else { "s" },
            self.fetched_bytes / 1e6
        );
        self.fetched = 0;
        self.fetched_bytes = 0.0;
        vec![s]
    }
}

/// An apt fetch line, `Get:12 http://… bookworm/main amd64 pkg ver [1234 kB]`: its bytes.
fn fetched(line: &str) -> Option<f64> {
    let rest = line.strip_prefix("Get:")?;
    if !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let size = rest.rsplit_once('[').map(|(_, s)| s.trim_end_matches(']'));
    let bytes = size
        .and_then(|s| {
            let (n, unit) = s.split_once(' ')?;
            let n: f64 = n.replace(',', "").parse().ok()?;
            Some(match unit {
                "B" => n,
                "kB" => n * 1e3,
                "MB" => n * 1e6,
                "GB" => n * 1e9,
                _ => 0.0,
            })
        })
        .unwrap_or(0.0);
    Some(bytes)
}

/// Why a failed mmdebstrap run failed, from its last lines: the network, or the last error.
pub fn diagnose(tail: &[String], mirror: &str) -> String {
    const NETWORK: &[&str] = &[
        "Could not resolve",
        "Temporary failure resolving",
        "Unable to connect",
        "Network is unreachable",
        "Could not connect",
        "Connection failed",
        "Connection timed out",
    ];
    if let Some(l) = tail.iter().find(|l| NETWORK.iter().any(|n| l.contains(n))) {
        return format!(
            "cannot reach the Debian mirror ({mirror}): is the network up? (a reachable mirror \
             can be given with --mirror): {}",
            l.trim()
        );
    }
    let errors: Vec<&str> = tail
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("E: ") || l.starts_with("dpkg: error") || l.contains("ERROR"))
        .collect();
    if errors.is_empty() {
        return "see its log".into();
    }
    errors[errors.len().saturating_sub(3)..].join("; ")
}

/// Runs `cmd` with its stdout and stderr through [`Filter`] onto the terminal and into
/// `log`; on failure the error carries the diagnosis, and the last lines are printed.
pub fn stream(cmd: &mut Command, log: &Path, p: &Progress, mirror: &str) -> Result<()> {
    let mut logf =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let (reader, writer) = std::io::pipe().context("cannot make a pipe")?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", cmd.get_program().to_string_lossy()))?;
    // The command holds the pipe's write ends until it goes; the child has its own.
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut filter = Filter::default();
    let mut tail: std::collections::VecDeque<String> = Default::default();
    for line in BufReader::new(reader).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        writeln!(logf, "{line}")?;
        for l in filter.line(&line) {
            p.say(&format!("  {l}"));
        }
        if tail.len() == 40 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for l in filter.tally() {
        p.say(&format!("  {l}"));
    }
    let status = child.wait()?;
    if !status.success() {
        let tail: Vec<String> = tail.into();
        eprintln!("--- the last lines of {} ---", log.display());
        for l in &tail[tail.len().saturating_sub(20)..] {
            eprintln!("{l}");
        }
        eprintln!("---");
        bail!(
            "mmdebstrap failed ({status}): {} (full log: {})",
            diagnose(&tail, mirror),
            log.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_are_tallied_and_packages_named_once() {
        let mut f = Filter::default();
        assert!(f.line("I: running apt-get update...").len() == 1);
        assert!(
            f.line("Get:1 http://deb.debian.org/debian bookworm/main amd64 libc6 2.36 [2,758 kB]")
                .is_empty()
        );
        assert!(
            f.line("Get:2 http://deb.debian.org/debian bookworm/main amd64 x 1 [512 B]")
                .is_empty()
        );
        assert!(f.line("Preparing to unpack .../libc6.deb ...").is_empty());
        assert!(f.line("Unpacking libc6 (2.36) ...").is_empty());
        assert_eq!(
            f.line("Setting up libc6:amd64 (2.36-9+deb12u13) ..."),
            [
                "fetched 2 packages (2.8 MB)",
                "installed libc6:amd64 2.36-9+deb12u13"
            ]
        );
        assert_eq!(
            f.line("I: running --customize-hook in shell: sh -c 'set -eu"),
            ["running the customize hook"]
        );
        assert!(f.line("I: running special hook: sync-in /x /y").is_empty());
        assert_eq!(f.line("janus: configured"), ["configured"]);
        assert_eq!(
            f.line("E: Unable to locate package nope"),
            ["E: Unable to locate package nope"]
        );
        assert!(f.tally().is_empty());
    }

    #[test]
    fn a_failure_names_the_network_or_the_last_error() {
        let tail: Vec<String> = [
            "Ign:1 http://deb.debian.org/debian bookworm InRelease",
            "Err:1 http://deb.debian.org/debian bookworm InRelease",
            "  Temporary failure resolving 'deb.debian.org'",
            "E: apt-get update failed",
        ]
        .map(String::from)
        .to_vec();
        let d = diagnose(&tail, "deb.debian.org");
        assert!(
            d.starts_with("cannot reach the Debian mirror (deb.debian.org)"),
            "{d}"
        );
        assert!(d.contains("Temporary failure resolving"), "{d}");
        let tail: Vec<String> = [
            "E: Unable to locate package nope",
            "E: apt-get install failed",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            diagnose(&tail, "m"),
            "E: Unable to locate package nope; E: apt-get install failed"
        );
        assert_eq!(diagnose(&[], "m"), "see its log");
    }
}
