#!/usr/bin/env bash
# Hub under load (issue 13, "Found already"): one hub API server of the test bed, the release
# hub (as deploy/hub's ServiceAccount), K clusters waiting for placement, then K members
# registered with `kdfed member add` that never heartbeat. Prints, per phase, the hub's API
# requests (its own kdfed_hub_api_requests_total, by verb), the hub's CPU and RSS, the hub API
# server's CPU, and how long the registrations took; then restarts the hub with nothing
# changed and counts the writes it makes.
#
#   scripts/bench-hub-load.sh [K...]      (default: 200 500; one fresh control plane per K)
#
# Needs `cargo build --release -p kdfed-hub -p kdfed-cli -p kdfed-testbed` (BIN overrides
# the folder of the binaries, HUB the hub's binary alone; IDLE the seconds of each idle
# phase, default 30; MEMBERS registers that many members instead of K). Everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source "$KDFED_CACHE/bin/env"
BIN=${BIN:-$CARGO_TARGET_DIR/release}
HUB=${HUB:-$BIN/kdfed-hub}   # another hub binary to compare (e.g. a copy of an earlier build)
IDLE=${IDLE:-30}
[ $# -gt 0 ] || set -- 200 500

run_size() {
  local k=$1 dir
  dir=$(mktemp -d /tmp/kdfed-bench-load.XXXXXX)
  local hub_pid="" api_pid
  cleanup() {
    [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null || true
    "$BIN/testbed" down --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
  }
  trap cleanup RETURN
  trap 'cleanup; exit 1' INT TERM ERR
  "$BIN/testbed" up --dir "$dir" --clusters hub --nodes 1 >/dev/null
  "$BIN/kdfed" --kubeconfig "$dir/hub.kubeconfig" crds --install >/dev/null
  "$BIN/testbed" sa-kubeconfig --dir "$dir" --cluster hub --base deploy/hub --out "$dir/hub-sa.kubeconfig" >/dev/null
  "$BIN/testbed" role-kubeconfig --dir "$dir" --cluster hub --account platform/fleet-admin \
    --cluster-role kdfed-fleet-admin --out "$dir/platform.kubeconfig" >/dev/null
  local crt key ca hook admin
  read -r crt key ca < <("$BIN/testbed" webhook-cert --dir "$dir" --cluster hub)
  hook=$("$BIN/testbed" free-port); admin=$("$BIN/testbed" free-port)
  start_hub() {
    setsid "$HUB" --kubeconfig "$dir/hub-sa.kubeconfig" --admin-address "127.0.0.1:$admin" \
      --webhook-address "127.0.0.1:$hook" --webhook-cert-file "$crt" --webhook-key-file "$key" \
      --webhook-ca-file "$ca" --webhook-url "https://127.0.0.1:$hook" --log-format json \
      >>"$dir/hub.log" 2>&1 </dev/null &
    hub_pid=$!
    for _ in $(seq 120); do curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return; sleep 0.5; done
    echo "the hub did not become ready; see $dir/hub.log" >&2; exit 1
  }
  start_hub
  api_pid=$(pgrep -f -- "kube-apiserver" | while read -r p; do
    if grep -qs "$dir" "/proc/$p/cmdline"; then echo "$p"; fi; done | head -1)
  local kc="$KDFED_KUBECTL --kubeconfig $dir/hub.kubeconfig"
  for _ in $(seq 30); do $kc apply -f examples/apps/minimal.yaml >/dev/null 2>&1 && break; sleep 1; done

  requests() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v verb="${1:-}" '
    /^kdfed_hub_api_requests_total/ && (verb == "" || index($0, "verb=\"" verb "\"")) {s += $NF} END {print s + 0}'; }
  writes() { curl -s "http://127.0.0.1:$admin/metrics" | awk '
    /^kdfed_hub_api_requests_total/ && !/verb="(GET|LIST|WATCH)"/ {match($0, /verb="[A-Z]+"/);
      v = substr($0, RSTART + 6, RLENGTH - 7); w[v] += $NF} END {for (v in w) printf "%s=%d ", v, w[v]}'; }
  # The API server's own count of writes by verb and resource (every client, so the test
  # bed's controller manager too), to tell what a restarted hub wrote.
  server_writes() { $kc get --raw /metrics | awk '/^apiserver_request_total/ && /verb="(PATCH|POST|PUT|DELETE|APPLY)"/ {
      match($0, /resource="[^"]*"/); r = substr($0, RSTART + 10, RLENGTH - 11); match($0, /verb="[A-Z]+"/);
      v = substr($0, RSTART + 6, RLENGTH - 7); w[v "/" r] += $NF} END {for (x in w) print x, w[x]}' | sort; }
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  rss() { awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' "/proc/$1/status"; }
  local r0 c0 a0 t0
  mark() { r0=$(requests); c0=$(ticks "$hub_pid"); a0=$(ticks "$api_pid"); t0=$(date +%s.%N); }
  report() {
    local secs req
    secs=$(echo "$(date +%s.%N) - $t0" | bc); req=$(( $(requests) - r0 ))
    printf '%-34s %7.1f s  hub requests %7d (%6.1f/s)  hub CPU %6.2f s  API server CPU %6.2f s  hub RSS %s\n' \
      "K=$k $1" "$secs" "$req" "$(echo "$req / $secs" | bc -l)" \
      "$(echo "($(ticks "$hub_pid") - $c0) / 100" | bc -l)" "$(echo "($(ticks "$api_pid") - $a0) / 100" | bc -l)" \
      "$(rss "$hub_pid")"
  }

  for i in $(seq 1 "$k"); do
    cat <<Y
apiVersion: kubedirector.hpe.com/v1beta1
kind: KubeDirectorCluster
metadata: {name: waiting-$i, namespace: default}
spec:
  app: minimal
  placement: {memberSelector: {matchLabels: {region: sim}}}
  roles: [{id: web, members: 1}]
---
Y
  done > "$dir/waiting.yaml"
  mark
  $kc apply -f "$dir/waiting.yaml" >/dev/null
  sleep 10
  report "intents created (+10 s)"
  mark; sleep "$IDLE"; report "idle, intents only"
  mark
  local members=${MEMBERS:-$k}
  for i in $(seq 1 "$members"); do
    "$BIN/kdfed" --kubeconfig "$dir/platform.kubeconfig" member add "sim-$i" --label region=sim -o /dev/null >/dev/null 2>&1
  done
  report "$members members registered"
  sleep 10
  mark; sleep "$IDLE"; report "idle, intents and members"
  # Restart with nothing changed: every write it makes is one too many (its leader Lease
  # aside: leader election renews it by design).
  kill -9 "$hub_pid"; wait "$hub_pid" 2>/dev/null || true
  server_writes > "$dir/writes-before"
  start_hub
  mark; sleep "$IDLE"; report "restart (nothing changed)"
  echo "K=$k writes by the restarted hub in its first $IDLE s, by verb: $(writes)"
  server_writes | join -a1 - "$dir/writes-before" 2>/dev/null | awk '$2 - $3 != 0 {print "  API server writes during the restart:", $1, $2 - $3}' || true
  # Once more: the first restart also brings up to date what no change had woken (waiting
  # clusters whose Unschedulable message still counted the members before they registered);
  # the second shows a settled fleet.
  kill -9 "$hub_pid"; wait "$hub_pid" 2>/dev/null || true
  start_hub
  mark; sleep "$IDLE"; report "second restart (settled)"
  echo "K=$k writes by the hub restarted again, in its first $IDLE s, by verb: $(writes)"
}

for k in "$@"; do run_size "$k"; done
