//! The shutdown integration component: the VMBus service through which a Hyper-V host asks
//! its guest to shut down or restart (Linux's `hv_utils`). Once the guest opens the channel
//! the host offers its framework and message versions; the guest answers with the ones it
//! picked; later a shutdown request asks for an orderly power-off, which the guest confirms.
//!
//! Every packet is `{ pipe header { flags, msgsize }, icmsg header { framework version, type,
//! message version, size, status, transaction, flags }, body }`.

use virt::personality::ShutdownKind;

/// The service's interface type: {0e0b6031-5213-4934-818b-38d90ced39db}.
pub const SHUTDOWN_TYPE: [u8; 16] = [
    0x31, 0x60, 0x0b, 0x0e, 0x13, 0x52, 0x34, 0x49, 0x81, 0x8b, 0x38, 0xd9, 0x0c, 0xed, 0x39, 0xdb,
];
/// Hyper-V's instance of it: {b6650ff7-33bc-4840-8048-e0676786f393}.
pub const SHUTDOWN_INSTANCE: [u8; 16] = [
    0xf7, 0x0f, 0x65, 0xb6, 0xbc, 0x33, 0x40, 0x48, 0x80, 0x48, 0xe0, 0x67, 0x67, 0x86, 0xf3, 0x93,
];

const PIPE_HEADER: usize = 8;
const IC_HEADER: usize = 20;
/// Where the icmsg header starts, and where the body starts.
const HEADER: usize = PIPE_HEADER + IC_HEADER;

const TYPE_NEGOTIATE: u16 = 0;
const TYPE_SHUTDOWN: u16 = 3;
const FLAG_TRANSACTION: u8 = 1;
const FLAG_REQUEST: u8 = 2;
const FLAG_RESPONSE: u8 = 4;
const HV_S_OK: u32 = 0;

/// Framework versions 3.0 and 1.0; shutdown message versions 3.2, 3.1, 3.0 and 1.0 (what
/// Windows hosts offer; the guest picks).
const FRAMEWORK: [(u16, u16); 2] = [(3, 0), (1, 0)];
const MESSAGE: [(u16, u16); 4] = [(3, 2), (3, 1), (3, 0), (1, 0)];

/// `shutdown_msg_data`: reason, timeout, flags and a 2048-byte message.
const SHUTDOWN_BODY: usize = 12 + 2048;
pub const SHUTDOWN_LEN: usize = HEADER + SHUTDOWN_BODY;
pub const NEGOTIATE_LEN: usize = HEADER + 8 + 4 * (FRAMEWORK.len() + MESSAGE.len());
/// `flags` of a shutdown request: 0 shut down, 2 restart.
const SHUTDOWN_FLAG_RESTART: u32 = 2;

/// The service's state on one open channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ic {
    /// The negotiation request is in the guest's ring.
    pub offered: bool,
    /// The guest answered with versions it supports.
    pub negotiated: bool,
    /// A request waiting to be sent (the guest has not negotiated yet).
    pub pending: Option<ShutdownKind>,
    /// A request was sent; the guest confirmed it.
    pub confirmed: bool,
}

fn header(out: &mut [u8], kind: u16, size: usize) {
    let msgsize = (out.len() - PIPE_HEADER) as u32;
    out[4..8].copy_from_slice(&msgsize.to_le_bytes());
    let h = &mut out[PIPE_HEADER..HEADER];
    // Framework and message versions are left to the negotiated ones (the guest reads none).
    h[0..2].copy_from_slice(&3u16.to_le_bytes());
    h[4..6].copy_from_slice(&kind.to_le_bytes());
    h[6..8].copy_from_slice(&3u16.to_le_bytes());
    h[10..12].copy_from_slice(&(size as u16).to_le_bytes());
    h[17] = FLAG_TRANSACTION | FLAG_REQUEST;
}

