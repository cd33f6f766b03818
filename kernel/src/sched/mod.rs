//! Scheduling vCPUs on pCPUs: the policy is plain data (host tested); the per-pCPU loop that
//! applies it, and hands exits to `vm::dispatch`, is `run`.

pub mod account;
pub mod policy;
#[cfg(target_os = "none")]
pub mod run;
