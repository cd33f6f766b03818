#!/bin/sh
# Fuzz the exit dispatcher over a mock vCPU with a VM's real devices, bus and personality
# (target dispatch) or the device models on access sequences (target devices) for a bounded
# time: kernel/fuzz/run.sh SECONDS [TARGET]
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz). The bodies live in the
# kernel (`vm::testing`, feature test-util); seeds come from the kernel unit tests that run
# them on stable, which write their inputs when KERNEL_FUZZ_SEED_DIR is set.
set -eu
secs=${1:-60}
target=${2:-dispatch}
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus/$target"
mkdir -p "$corpus"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "kernel/fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly --profile minimal)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "kernel/fuzz/run.sh: cargo-fuzz missing (cargo install cargo-fuzz)" >&2
    exit 2
fi
(cd "$here/../.." && KERNEL_FUZZ_SEED_DIR="$here/corpus" cargo test -q -p kernel --lib vm:: >/dev/null)
cd "$here"
exec cargo +nightly fuzz run "$target" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096
