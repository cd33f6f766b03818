//! The guest's console as the host sees it: bytes split into lines stamped with their
//! arrival time, and the JANUS-* lines of init.sh read back into a report. The same
//! parser reads QEMU's ttyS0 (direct boot) and Janus's COM1, where every guest line is
//! prefixed `[vmname] `.

use std::time::Duration;

/// One console line and when its newline reached the host (time since the start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedLine {
    pub at: Duration,
    pub text: String,
}

/// Splits a byte stream into [`TimedLine`]s. Feed it each chunk with the time it was read;
/// a line gets the time of the chunk that ended it. CR characters are dropped (the tty's
/// ONLCR turns "\n" into "\r\n").
#[derive(Debug, Default)]
pub struct LineClock {
    partial: Vec<u8>,
}

impl LineClock {
    pub fn feed(&mut self, bytes: &[u8], at: Duration) -> Vec<TimedLine> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' => out.push(self.take(at)),
                b'\r' => {}
                _ => self.partial.push(b),
            }
        }
        out
    }

    /// The unterminated rest, if any (at end of stream).
    pub fn finish(&mut self, at: Duration) -> Option<TimedLine> {
        (!self.partial.is_empty()).then(|| self.take(at))
    }

    fn take(&mut self, at: Duration) -> TimedLine {
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        TimedLine { at, text }
    }
}

pub const MARKER: &str = "JANUS-GUEST-MARKER";
const CHECK: &str = "JANUS-CHECK ";
const CLOCK: &str = "JANUS-CLOCK ";
const DONE: &str = "JANUS-GUEST-DONE ";

/// One `JANUS-CHECK <name> <ok|FAIL> <detail>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// One `JANUS-CLOCK <n> <seconds.nanos> [source]` line: guest CLOCK_MONOTONIC and the
/// host's arrival time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockSample {
    pub n: u32,
    pub guest_ns: u64,
    pub source: String,
    pub host: Duration,
}

/// What init.sh said, with host times.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuestReport {
    /// Arrival of `JANUS-GUEST-MARKER`.
    pub marker: Option<Duration>,
    pub checks: Vec<Check>,
    pub clocks: Vec<ClockSample>,
    /// `JANUS-GUEST-DONE ok` (true) or `FAIL` (false), and its arrival.
    pub done: Option<(bool, Duration)>,
    /// JANUS-* lines that did not parse, verbatim.
    pub malformed: Vec<String>,
}

/// Reads the JANUS-* lines. With `vm`, only lines prefixed `[vm] ` count (Janus's COM1);
/// without, every line does. A token may follow other text on the same line (kernel
/// messages can interleave on a console).
pub fn parse_console(lines: &[TimedLine], vm: Option<&str>) -> GuestReport {
    let prefix = vm.map(|v| format!("[{v}] "));
    let mut r = GuestReport::default();
    for line in lines {
        let text = match &prefix {
            Some(p) => match line.text.strip_prefix(p.as_str()) {
                Some(rest) => rest,
                None => continue,
            },
            None => line.text.as_str(),
        };
        let Some(at) = text.find("JANUS-") else {
            continue;
        };
        let tok = &text[at..];
        if tok.trim_end() == MARKER {
            r.marker.get_or_insert(line.at);
        } else if let Some(rest) = tok.strip_prefix(CHECK) {
            match parse_check(rest) {
                Some(c) => r.checks.push(c),
                None => r.malformed.push(tok.to_string()),
            }
        } else if let Some(rest) = tok.strip_prefix(CLOCK) {
            match parse_clock(rest, line.at) {
                Some(c) => r.clocks.push(c),
                None => r.malformed.push(tok.to_string()),
            }
        } else if let Some(rest) = tok.strip_prefix(DONE) {
            match rest.trim() {
                "ok" => r.done = Some((true, line.at)),
                "FAIL" => r.done = Some((false, line.at)),
                _ => r.malformed.push(tok.to_string()),
            }
        }
    }
    r
}

fn parse_check(rest: &str) -> Option<Check> {
    let mut it = rest.splitn(3, ' ');
    let name = it.next().filter(|n| !n.is_empty())?.to_string();
    let ok = match it.next()? {
        "ok" => true,
        "FAIL" => false,
        _ => return None,
    };
    let detail = it.next().unwrap_or("").trim_end().to_string();
    Some(Check { name, ok, detail })
}

fn parse_clock(rest: &str, host: Duration) -> Option<ClockSample> {
    let mut it = rest.split_whitespace();
    let n = it.next()?.parse().ok()?;
    let guest_ns = parse_seconds_ns(it.next()?)?;
    let source = it.next().unwrap_or("").to_string();
    Some(ClockSample {
        n,
        guest_ns,
        source,
        host,
    })
}

