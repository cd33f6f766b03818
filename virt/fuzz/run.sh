#!/bin/sh
# Fuzz the instruction decoders (target decode) or the guest page walker and the instruction
# fetch through it (target walk) for a bounded time: virt/fuzz/run.sh SECONDS [TARGET]
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz). Seeds come from the
# stable test virt/tests/arbitrary_input.rs, which writes its inputs when VIRT_FUZZ_SEED_DIR
# is set.
set -eu
secs=${1:-60}
target=${2:-decode}
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus/$target"
mkdir -p "$corpus"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "virt/fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly --profile minimal)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "virt/fuzz/run.sh: cargo-fuzz missing (cargo install cargo-fuzz)" >&2
    exit 2
fi
(cd "$here/../.." && VIRT_FUZZ_SEED_DIR="$here/corpus" cargo test -q -p virt --test arbitrary_input >/dev/null)
cd "$here"
exec cargo +nightly fuzz run "$target" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096
