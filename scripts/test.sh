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
echo "[kdfed] cargo test" >&2
cargo test --workspace --locked "$@"
