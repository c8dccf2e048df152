#!/usr/bin/env bash
# Idle hub API traffic (issue 13): brings up the local fleet, registers 50 members without
# spokes and creates 50 clusters that cannot be placed, waits 20 s, then counts the hub's API
# requests (its own /metrics), CPU and RSS over 60 s of idle. Stops nothing: run
# deploy/local/down.sh afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
deploy/local/down.sh >/dev/null 2>&1 || true
deploy/local/up.sh > /tmp/up-measure.log 2>&1
F=.fleet; K=$CARGO_TARGET_DIR/debug/kdfed; KC=$(grep KDFED_KUBECTL= ~/.cache/kdfed/bin/env | cut -d= -f2)
P="$K --kubeconfig $F/platform.kubeconfig"
for i in $(seq 1 50); do $P member add sim-$i --label region=sim -o /dev/null >/dev/null 2>&1; done
for i in $(seq 1 50); do
cat <<Y
apiVersion: kubedirector.hpe.com/v1beta1
kind: KubeDirectorCluster
metadata: {name: waiting-$i, namespace: default}
spec:
  app: minimal
  placement: {memberSelector: {matchLabels: {region: nowhere}}}
  roles: [{id: web, members: 1}]
---
Y
done > /tmp/waiting.yaml
$KC --kubeconfig $F/hub.kubeconfig apply -f /tmp/waiting.yaml >/dev/null
sleep 20
port=$(grep -o 'hub http://127.0.0.1:[0-9]*' /tmp/up-measure.log | head -1 | sed 's/.*://')
count() { curl -s http://127.0.0.1:$port/metrics | awk '/^kdfed_hub_api_requests_total/ {s+=$NF} END {print s}'; }
pid=$(cat $F/pids/hub.pid)
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
a=$(count); c1=$(cpu); sleep 60; b=$(count); c2=$(cpu)
echo "idle hub requests in 60 s: $((b - a)) ($(( (b - a) / 60 ))/s); hub CPU: $(( (c2 - c1) ))0 ms; RSS: $(grep VmRSS /proc/$pid/status)"
