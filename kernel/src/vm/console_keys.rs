//! What typing on the hypervisor's console means: bytes for the VM that has the console, or,
//! after the escape key, a command to the hypervisor — as `xl console` and QEMU's serial mux
//! have theirs. The keys (README "Consoles"):
//!
//! - `Ctrl-]` `n` (or `Tab`): the next running VM gets what is typed;
//! - `Ctrl-]` `1`…`9`: the VM of that number (manifest order);
//! - `Ctrl-]` `q`: every VM is asked to shut down, as the host's shutdown does;
//! - `Ctrl-]` `?`: these keys;
//! - `Ctrl-]` `Ctrl-]`: one `Ctrl-]` for the VM.

/// `Ctrl-]`, the escape key (`xl console` leaves on it).
pub const ESCAPE: u8 = 0x1D;

/// The help line the hypervisor prints.
pub const HELP: &str = "Ctrl-] n: next VM, Ctrl-] 1-9: VM by number, Ctrl-] q: shut all VMs down, Ctrl-] ?: keys, Ctrl-] Ctrl-]: a Ctrl-] for the VM";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A byte for the VM that has the console.
    Byte(u8),
    /// Give the console to the next running VM.
    Next,
    /// Give the console to VM `n` (from 0).
    Select(u8),
    /// Ask every VM to shut down.
    Quit,
    /// Print the keys (also the answer to an unknown command).
    Help,
}

/// The escape state between two bytes.
#[derive(Default)]
pub struct Keys {
    escaped: bool,
}

impl Keys {
    pub const fn new() -> Self {
        Self { escaped: false }
    }

    /// What byte `b` means; `None` while a command is half typed.
    pub fn feed(&mut self, b: u8) -> Option<Key> {
        if !self.escaped {
            if b == ESCAPE {
                self.escaped = true;
                return None;
            }
            return Some(Key::Byte(b));
        }
        self.escaped = false;
        Some(match b {
            ESCAPE => Key::Byte(ESCAPE),
            b'n' | b'N' | b'\t' => Key::Next,
            b'1'..=b'9' => Key::Select(b - b'1'),
            b'q' | b'Q' => Key::Quit,
            _ => Key::Help,
        })
    }
}

/// The VM after `current` (wrapping) among those `running` says are up; `current` itself
/// when it is the only one; `None` when none runs.
pub fn next_running(current: Option<usize>, running: &[bool]) -> Option<usize> {
    let n = running.len();
    let from = current.filter(|&c| c < n).map_or(0, |c| c + 1);
    (0..n).map(|k| (from + k) % n).find(|&i| running[i])
}

/// Who has the console now: `current` while it runs, else the next running VM.
pub fn keep_or_next(current: Option<usize>, running: &[bool]) -> Option<usize> {
    match current {
        Some(c) if running.get(c) == Some(&true) => Some(c),
        _ => next_running(current, running),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut k = Keys::new();
        bytes.iter().filter_map(|&b| k.feed(b)).collect()
    }

    #[test]
    fn typing_passes_and_the_escape_key_starts_a_command() {
        assert_eq!(
            keys(b"ls\r"),
            [Key::Byte(b'l'), Key::Byte(b's'), Key::Byte(b'\r')]
        );
        assert_eq!(keys(&[ESCAPE, b'n', b'a']), [Key::Next, Key::Byte(b'a')]);
        assert_eq!(keys(&[ESCAPE, b'\t']), [Key::Next]);
        assert_eq!(keys(&[ESCAPE, b'2']), [Key::Select(1)]);
        assert_eq!(keys(&[ESCAPE, b'q']), [Key::Quit]);
        assert_eq!(
            keys(&[ESCAPE, ESCAPE, b'x']),
            [Key::Byte(ESCAPE), Key::Byte(b'x')]
        );
        assert_eq!(
            keys(&[ESCAPE, b'0']),
            [Key::Help],
            "no VM 0: the keys instead"
        );
        assert_eq!(keys(&[ESCAPE, b'?']), [Key::Help]);
        // Ctrl-C is the guest's, not the hypervisor's.
        assert_eq!(keys(&[3]), [Key::Byte(3)]);
        assert!(keys(&[ESCAPE]).is_empty(), "half a command waits");
    }

    #[test]
    fn the_console_moves_among_running_vms() {
        let up = [true, false, true];
        assert_eq!(next_running(None, &up), Some(0));
        assert_eq!(next_running(Some(0), &up), Some(2));
        assert_eq!(next_running(Some(2), &up), Some(0), "wraps");
        assert_eq!(next_running(Some(0), &[true]), Some(0), "alone: stays");
        assert_eq!(next_running(Some(0), &[false, false]), None);
        assert_eq!(keep_or_next(Some(2), &up), Some(2));
        assert_eq!(keep_or_next(Some(1), &up), Some(2), "its VM ended");
        assert_eq!(keep_or_next(None, &up), Some(0));
        assert_eq!(keep_or_next(Some(7), &up), Some(0), "out of range");
    }
}
