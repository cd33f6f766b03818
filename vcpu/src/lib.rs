//! Hardware virtualization: one `Vcpu` trait over Intel VMX and AMD SVM, chosen at run time.
#![cfg_attr(not(test), no_std)]
