//! Memory: physical frames and the host page tables.

pub mod frame;
#[cfg(target_os = "none")]
pub mod heap;
pub mod mapcheck;
#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
pub mod phys;
