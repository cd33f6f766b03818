//! Size arguments: bytes, or a number with a K/M/G/T suffix (powers of 1024).

pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size '{s}' (use bytes or a K/M/G/T suffix, e.g. 16M)"))?;
    n.checked_mul(1 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("invalid size '{s}'"))
}

/// "10 MiB"-style rendering for human output.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.3} {}", UNITS[u]).replace(".000 ", " ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse("16M"), Ok(16 << 20));
        assert_eq!(parse("1G"), Ok(1 << 30));
        assert_eq!(parse("1000000"), Ok(1_000_000));
        assert_eq!(parse("4k"), Ok(4096));
        assert_eq!(parse("2GiB"), Ok(2 << 30));
        assert!(parse("0").is_err());
        assert!(parse("12X").is_err());
        assert!(parse("99999999999T").is_err());
        assert_eq!(human(10 << 20), "10 MiB");
        assert_eq!(human(1_000_000), "976.562 KiB");
    }
}
