//! Guest-side boot protocols and the multiboot loader logic.
#![cfg_attr(not(test), no_std)]
