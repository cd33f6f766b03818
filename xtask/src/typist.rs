//! Programs that type on the hypervisor's console for a run nobody watches: they read COM1 as
//! it arrives (each guest's lines behind their `[vm] ` prefix, which only the hypervisor
//! writes) and answer with the keys a person would press, escape commands included (the
//! hypervisor's `Ctrl-]` keys, README "Consoles").

use crate::emulator::Typist;

/// The hypervisor's escape key.
pub const ESCAPE: u8 = 0x1D;

/// COM1 as lines, the unfinished last one (a prompt) included.
#[derive(Default)]
struct Screen {
    partial: String,
}

impl Screen {
    /// The lines `bytes` finished, then the unfinished one (possibly empty) as it is now.
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        let mut out: Vec<String> = Vec::new();
        while let Some(at) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=at).collect();
            out.push(line.trim_end_matches(['\r', '\n']).to_string());
        }
        out.push(self.partial.clone());
        out
    }
}

/// What VM `vm` printed on `line`, if the line is its.
fn of<'a>(line: &'a str, vm: &str) -> Option<&'a str> {
    line.strip_prefix('[')?.strip_prefix(vm)?.strip_prefix("] ")
}

/// A getty's prompt, `HOST login: `, as it stands before anything is typed or with kernel
/// messages run into it (they do, on a serial console, and getty does not print it again);
/// not login's `Last login: …`.
pub fn is_login_prompt(text: &str) -> bool {
    let Some((host, rest)) = text.trim_end().split_once(" login:") else {
        return false;
    };
    (rest.is_empty() || rest.starts_with(' '))
        && !host.is_empty()
        && !host.contains(' ')
        && host != "Last"
}

/// Keys that give the console to VM `index` (from 0; at most 9 VMs) and type `text`.
fn to_vm(index: usize, text: &str) -> Vec<u8> {
    let mut keys = vec![ESCAPE, b'1' + index as u8];
    keys.extend_from_slice(text.as_bytes());
    keys
}

/// `cargo xtask run --until-login`: waits until every VM shows its login prompt, then asks
/// them all to shut down (`Ctrl-] q`).
pub struct UntilLogin {
    vms: Vec<String>,
    at_login: Vec<bool>,
    screen: Screen,
    asked: bool,
}

impl UntilLogin {
    pub fn new(vms: Vec<String>) -> Self {
        let at_login = vec![false; vms.len()];
        Self {
            vms,
            at_login,
            screen: Screen::default(),
            asked: false,
        }
    }
}

impl Typist for UntilLogin {
    fn seen(&mut self, com1: &[u8]) -> Vec<u8> {
        for line in self.screen.feed(com1) {
            for (vm, seen) in self.vms.iter().zip(&mut self.at_login) {
                if of(&line, vm).is_some_and(is_login_prompt) {
                    *seen = true;
                }
            }
        }
        if self.asked || !self.at_login.iter().all(|&s| s) {
            return Vec::new();
        }
        self.asked = true;
        vec![ESCAPE, b'q']
    }
}

/// The suite's check of typing: on each VM's console in turn (switching with `Ctrl-] N`),
/// logs in as root, has the shell compute a line nobody typed, and types `poweroff`.
pub struct LogInAndType {
    vms: Vec<String>,
    step: Vec<Step>,
    screen: Screen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    AwaitLogin,
    AwaitShell,
    AwaitAnswer,
    Done,
}

/// The command typed, and the line only the shell's arithmetic can print (on a line of its
/// own: bash ends bracketed-paste mode with an escape sequence at the start of the output).
pub const COMMAND: &str = "printf '\\nJANUS-TYPED-%s\\n' $((6*7))\r";
pub const ANSWER: &str = "JANUS-TYPED-42";

impl LogInAndType {
    pub fn new(vms: Vec<String>) -> Self {
        let step = vec![Step::AwaitLogin; vms.len()];
        Self {
            vms,
            step,
            screen: Screen::default(),
        }
    }
}

