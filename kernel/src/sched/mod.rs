//! Scheduling vCPUs on pCPUs: the policy is plain data (host tested); the per-pCPU loop that
//! applies it lives with the exit loop in `vm::run`.

pub mod policy;
