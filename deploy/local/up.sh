#!/usr/bin/env bash
# Brings up the local fleet on this machine: a hub and two member clusters as real
# control planes on loopback (with KWOK nodes), kdfed's CRDs on each, the example app
# catalog and an example cluster on the hub. Stop it with deploy/local/down.sh.
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

step "Loading the example catalog and cluster on the hub"
"$BIN/kdfed" --kubeconfig "$FLEET_DIR/hub.kubeconfig" apply -f examples/apps -f examples/clusters/minimal.yaml

step "Fleet summary"
for c in hub east west; do
  server=$(sed -n 's/^ *server: //p' "$FLEET_DIR/$c.kubeconfig")
  printf '  %-5s %s  kubeconfig: %s\n' "$c" "$server" "$FLEET_DIR/$c.kubeconfig"
done
echo
"$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/hub.kubeconfig" get kubedirectorapps,kubedirectorclusters -A
cat <<MSG

The fleet runs in the background. Try:
  $KDFED_KUBECTL --kubeconfig $FLEET_DIR/hub.kubeconfig get kubedirector
  $KDFED_KUBECTL --kubeconfig $FLEET_DIR/east.kubeconfig get nodes
Stop it with: deploy/local/down.sh
MSG
