//! Options on the hypervisor's own command line (`janus.*`), e.g. from GRUB or iPXE.

/// A deliberate failure, so the test harness can prove that it notices one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    None,
    /// `panic!` after bring-up.
    Panic,
    /// A CPU exception (#UD) after bring-up.
    Fault,
    /// The BSP's stack overflows into its guard page after bring-up.
    StackOverflow,
    /// Bring up the host's NVMe controller and write, flush and read back its first
    /// namespace (a scratch disk: its start is overwritten); the run continues if it works.
    Nvme,
    /// After the manifest's disks are opened: write, flush and read back each writable disk
    /// through the volume layer (the run continues if it works).
    Disk,
    /// Rounds of writes and flushes on the first VM's first disk until the machine is
    /// stopped (the power-cut test).
    DiskStress,
    /// The workloads of `cargo xtask bench disk` on the first VM's first disk, timed.
    DiskBench,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MitigationMode {
    Off,
    Needed,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub selftest: SelfTest,
    /// `janus.watch`: print every vCPU's state every few seconds (for a guest that hangs).
    pub watch: bool,
    /// `janus.shutdown_after=S`: S seconds after the VMs start, ask each to shut down.
    pub shutdown_after_s: Option<u32>,
    /// `janus.mitigations=off|on|all`: none (benchmarks), what the CPU needs (default), or
    /// everything it can do (to exercise the paths).
    pub mitigations: MitigationMode,
    /// `janus.console=unmetered`: guests may print as much as they like.
    pub console_unmetered: bool,
    /// `janus.nosmp`: run on the boot pCPU alone, every vCPU sharing it (as Linux's and Xen's
    /// `nosmp`): VMs compete for one pCPU, as the chaos cases need.
    pub nosmp: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownOption<'a>(pub &'a str);

impl Options {
    /// Unknown `janus.*` words are errors (a typo must not silently run a different test);
    /// words without the prefix belong to the loader (iPXE puts the image URI first).
    pub fn parse(cmdline: &str) -> Result<Self, UnknownOption<'_>> {
        let mut opts = Options {
            selftest: SelfTest::None,
            watch: false,
            shutdown_after_s: None,
            mitigations: MitigationMode::Needed,
            console_unmetered: false,
            nosmp: false,
        };
        for word in cmdline
            .split_ascii_whitespace()
            .filter(|w| w.starts_with("janus."))
        {
            match word {
                "janus.selftest=none" => opts.selftest = SelfTest::None,
                "janus.selftest=panic" => opts.selftest = SelfTest::Panic,
                "janus.selftest=fault" => opts.selftest = SelfTest::Fault,
                "janus.selftest=stack-overflow" => opts.selftest = SelfTest::StackOverflow,
                "janus.selftest=nvme" => opts.selftest = SelfTest::Nvme,
                "janus.selftest=disk" => opts.selftest = SelfTest::Disk,
                "janus.selftest=disk-stress" => opts.selftest = SelfTest::DiskStress,
                "janus.selftest=disk-bench" => opts.selftest = SelfTest::DiskBench,
                "janus.watch" => opts.watch = true,
                "janus.mitigations=off" => opts.mitigations = MitigationMode::Off,
                "janus.mitigations=on" => opts.mitigations = MitigationMode::Needed,
                "janus.mitigations=all" => opts.mitigations = MitigationMode::All,
                "janus.console=unmetered" => opts.console_unmetered = true,
                "janus.nosmp" => opts.nosmp = true,
                w if w.starts_with("janus.shutdown_after=") => {
                    let secs = w["janus.shutdown_after=".len()..].parse().ok();
                    opts.shutdown_after_s = Some(secs.ok_or(UnknownOption(word))?);
                }
                _ => return Err(UnknownOption(word)),
            }
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_words_and_ignores_the_loaders() {
        let o = Options::parse("tftp://10.0.2.2/janus-boot janus.selftest=fault").unwrap();
        assert_eq!(o.selftest, SelfTest::Fault);
        assert!(!o.watch);
        assert!(Options::parse("janus.watch").unwrap().watch);
        assert!(Options::parse("janus.nosmp").unwrap().nosmp);
        assert!(!o.nosmp);
        assert_eq!(Options::parse("").unwrap().selftest, SelfTest::None);
        assert_eq!(
            Options::parse("janus.selftest=nvme").unwrap().selftest,
            SelfTest::Nvme
        );
        assert_eq!(
            Options::parse("janus.shutdown_after=30")
                .unwrap()
                .shutdown_after_s,
            Some(30)
        );
        assert!(Options::parse("janus.shutdown_after=soon").is_err());
        assert_eq!(
            Options::parse("janus.mitigations=off").unwrap().mitigations,
            MitigationMode::Off
        );
        assert_eq!(
            Options::parse("janus.mitigations=all").unwrap().mitigations,
            MitigationMode::All
        );
        assert!(Options::parse("janus.mitigations=maybe").is_err());
        assert!(Options::parse("janus.shutdown_after=").is_err());
        assert_eq!(
            Options::parse("janus.selftest=stack-overflow")
                .unwrap()
                .selftest,
            SelfTest::StackOverflow
        );
    }

    #[test]
    fn unknown_janus_words_are_errors() {
        assert_eq!(
            Options::parse("janus.selftest=maybe"),
            Err(UnknownOption("janus.selftest=maybe"))
        );
        assert_eq!(
            Options::parse("x janus.bogus"),
            Err(UnknownOption("janus.bogus"))
        );
    }
}
