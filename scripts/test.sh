#!/usr/bin/env bash
# Runs every check and test of kdfed: installs the test bed (cached), then cargo fmt,
# clippy and the whole test suite (unit, integration and end-to-end tests on real
# control planes).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$kdfed_root"

kdfed_need_packages
kdfed_need_rust
echo "[kdfed] installing the test bed (cached in $KDFED_CACHE)" >&2
bash tests/testbed/install.sh

echo "[kdfed] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[kdfed] cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[kdfed] cargo build --bins (end-to-end tests start kdfed-hub and kdfed-spoke)" >&2
cargo build --workspace --bins --locked
echo "[kdfed] cargo test" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one "test result" per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "kdfed: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