impl Typist for LogInAndType {
    fn seen(&mut self, com1: &[u8]) -> Vec<u8> {
        let mut keys = Vec::new();
        for line in self.screen.feed(com1) {
            for (i, vm) in self.vms.iter().enumerate() {
                let Some(text) = of(&line, vm) else { continue };
                let (next, typed) = match self.step[i] {
                    Step::AwaitLogin if is_login_prompt(text) => (Step::AwaitShell, "root\r"),
                    // root's prompt (`root@HOST:~# `), kernel messages run into it or not.
                    Step::AwaitShell if text.contains(":~#") => (Step::AwaitAnswer, COMMAND),
                    Step::AwaitAnswer if text.trim_end() == ANSWER => (Step::Done, "poweroff\r"),
                    _ => continue,
                };
                self.step[i] = next;
                keys.extend(to_vm(i, typed));
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_keeps_the_unfinished_line() {
        let mut s = Screen::default();
        assert_eq!(
            s.feed(b"[a] one\r\n[a] debian lo"),
            ["[a] one", "[a] debian lo"]
        );
        assert_eq!(s.feed(b"gin: "), ["[a] debian login: "]);
        assert_eq!(s.feed(b"root\n"), ["[a] debian login: root", ""]);
    }

    #[test]
    fn a_login_prompt_is_known_also_with_a_kernel_message_in_it() {
        assert!(is_login_prompt("janus-debian login: "));
        assert!(is_login_prompt(
            "janus-debian login: [   57.043190] powernow_k8: Power state transitions not supported"
        ));
        assert!(!is_login_prompt(
            "Last login: Fri Dec  4 05:06:20 UTC 2026 on hvc0"
        ));
        assert!(!is_login_prompt("Debian GNU/Linux 12 janus-debian ttyS0"));
        assert!(!is_login_prompt("a b login: "));
        assert!(!is_login_prompt("host login:x"));
    }

    #[test]
    fn until_login_asks_once_every_vm_is_at_its_prompt() {
        let mut t = UntilLogin::new(vec!["x".into(), "h".into()]);
        assert!(t.seen(b"[x] janus-debian login: ").is_empty());
        // Another VM's text, or the hypervisor's, does not count for h.
        assert!(t.seen(b"\n[hx] janus-debian login: \n").is_empty());
        assert!(t.seen(b"vm h: janus-debian login:\n").is_empty());
        assert!(
            t.seen(b"[h] Debian GNU/Linux 12 janus-debian ttyS0\n")
                .is_empty()
        );
        assert_eq!(t.seen(b"[h] janus-debian login: "), [ESCAPE, b'q']);
        assert!(
            t.seen(b"\n[h] janus-debian login: ").is_empty(),
            "asked once"
        );
    }

    #[test]
    fn log_in_and_type_walks_each_console() {
        let mut t = LogInAndType::new(vec!["x".into(), "h".into()]);
        let mut keys = |s: &str| String::from_utf8(t.seen(s.as_bytes())).unwrap();
        assert_eq!(keys("[h] janus-debian login: "), "\x1d2root\r");
        assert_eq!(keys("root\n[x] janus-debian login: "), "\x1d1root\r");
        assert_eq!(
            keys("\n[x] root@janus-debian:~# "),
            format!("\x1d1{COMMAND}")
        );
        // The echo of the command is not the answer, nor is a line the escape runs into.
        assert_eq!(keys("printf '\\nJANUS-TYPED-%s\\n' $((6*7))\n"), "");
        assert_eq!(keys("[x] \\x1b[?2004lJANUS-TYPED-42\n"), "");
        assert_eq!(keys("[h] JANUS-TYPED-42\n"), "", "h is not at that step");
        assert_eq!(keys("[x] JANUS-TYPED-42\n"), "\x1d1poweroff\r");
        assert_eq!(
            keys("[h] \\x1b[?2004hroot@janus-debian:~# "),
            format!("\x1d2{COMMAND}")
        );
    }
}
