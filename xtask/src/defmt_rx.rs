//! Host side of the defmt channel: COM2's rzCOBS byte stream decoded against the exact kernel
//! ELF that runs.

use anyhow::{Context, Result, anyhow};
use defmt_decoder::{DecodeError, Table};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Decoded lines, shared with the runner for its verdict.
pub type Lines = Arc<Mutex<Vec<String>>>;

pub struct Decoder {
    elf: Vec<u8>,
}

impl Decoder {
    pub fn for_elf(path: &Path) -> Result<Self> {
        let elf = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self { elf })
    }

    /// Decodes `source` until it ends, printing each frame and appending it to `lines`.
    pub fn pump(&self, mut source: impl Read, lines: &Lines, echo: bool) -> Result<()> {
        let table = Table::parse(&self.elf)
            .map_err(|e| anyhow!("defmt table: {e}"))?
            .ok_or_else(|| anyhow!("the kernel ELF has no .defmt section"))?;
        let mut stream = table.new_stream_decoder();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            stream.received(&buf[..n]);
            loop {
                match stream.decode() {
                    Ok(frame) => {
                        let level = frame.level().map_or("print", |l| l.as_str());
                        let line = format!("{level} {}", frame.display_message());
                        // The per-line stamps of guest consoles would double every guest line.
                        if echo && !line.starts_with("info con ") {
                            let t = start.elapsed().as_secs_f64();
                            println!("[defmt {t:8.3}] {line}");
                        }
                        lines.lock().map_err(|_| anyhow!("poisoned"))?.push(line);
                    }
                    Err(DecodeError::UnexpectedEof) => break,
                    Err(DecodeError::Malformed) => {
                        if echo {
                            println!("[defmt] (malformed frame skipped)");
                        }
                        lines
                            .lock()
                            .map_err(|_| anyhow!("poisoned"))?
                            .push("malformed".into());
                    }
                }
            }
        }
    }
}

/// Splits a raw COM2 capture at rzCOBS frame ends (every frame ends in one zero byte and
/// holds no other): whole frames, and the bytes of an unterminated tail.
pub fn split_frames(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == 0) {
        if end > 0 {
            frames.push(&rest[..end]);
        }
        rest = &rest[end + 1..];
    }
    (frames, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's logger frames with defmt's own encoder; its output must split back into
    /// exactly the frames written, and garbage from before the decoder attached must not
    /// swallow the first real frame.
    fn encode(payloads: &[&[u8]]) -> Vec<u8> {
        let mut enc = defmt::Encoder::new();
        let mut out = Vec::new();
        for p in payloads {
            enc.start_frame(|b| out.extend_from_slice(b));
            enc.write(p, |b| out.extend_from_slice(b));
            enc.end_frame(|b| out.extend_from_slice(b));
        }
        out
    }

    #[test]
    fn frames_split_one_for_one_and_contain_no_zero() {
        let payloads: [&[u8]; 4] = [b"\x01\x00\x00\x07", &[0u8; 300], b"\xff\xfe", &[1; 1]];
        let bytes = encode(&payloads);
        let (frames, tail) = split_frames(&bytes);
        assert_eq!(frames.len(), payloads.len());
        assert!(tail.is_empty());
        assert!(frames.iter().all(|f| !f.contains(&0)));
    }

    #[test]
    fn garbage_before_attach_and_a_cut_tail_are_contained() {
        let mut bytes = b"\x13\x37junk\x00".to_vec();
        bytes.extend(encode(&[b"abc", b"defg"]));
        // A frame cut short by the end of the capture: everything but its terminator.
        let cut = encode(&[b"cut"]);
        bytes.extend(&cut[..cut.len() - 1]);
        let (frames, tail) = split_frames(&bytes);
        assert_eq!(frames.len(), 3, "one garbage frame, two real ones");
        assert!(!tail.is_empty() && !tail.contains(&0));
        assert!(bytes.ends_with(tail));
    }
}
