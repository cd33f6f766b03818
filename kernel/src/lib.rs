//! The Janus library OS.
#![cfg_attr(not(test), no_std)]
