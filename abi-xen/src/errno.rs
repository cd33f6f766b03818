//! Xen error numbers. Xen's public `errno.h` reuses the x86 Linux numbering, and a hypercall
//! reports failure as the negated number in RAX.

/// A Xen error, held as its positive number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Errno(pub u16);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const ENOENT: Errno = Errno(2);
    pub const ESRCH: Errno = Errno(3);
    pub const ENOMEM: Errno = Errno(12);
    pub const EFAULT: Errno = Errno(14);
    pub const EBUSY: Errno = Errno(16);
    pub const EEXIST: Errno = Errno(17);
    pub const EINVAL: Errno = Errno(22);
    pub const ENOSPC: Errno = Errno(28);
    pub const ENOSYS: Errno = Errno(38);
    pub const ETIME: Errno = Errno(62);

    /// The value the guest sees in RAX.
    pub const fn ret(self) -> u64 {
        (-(self.0 as i64)) as u64
    }
}

/// Every number Xen's public `errno.h` defines; anything else in RAX is not an error a Xen
/// guest could interpret.
const XEN_ERRNOS: &[u16] = &[
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 22, 23, 24, 28, 30, 31, 33, 34,
    35, 36, 37, 38, 39, 61, 62, 74, 75, 84, 85, 88, 95, 98, 99, 105, 106, 107, 110,
];

/// Whether `rax` after a hypercall is a success value (non-negative) or a Xen errno.
pub fn is_valid_return(rax: u64) -> bool {
    let v = rax as i64;
    v >= 0
        || v.checked_neg()
            .is_some_and(|n| XEN_ERRNOS.iter().any(|&e| i64::from(e) == n))
}