/// The negotiation request the host sends first.
pub fn negotiate() -> [u8; NEGOTIATE_LEN] {
    let mut p = [0u8; NEGOTIATE_LEN];
    header(&mut p, TYPE_NEGOTIATE, NEGOTIATE_LEN - HEADER);
    p[HEADER..HEADER + 2].copy_from_slice(&(FRAMEWORK.len() as u16).to_le_bytes());
    p[HEADER + 2..HEADER + 4].copy_from_slice(&(MESSAGE.len() as u16).to_le_bytes());
    for (i, (major, minor)) in FRAMEWORK.iter().chain(MESSAGE.iter()).enumerate() {
        let at = HEADER + 8 + 4 * i;
        p[at..at + 2].copy_from_slice(&major.to_le_bytes());
        p[at + 2..at + 4].copy_from_slice(&minor.to_le_bytes());
    }
    p
}

/// A shutdown (or restart) request.
pub fn shutdown(kind: ShutdownKind) -> [u8; SHUTDOWN_LEN] {
    let mut p = [0u8; SHUTDOWN_LEN];
    header(&mut p, TYPE_SHUTDOWN, SHUTDOWN_BODY);
    let flags = match kind {
        ShutdownKind::PowerOff => 0,
        ShutdownKind::Reboot => SHUTDOWN_FLAG_RESTART,
    };
    p[HEADER + 8..HEADER + 12].copy_from_slice(&flags.to_le_bytes());
    let why = b"The host is shutting down";
    p[HEADER + 12..HEADER + 12 + why.len()].copy_from_slice(why);
    p
}

impl Ic {
    /// A packet from the guest (its payload): the answer to a request of ours.
    pub fn answer(&mut self, payload: &[u8]) {
        let Some(h) = payload.get(PIPE_HEADER..HEADER) else {
            return;
        };
        let kind = u16::from_le_bytes([h[4], h[5]]);
        let status = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
        if h[17] & FLAG_RESPONSE == 0 || status != HV_S_OK {
            return;
        }
        match kind {
            // The guest zeroes both counts when nothing matched.
            TYPE_NEGOTIATE => {
                let counts = payload.get(HEADER..HEADER + 4);
                self.negotiated = counts.is_some_and(|c| c != [0, 0, 0, 0]);
            }
            TYPE_SHUTDOWN => self.confirmed = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Linux's `hv_utils` sends back: the same buffer, the response flag, its choice.
    fn linux_answer(request: &[u8], supported: bool) -> Vec<u8> {
        let mut p = request.to_vec();
        p[PIPE_HEADER + 17] = FLAG_TRANSACTION | FLAG_RESPONSE;
        if !supported {
            p[HEADER..HEADER + 4].fill(0);
        }
        p
    }

    #[test]
    fn negotiation_then_shutdown() {
        let n = negotiate();
        assert_eq!(u16::from_le_bytes([n[12], n[13]]), TYPE_NEGOTIATE);
        assert_eq!(&n[HEADER..HEADER + 4], &[2, 0, 4, 0]);
        // Framework 3.0 first, then message 3.2.
        assert_eq!(&n[HEADER + 8..HEADER + 12], &[3, 0, 0, 0]);
        assert_eq!(&n[HEADER + 16..HEADER + 20], &[3, 0, 2, 0]);
        let mut ic = Ic::default();
        ic.answer(&linux_answer(&n, false));
        assert!(!ic.negotiated);
        ic.answer(&n);
        assert!(!ic.negotiated, "a request is not an answer");
        ic.answer(&linux_answer(&n, true));
        assert!(ic.negotiated);
        let s = shutdown(ShutdownKind::PowerOff);
        assert_eq!(
            s.len(),
            2088,
            "Linux checks for the whole shutdown_msg_data"
        );
        assert_eq!(&s[HEADER + 8..HEADER + 12], &[0, 0, 0, 0]);
        assert_eq!(
            &shutdown(ShutdownKind::Reboot)[HEADER + 8..HEADER + 12],
            &[2, 0, 0, 0]
        );
        ic.answer(&linux_answer(&s, true));
        assert!(ic.confirmed);
        ic.answer(&[1, 2, 3]);
    }
}
