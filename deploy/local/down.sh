#!/usr/bin/env bash
# Stops the local fleet started by deploy/local/up.sh and removes its data.
set -euo pipefail
source "$(dirname "$0")/../../scripts/env.sh"
cd "$kdfed_root"
FLEET_DIR="${KDFED_FLEET_DIR:-$kdfed_root/.fleet}"
if [ ! -f "$FLEET_DIR/testbed.json" ]; then
  echo "no fleet is running in $FLEET_DIR" >&2
  exit 0
fi
for pidfile in "$FLEET_DIR"/pids/*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || true
done
sleep 1
for pidfile in "$FLEET_DIR"/pids/*.pid; do
  [ -f "$pidfile" ] || continue
  kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
done
cargo build --locked --bin testbed -q
"$CARGO_TARGET_DIR/debug/testbed" down --dir "$FLEET_DIR"
rm -rf "$FLEET_DIR"
echo "fleet stopped" >&2
