//! Scenario harness shared by the boot tests that `cargo xtask test` runs.
