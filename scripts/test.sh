#!/usr/bin/env bash
# Runs every check and test of kdfed: installs the test bed (cached), then cargo fmt,
# clippy and the whole test suite (unit, integration and end-to-end tests on real
# control planes).
#
# The test bed's Go builds run in the background while cargo compiles (cargo's long
# single-crate steps leave a core idle), and the test binaries then run a few at a time
# (KDFED_TEST_JOBS, default 3): most of an end-to-end test is waiting for control planes,
# so one binary after another left the machine half idle. Arguments, if any, go to a plain
# `cargo test --workspace` instead (e.g. `scripts/test.sh -- some_test_name`).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$kdfed_root"

kdfed_need_packages
kdfed_need_browser
kdfed_need_rust

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "[kdfed] installing the test bed (cached in $KDFED_CACHE; in the background)" >&2
bash tests/testbed/install.sh >"$work/install.log" 2>&1 &
install_pid=$!
wait_for_testbed() {
  if ! wait "$install_pid"; then
    cat "$work/install.log" >&2
    echo "[kdfed] installing the test bed failed" >&2
    exit 1
  fi
  cat "$work/install.log" >&2
}

echo "[kdfed] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[kdfed] cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[kdfed] cargo build --bins (end-to-end tests start kdfed-hub and kdfed-spoke)" >&2
cargo build --workspace --bins --locked

if [ "$#" -gt 0 ]; then
  wait_for_testbed
  echo "[kdfed] cargo test $*" >&2
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi

echo "[kdfed] cargo test --no-run" >&2
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$work/build.json"
wait_for_testbed

# One line per test binary: executable, its package's folder (cargo test runs each binary
# there), a name for its log (folder-kind-target, e.g. tests-test-federation).
jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
       | (.manifest_path | sub("/Cargo.toml$"; "")) as $dir
       | [.executable, $dir, ($dir | sub("^.*/"; "")) + "-" + .target.kind[0] + "-" + .target.name]
       | @tsv' "$work/build.json" >"$work/binaries.tsv"

# The longest binaries first (measured: README), so that none of them starts last.
first='tests-test-federation tests-test-chaos tests-test-scale tests-test-security tests-test-links
       spoke-test-setup spoke-test-director spoke-test-upgrade tests-test-upgrade_fleet tests-test-smoke'
{
  for name in $first; do awk -F '\t' -v n="$name" '$3 == n' "$work/binaries.tsv"; done
  cat "$work/binaries.tsv"
} | awk '!seen[$0]++' >"$work/ordered.tsv"

jobs="${KDFED_TEST_JOBS:-3}"
echo "[kdfed] running $(wc -l <"$work/ordered.tsv") test binaries, $jobs at a time" >&2
mkdir -p "$work/logs"
export work
# shellcheck disable=SC2016
tr '\t' '\n' <"$work/ordered.tsv" | xargs -d '\n' -n 3 -P "$jobs" bash -c '
  exe="$1"; dir="$2"; name="$3"; log="$work/logs/$name.log"
  start=$(date +%s)
  # federation.rs holds seven fleet tests, the longest binary by far: four at a time.
  case "$name" in tests-test-federation) threads=4 ;; *) threads="${RUST_TEST_THREADS:-2}" ;; esac
  (cd "$dir" && "$exe" --test-threads="$threads") >"$log" 2>&1
  status=$?
  echo "$status" >"$work/logs/$name.status"
  echo "[kdfed] $name: exit $status after $(( $(date +%s) - start )) s" >&2
' _

status=0
while IFS=$'\t' read -r _ _ name; do
  echo "     Running $name"
  cat "$work/logs/$name.log"
  [ "$(cat "$work/logs/$name.status" 2>/dev/null || echo 1)" = 0 ] || status=1
done <"$work/ordered.tsv" | tee "$work/all.log"
# (the loop ran in a pipeline's subshell: read the statuses again for the exit code)
for f in "$work"/logs/*.status; do [ "$(cat "$f")" = 0 ] || status=1; done
[ "$(ls "$work"/logs/*.status | wc -l)" -eq "$(wc -l <"$work/ordered.tsv")" ] || status=1

# One closing line over every test binary (each prints one "test result").
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "kdfed: %d passed, %d failed\n", p, f }' "$work/all.log"
if [ "$status" -ne 0 ]; then
  echo "[kdfed] failed test binaries:" >&2
  for f in "$work"/logs/*.status; do [ "$(cat "$f")" = 0 ] || echo "  $(basename "$f" .status)" >&2; done
fi
exit "$status"