/// "12.000345678" → 12_000_345_678 ns; up to nine fraction digits, nothing else.
pub fn parse_seconds_ns(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty()
        || frac.len() > 9
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..9 {
        frac_ns *= 10;
    }
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

/// Guest time elapsed over host time elapsed between two samples; `None` when the host
/// interval is empty or the guest clock went backwards.
pub fn rate_ratio(a: &ClockSample, b: &ClockSample) -> Option<f64> {
    let host = b.host.checked_sub(a.host)?.as_secs_f64();
    let guest = b.guest_ns.checked_sub(a.guest_ns)? as f64 / 1e9;
    (host > 0.0).then(|| guest / host)
}

/// Which platform checks a face's guest must report.
pub fn expected_checks(face: &str) -> &'static [&'static str] {
    match face {
        "xen" => &["platform", "clocksource", "no-kernel-warning", "nproc"],
        "hyperv" => &[
            "platform",
            "clocksource",
            "clockevent",
            "serial-irq",
            "no-kernel-warning",
            "nproc",
        ],
        _ => &["no-kernel-warning", "nproc"],
    }
}

/// How far the guest's clock rate may stray from the host's.
pub const CLOCK_TOLERANCE: f64 = 0.01;

impl GuestReport {
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Guest monotonic delta / host delta across the wait: the least late sample of 1-3
    /// against the least late of 4-6 (or sample 1 against 2).
    pub fn clock_ratio(&self) -> Option<f64> {
        // A sample can only be late (the line reached the host after the clock was read), so
        // of each group the one with the least host-minus-guest offset is the truest.
        let least_late = |range: core::ops::RangeInclusive<u32>| {
            self.clocks
                .iter()
                .filter(|c| range.contains(&c.n))
                .min_by_key(|c| c.host.as_nanos() as i128 - i128::from(c.guest_ns))
        };
        match (least_late(1..=3), least_late(4..=6)) {
            (Some(a), Some(b)) => rate_ratio(a, b),
            // A guest that prints one sample at each end.
            _ => rate_ratio(
                self.clocks.iter().find(|c| c.n == 1)?,
                self.clocks.iter().find(|c| c.n == 2)?,
            ),
        }
    }

