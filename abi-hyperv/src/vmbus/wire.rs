//! VMBus channel-management messages as they travel in SynIC message payloads: the numbers,
//! the sizes Linux's `hv_vmbus` checks, and little-endian field access on byte slices (the
//! guest's copy is taken once; nothing here trusts a length it did not check).

/// `vmbus_channel_message_type`.
pub mod msg {
    pub const OFFERCHANNEL: u32 = 1;
    pub const RESCIND_CHANNELOFFER: u32 = 2;
    pub const REQUESTOFFERS: u32 = 3;
    pub const ALLOFFERS_DELIVERED: u32 = 4;
    pub const OPENCHANNEL: u32 = 5;
    pub const OPENCHANNEL_RESULT: u32 = 6;
    pub const CLOSECHANNEL: u32 = 7;
    pub const GPADL_HEADER: u32 = 8;
    pub const GPADL_BODY: u32 = 9;
    pub const GPADL_CREATED: u32 = 10;
    pub const GPADL_TEARDOWN: u32 = 11;
    pub const GPADL_TORNDOWN: u32 = 12;
    pub const INITIATE_CONTACT: u32 = 14;
    pub const VERSION_RESPONSE: u32 = 15;
    pub const UNLOAD: u32 = 16;
    pub const UNLOAD_RESPONSE: u32 = 17;
    pub const MODIFYCHANNEL: u32 = 22;
    pub const MODIFYCHANNEL_RESPONSE: u32 = 24;
}

/// Protocol versions (major << 16 | minor), newest first: what Linux 6.1 tries, from 2.4
/// (Windows 8), the first with per-VP event flags in the SIEF, to 5.3.
pub mod version {
    pub const WIN8: u32 = (2 << 16) | 4;
    pub const WIN8_1: u32 = 3 << 16;
    pub const WIN10: u32 = 4 << 16;
    pub const WIN10_V4_1: u32 = (4 << 16) | 1;
    pub const WIN10_V5: u32 = 5 << 16;
    pub const WIN10_V5_1: u32 = (5 << 16) | 1;
    pub const WIN10_V5_2: u32 = (5 << 16) | 2;
    pub const WIN10_V5_3: u32 = (5 << 16) | 3;
    pub const SUPPORTED: [u32; 8] = [
        WIN10_V5_3, WIN10_V5_2, WIN10_V5_1, WIN10_V5, WIN10_V4_1, WIN10, WIN8_1, WIN8,
    ];
}

/// The connection ids the guest posts channel-management messages to: 1 before protocol 5.0,
/// 4 from it (and then whatever VERSION_RESPONSE names, which is 4 here).
pub const MESSAGE_CONNECTION_ID: u32 = 1;
pub const MESSAGE_CONNECTION_ID_4: u32 = 4;
/// The SINT VMBus messages and channel interrupts arrive on before 5.0 (and by Linux's
/// choice after).
pub const MESSAGE_SINT: u8 = 2;
/// The SynIC message type of every VMBus message (any non-zero value; Hyper-V uses 1).
pub const SYNIC_MESSAGE_TYPE: u32 = 1;

/// Sizes of the messages (header included) that the guest checks or sends.
pub const HEADER: usize = 8;
pub const OFFER_LEN: usize = 196;
pub const VERSION_RESPONSE_LEN: usize = 16;
pub const INITIATE_CONTACT_LEN: usize = 40;
pub const OPEN_LEN: usize = 148;
pub const OPEN_RESULT_LEN: usize = 20;
/// Up to the range: the range's byte count and offset follow, then its page numbers.
pub const GPADL_HEADER_FIXED: usize = 20;
pub const GPADL_BODY_FIXED: usize = 16;
pub const GPADL_CREATED_LEN: usize = 20;
pub const GPADL_TEARDOWN_LEN: usize = 16;
pub const GPADL_TORNDOWN_LEN: usize = 12;
pub const CLOSE_LEN: usize = 12;
pub const MODIFY_LEN: usize = 16;
pub const MODIFY_RESPONSE_LEN: usize = 16;

/// The largest SynIC message payload.
pub const PAYLOAD_MAX: usize = 240;

/// NTSTATUS values the host answers with.
pub const STATUS_SUCCESS: u32 = 0;
pub const STATUS_UNSUCCESSFUL: u32 = 0xC000_0001;
pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A message the host sends: built in place, at most one SynIC payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Out {
    pub len: u8,
    pub bytes: [u8; PAYLOAD_MAX],
}

impl Out {
    /// A message of `len` bytes of type `kind`, zero but for the header.
    pub fn new(kind: u32, len: usize) -> Out {
        let mut o = Out {
            len: len.min(PAYLOAD_MAX) as u8,
            bytes: [0; PAYLOAD_MAX],
        };
        o.put_u32(0, kind);
        o
    }

    pub fn kind(&self) -> u32 {
        u32_at(&self.bytes, 0).unwrap_or(0)
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn put(&mut self, at: usize, v: &[u8]) {
        if let Some(d) = self.bytes.get_mut(at..at + v.len()) {
            d.copy_from_slice(v);
        }
    }

    pub fn put_u8(&mut self, at: usize, v: u8) {
        self.put(at, &[v]);
    }

    pub fn put_u16(&mut self, at: usize, v: u16) {
        self.put(at, &v.to_le_bytes());
    }

    pub fn put_u32(&mut self, at: usize, v: u32) {
        self.put(at, &v.to_le_bytes());
    }
}
