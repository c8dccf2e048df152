#!/usr/bin/env bash
# Brings up the local fleet on this machine: a hub and two member clusters as real
# control planes on loopback (with KWOK nodes), kdfed's CRDs on each, the example app
# catalog on the hub, the director on each member, and an example cluster built on east.
# Stop it with deploy/local/down.sh.
set -euo pipefail
source "$(dirname "$0")/../../scripts/env.sh"
cd "$kdfed_root"

FLEET_DIR="${KDFED_FLEET_DIR:-$kdfed_root/.fleet}"
step() { printf '\n==> %s\n' "$*" >&2; }

if [ -f "$FLEET_DIR/testbed.json" ]; then
  echo "a fleet is already running in $FLEET_DIR; stop it first with deploy/local/down.sh" >&2
  exit 1
fi

step "Installing prerequisites (Debian packages, test-bed binaries; cached)"
kdfed_need_packages
bash tests/testbed/install.sh
source "$KDFED_CACHE/bin/env"

step "Building kdfed"
cargo build --locked --bins
BIN="$CARGO_TARGET_DIR/debug"

step "Starting control planes: hub, east, west"
rm -rf "$FLEET_DIR"
"$BIN/testbed" up --dir "$FLEET_DIR" --clusters hub,east,west --nodes 2 \
  --cluster-node-label east:topology.kubernetes.io/region=eu-west \
  --cluster-node-label west:topology.kubernetes.io/region=us-west

step "Installing kdfed's CRDs"
for c in hub east west; do
  "$BIN/kdfed" --kubeconfig "$FLEET_DIR/$c.kubeconfig" crds --install >/dev/null
  echo "  $c: CRDs established"
done

# Background processes of the fleet: own process group, log file, pid recorded for down.sh.
start_bg() {
  local name="$1"; shift
  mkdir -p "$FLEET_DIR/pids" "$FLEET_DIR/logs"
  setsid "$@" >"$FLEET_DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$FLEET_DIR/pids/$name.pid"
}

step "Starting the director (kdfed-spoke --standalone) on east and west"
for c in east west; do
  start_bg "spoke-$c" "$BIN/kdfed-spoke" --standalone --kubeconfig "$FLEET_DIR/$c.kubeconfig" \
    --admin-address 127.0.0.1:0 --log-format json
done

step "Loading the example catalog on the hub, and an example cluster on east"
"$BIN/kdfed" --kubeconfig "$FLEET_DIR/hub.kubeconfig" apply -f examples/apps
"$BIN/kdfed" --kubeconfig "$FLEET_DIR/east.kubeconfig" apply -f examples/apps/minimal.yaml -f examples/clusters/minimal.yaml

step "Waiting until the example cluster is configured"
for i in $(seq 120); do
  state=$("$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/east.kubeconfig" get kdcluster hello -o jsonpath='{.status.state}' 2>/dev/null || true)
  [ "$state" = configured ] && break
  sleep 1
done
[ "$state" = configured ] || { echo "example cluster not configured (state: ${state:-none}); see $FLEET_DIR/logs" >&2; exit 1; }

step "Fleet summary"
for c in hub east west; do
  server=$(sed -n 's/^ *server: //p' "$FLEET_DIR/$c.kubeconfig")
  printf '  %-5s %s  kubeconfig: %s\n' "$c" "$server" "$FLEET_DIR/$c.kubeconfig"
done
echo
"$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/hub.kubeconfig" get kubedirectorapps -A
echo
"$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/east.kubeconfig" get kubedirectorclusters,statefulsets,pods -A -l '!kwok' 2>/dev/null | grep -v '^kube-system' || true
cat <<MSG

The fleet runs in the background. Try:
  $KDFED_KUBECTL --kubeconfig $FLEET_DIR/hub.kubeconfig get kubedirector
  $KDFED_KUBECTL --kubeconfig $FLEET_DIR/east.kubeconfig get kdcluster hello -o yaml
  logs: $FLEET_DIR/logs/
Stop it with: deploy/local/down.sh
MSG
