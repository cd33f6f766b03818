//! The VHD disk format (fixed, dynamic, differencing) over `embedded-io` byte streams.
#![cfg_attr(not(feature = "std"), no_std)]
