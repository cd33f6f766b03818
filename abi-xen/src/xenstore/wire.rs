//! The xenstore wire format (`xs_wire.h`): the 16-byte header, message types, error names
//! and the NUL-separated payload conventions.

/// Largest payload a message may carry (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
pub const HEADER: usize = 16;

pub const DIRECTORY: u32 = 1;
pub const READ: u32 = 2;
pub const GET_PERMS: u32 = 3;
pub const WATCH: u32 = 4;
pub const UNWATCH: u32 = 5;
pub const TRANSACTION_START: u32 = 6;
pub const TRANSACTION_END: u32 = 7;
pub const INTRODUCE: u32 = 8;
pub const RELEASE: u32 = 9;
pub const GET_DOMAIN_PATH: u32 = 10;
pub const WRITE: u32 = 11;
pub const MKDIR: u32 = 12;
pub const RM: u32 = 13;
pub const SET_PERMS: u32 = 14;
pub const WATCH_EVENT: u32 = 15;
pub const ERROR: u32 = 16;
pub const IS_DOMAIN_INTRODUCED: u32 = 17;
pub const RESUME: u32 = 18;
pub const SET_TARGET: u32 = 19;
pub const RESET_WATCHES: u32 = 21;

/// `xsd_sockmsg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            ty: w(0),
            req_id: w(4),
            tx_id: w(8),
            len: w(12),
        }
    }

    pub fn encode(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..4].copy_from_slice(&self.ty.to_le_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// A payload longer than the protocol allows cannot be resynchronised: the ring is broken.
    pub fn len_ok(&self) -> bool {
        self.len as usize <= PAYLOAD_MAX
    }
}

/// An error a request is answered with: `XS_ERROR` carrying the errno's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError {
    Inval,
    Acces,
    Exist,
    NoEnt,
    NoSpc,
    TooBig,
    Again,
    Busy,
    NotEmpty,
}

impl StoreError {
    pub fn name(self) -> &'static [u8] {
        match self {
            StoreError::Inval => b"EINVAL",
            StoreError::Acces => b"EACCES",
            StoreError::Exist => b"EEXIST",
            StoreError::NoEnt => b"ENOENT",
            StoreError::NoSpc => b"ENOSPC",
            StoreError::TooBig => b"E2BIG",
            StoreError::Again => b"EAGAIN",
            StoreError::Busy => b"EBUSY",
            StoreError::NotEmpty => b"ENOTEMPTY",
        }
    }
}

/// The NUL-terminated string at the start of `p` and what follows its NUL; a string without
/// its NUL is malformed.
pub fn cstr(p: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    let n = p.iter().position(|&b| b == 0).ok_or(StoreError::Inval)?;
    Ok((&p[..n], &p[n + 1..]))
}

/// A decimal number as the protocol writes it (domain and transaction ids).
pub fn decimal(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(c - b'0'))?;
    }
    Some(v)
}

/// Appends `v` in decimal; false if it did not fit (the prefix that fit stays).
pub fn push_decimal<const N: usize>(out: &mut heapless::Vec<u8, N>, v: u32) -> bool {
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = v;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    digits[..n].iter().rev().all(|&d| out.push(d).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            ty: WRITE,
            req_id: 7,
            tx_id: 3,
            len: 4096,
        };
        assert_eq!(Header::parse(&h.encode()), h);
        assert!(h.len_ok());
        assert!(!Header { len: 4097, ..h }.len_ok());
    }

    #[test]
    fn strings_and_numbers() {
        assert_eq!(cstr(b"a/b\0rest"), Ok((&b"a/b"[..], &b"rest"[..])));
        assert_eq!(cstr(b"no-nul"), Err(StoreError::Inval));
        assert_eq!(decimal(b"51712"), Some(51712));
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"4294967296"), None);
        assert_eq!(decimal(b"1x"), None);
        let mut v: heapless::Vec<u8, 16> = heapless::Vec::new();
        assert!(push_decimal(&mut v, 0));
        assert!(push_decimal(&mut v, 4_294_967_295));
        assert_eq!(&v[..], b"04294967295");
    }
}