    /// Everything wrong with this report for a guest of `face`; empty means it passed.
    pub fn problems(&self, face: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.marker.is_none() {
            p.push(format!("no {MARKER}"));
        }
        for name in expected_checks(face) {
            if self.check(name).is_none() {
                p.push(format!("no JANUS-CHECK {name}"));
            }
        }
        for c in self.checks.iter().filter(|c| !c.ok) {
            p.push(format!("check {} failed: {}", c.name, c.detail));
        }
        match self.clock_ratio() {
            None => p.push("no usable JANUS-CLOCK 1 and 2 pair".into()),
            Some(r) if (r - 1.0).abs() > CLOCK_TOLERANCE => p.push(format!(
                "guest clock runs at {r:.4} x the host's (tolerance {:.0} %)",
                CLOCK_TOLERANCE * 100.0
            )),
            Some(_) => {}
        }
        match self.done {
            None => p.push("no JANUS-GUEST-DONE".into()),
            Some((false, _)) => p.push("the guest reported JANUS-GUEST-DONE FAIL".into()),
            Some((true, _)) => {}
        }
        p.extend(self.malformed.iter().map(|m| format!("malformed: {m}")));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn lines(v: &[(u64, &str)]) -> Vec<TimedLine> {
        v.iter()
            .map(|&(t, s)| TimedLine {
                at: ms(t),
                text: s.into(),
            })
            .collect()
    }

    #[test]
    fn the_least_late_sample_of_each_group_sets_the_rate() {
        // Guest samples 1 ms apart at each end of a 5 s wait; the host saw sample 2 and 5
        // late by 150 ms (a preempted emulator). The rate is still exact.
        let v = [
            (1001, "JANUS-CLOCK 1 1.000000000"),
            (1152, "JANUS-CLOCK 2 1.001000000"),
            (1003, "JANUS-CLOCK 3 1.002000000"),
            (6001, "JANUS-CLOCK 4 6.000000000"),
            (6152, "JANUS-CLOCK 5 6.001000000"),
            (6003, "JANUS-CLOCK 6 6.002000000"),
        ];
        let r = parse_console(&lines(&v), None).clock_ratio().unwrap();
        assert!((r - 1.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn lines_take_the_time_of_the_chunk_that_ends_them() {
        let mut c = LineClock::default();
        assert!(c.feed(b"JANUS-GU", ms(10)).is_empty());
        let got = c.feed(b"EST-MARKER\r\nab\r\ncd", ms(20));
        assert_eq!(got, lines(&[(20, "JANUS-GUEST-MARKER"), (20, "ab")]));
        assert_eq!(c.feed(b"e\n\n", ms(30)), lines(&[(30, "cde"), (30, "")]));
        assert_eq!(c.finish(ms(40)), None);
        c.feed(b"tail", ms(50));
        assert_eq!(c.finish(ms(60)), Some(lines(&[(60, "tail")])[0].clone()));
        let bad = c.feed(b"\xff\xfe\n", ms(70));
        assert_eq!(bad.len(), 1);
    }

    const GOOD: &[(u64, &str)] = &[
        (100, "[    0.000000] Linux version 6.1.0"),
        (1800, "JANUS-GUEST-MARKER"),
        (1850, "JANUS-INFO face=xen clocksource=xen"),
        (1900, "JANUS-CHECK platform ok Booting kernel on Xen PVH"),
        (1901, "JANUS-CHECK clocksource ok xen"),
        (1902, "JANUS-CHECK no-kernel-warning ok"),
        (1903, "JANUS-CHECK nproc ok 2"),
        (2000, "JANUS-CLOCK 1 1.500000000 timer_list"),
        (7000, "JANUS-CLOCK 2 6.510000000 timer_list"),
        (7001, "JANUS-GUEST-DONE ok"),
    ];

    #[test]
    fn a_good_console_parses_and_passes() {
        let r = parse_console(&lines(GOOD), None);
        assert_eq!(r.marker, Some(ms(1800)));
        assert_eq!(r.checks.len(), 4);
        assert_eq!(
            r.check("platform").unwrap().detail,
            "Booting kernel on Xen PVH"
        );
        assert_eq!(r.clocks[0].guest_ns, 1_500_000_000);
        assert_eq!(r.clocks[1].source, "timer_list");
        assert_eq!(r.done, Some((true, ms(7001))));
        let ratio = r.clock_ratio().unwrap();
        assert!((ratio - 1.002).abs() < 1e-9, "{ratio}");
        assert_eq!(r.problems("xen"), Vec::<String>::new());
        // Hyper-V would also need the clockevent and serial interrupt checks.
        assert_eq!(
            r.problems("hyperv"),
            vec!["no JANUS-CHECK clockevent", "no JANUS-CHECK serial-irq"]
        );
    }

    #[test]
    fn janus_prefixes_select_one_vm() {
        let mut v: Vec<(u64, String)> = GOOD
            .iter()
            .map(|&(t, s)| (t, format!("[xen] {s}")))
            .collect();
        v.push((1850, "[hv] JANUS-GUEST-MARKER".into()));
        v.push((1860, "janus: vm xen started".into()));
        let tl: Vec<TimedLine> = v
            .iter()
            .map(|(t, s)| TimedLine {
                at: ms(*t),
                text: s.clone(),
            })
            .collect();
        let xen = parse_console(&tl, Some("xen"));
        assert_eq!(xen.marker, Some(ms(1800)));
        assert!(xen.problems("xen").is_empty());
        let hv = parse_console(&tl, Some("hv"));
        assert_eq!(hv.marker, Some(ms(1850)));
        assert!(hv.checks.is_empty());
    }

    #[test]
    fn failures_and_damage_are_reported() {
        let r = parse_console(
            &lines(&[
                (5, "[  1.2] some kernel text JANUS-GUEST-MARKER"),
                (6, "JANUS-CHECK clocksource FAIL 'tsc' (want 'xen')"),
                (7, "JANUS-CHECK nproc maybe 2"),
                (8, "JANUS-CLOCK 1 1.5"),
                (9, "JANUS-CLOCK 2 1.2.3"),
                (10, "JANUS-GUEST-DONE FAIL"),
            ]),
            None,
        );
        assert_eq!(r.marker, Some(ms(5)));
        let p = r.problems("xen");
        for want in [
            "no JANUS-CHECK platform",
            "check clocksource failed: 'tsc' (want 'xen')",
            "no usable JANUS-CLOCK 1 and 2 pair",
            "the guest reported JANUS-GUEST-DONE FAIL",
            "malformed: JANUS-CHECK nproc maybe 2",
            "malformed: JANUS-CLOCK 2 1.2.3",
        ] {
            assert!(p.iter().any(|x| x == want), "{want} not in {p:?}");
        }
        assert!(parse_console(&[], None).problems("none").len() >= 3);
    }

    #[test]
    fn seconds_parse_exactly() {
        assert_eq!(parse_seconds_ns("0.000000001"), Some(1));
        assert_eq!(parse_seconds_ns("12.5"), Some(12_500_000_000));
        assert_eq!(parse_seconds_ns("7"), Some(7_000_000_000));
        assert_eq!(parse_seconds_ns("3.1234567890"), None);
        for bad in ["", ".5", "1.-2", "-1.0", "1e3", "18446744073709551615.0"] {
            assert_eq!(parse_seconds_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn clock_ratio_math() {
        let s = |n, g: u64, h: u64| ClockSample {
            n,
            guest_ns: g,
            source: String::new(),
            host: ms(h),
        };
        assert_eq!(
            rate_ratio(&s(1, 0, 1000), &s(2, 5_000_000_000, 6000)),
            Some(1.0)
        );
        let slow = rate_ratio(&s(1, 0, 0), &s(2, 4_950_000_000, 5000)).unwrap();
        assert!((slow - 0.99).abs() < 1e-12);
        assert_eq!(rate_ratio(&s(1, 0, 10), &s(2, 5, 10)), None);
        assert_eq!(rate_ratio(&s(1, 9, 0), &s(2, 5, 10)), None);
        assert_eq!(rate_ratio(&s(1, 0, 10), &s(2, 5, 5)), None);
        // A 2 % fast guest fails the 1 % tolerance.
        let r = GuestReport {
            clocks: vec![s(1, 0, 0), s(2, 5_100_000_000, 5000)],
            ..Default::default()
        };
        assert!(r.problems("none").iter().any(|p| p.contains("1.0200")));
    }
}
