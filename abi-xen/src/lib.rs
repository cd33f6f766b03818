//! The Xen personality: a pure state machine over guest registers and guest memory.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
