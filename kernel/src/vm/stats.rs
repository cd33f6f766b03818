//! VM exits counted by reason, printed when a VM ends and summed for the exits benchmark.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Cpuid,
    Rdmsr,
    Wrmsr,
    Io,
    Hypercall,
    NestedPageFault,
    Hlt,
    InterruptWindow,
    ExternalInterrupt,
    Nmi,
    Exception,
    Init,
    Sipi,
    TripleFault,
    Unknown,
}

impl ExitKind {
    pub const ALL: [ExitKind; 15] = [
        ExitKind::Cpuid,
        ExitKind::Rdmsr,
        ExitKind::Wrmsr,
        ExitKind::Io,
        ExitKind::Hypercall,
        ExitKind::NestedPageFault,
        ExitKind::Hlt,
        ExitKind::InterruptWindow,
        ExitKind::ExternalInterrupt,
        ExitKind::Nmi,
        ExitKind::Exception,
        ExitKind::Init,
        ExitKind::Sipi,
        ExitKind::TripleFault,
        ExitKind::Unknown,
    ];

    /// The kind of an exit, for counting.
    pub fn of(exit: &virt::Exit) -> Self {
        use virt::Exit;
        match exit {
            Exit::Cpuid { .. } => ExitKind::Cpuid,
            Exit::Rdmsr { .. } => ExitKind::Rdmsr,
            Exit::Wrmsr { .. } => ExitKind::Wrmsr,
            Exit::Io(_) => ExitKind::Io,
            Exit::Hypercall => ExitKind::Hypercall,
            Exit::NestedPageFault(_) => ExitKind::NestedPageFault,
            Exit::Hlt => ExitKind::Hlt,
            Exit::InterruptWindow => ExitKind::InterruptWindow,
            Exit::ExternalInterrupt => ExitKind::ExternalInterrupt,
            Exit::Nmi => ExitKind::Nmi,
            Exit::Exception { .. } => ExitKind::Exception,
            Exit::Init => ExitKind::Init,
            Exit::Sipi { .. } => ExitKind::Sipi,
            Exit::TripleFault => ExitKind::TripleFault,
            Exit::Unknown { .. } => ExitKind::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Cpuid => "cpuid",
            ExitKind::Rdmsr => "rdmsr",
            ExitKind::Wrmsr => "wrmsr",
            ExitKind::Io => "io",
            ExitKind::Hypercall => "hypercall",
            ExitKind::NestedPageFault => "npf",
            ExitKind::Hlt => "hlt",
            ExitKind::InterruptWindow => "intr-window",
            ExitKind::ExternalInterrupt => "host-intr",
            ExitKind::Nmi => "nmi",
            ExitKind::Exception => "exception",
            ExitKind::Init => "init",
            ExitKind::Sipi => "sipi",
            ExitKind::TripleFault => "triple-fault",
            ExitKind::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitStats {
    counts: [u64; ExitKind::ALL.len()],
}

impl ExitStats {
    pub const fn new() -> Self {
        Self {
            counts: [0; ExitKind::ALL.len()],
        }
    }

    pub fn count(&mut self, kind: ExitKind) {
        let slot = &mut self.counts[kind as usize];
        *slot = slot.saturating_add(1);
    }

    pub fn get(&self, kind: ExitKind) -> u64 {
        self.counts[kind as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    pub fn add(&mut self, other: &ExitStats) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a = a.saturating_add(b);
        }
    }

    /// Non-zero reasons, most frequent first.
    pub fn nonzero(&self) -> heapless::Vec<(ExitKind, u64), 15> {
        let mut v: heapless::Vec<(ExitKind, u64), 15> = ExitKind::ALL
            .iter()
            .map(|&k| (k, self.get(k)))
            .filter(|&(_, n)| n > 0)
            .collect();
        v.sort_unstable_by_key(|&(_, n)| core::cmp::Reverse(n));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_and_sort() {
        let mut s = ExitStats::default();
        s.count(ExitKind::Io);
        s.count(ExitKind::Io);
        s.count(ExitKind::Hlt);
        let mut t = ExitStats::default();
        t.count(ExitKind::Cpuid);
        s.add(&t);
        assert_eq!(s.total(), 4);
        let v = s.nonzero();
        assert_eq!(v[0], (ExitKind::Io, 2));
        assert_eq!(v.len(), 3);
        assert!(
            ExitKind::ALL
                .iter()
                .enumerate()
                .all(|(i, k)| *k as usize == i)
        );
    }
}
