//! The Hyper-V personality (TLFS): a pure state machine over guest registers and guest memory.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
