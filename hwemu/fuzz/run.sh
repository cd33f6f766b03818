#!/bin/sh
# Fuzz the emulated NVMe controller (target nvme) for a bounded time:
# hwemu/fuzz/run.sh SECONDS [TARGET]
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz). Seeds come from the
# stable fuzz test in this crate, which writes its inputs when HWEMU_FUZZ_SEED_DIR is set.
set -eu
secs=${1:-60}
target=${2:-nvme}
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus/$target"
mkdir -p "$corpus"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "hwemu/fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly --profile minimal)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "hwemu/fuzz/run.sh: cargo-fuzz missing (cargo install cargo-fuzz)" >&2
    exit 2
fi
(cd "$here" && HWEMU_FUZZ_SEED_DIR="$corpus" cargo test -q >/dev/null)
cd "$here"
exec cargo +nightly fuzz run "$target" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096
