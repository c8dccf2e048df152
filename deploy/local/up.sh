#!/usr/bin/env bash
# Brings up the local fleet on this machine: a hub and two member clusters as real
# control planes on loopback (KWOK nodes), kdfed's CRDs, the hub (with its admission
# webhook), both members registered and joined by their spokes, the example catalog, and an
# example cluster placed by labels and built on its member. The hub and the spokes run as the
# ServiceAccounts of deploy/hub and deploy/spoke with exactly their RBAC, not as admins.
# Beside the hub, the end users' console (kdfed-console, sign-in mode on loopback) and a
# sample end user, team-a/alice, whose token the summary prints.
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
KDFED="$BIN/kdfed --kubeconfig $FLEET_DIR/hub.kubeconfig"

# Background processes of the fleet: own process group, log file, pid recorded for down.sh.
start_bg() {
  local name="$1"; shift
  mkdir -p "$FLEET_DIR/pids" "$FLEET_DIR/logs"
  setsid "$@" >"$FLEET_DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$FLEET_DIR/pids/$name.pid"
}
free_port() { "$BIN/testbed" free-port; }

step "Starting control planes: hub, east, west"
rm -rf "$FLEET_DIR"
"$BIN/testbed" up --dir "$FLEET_DIR" --clusters hub,east,west --nodes 2 \
  --cluster-node-label east:topology.kubernetes.io/region=eu-west \
  --cluster-node-label west:topology.kubernetes.io/region=us-west
# The KWOK pods run exec'd commands (setup packages) in a folder of their own while this runs.
start_bg exec-sync "$BIN/testbed" exec-sync --dir "$FLEET_DIR"

step "Installing kdfed's CRDs"
for c in hub east west; do
  "$BIN/kdfed" --kubeconfig "$FLEET_DIR/$c.kubeconfig" crds --install >/dev/null
  echo "  $c: CRDs established"
done

step "Creating the binaries' identities: the ServiceAccounts and RBAC of deploy/hub and deploy/spoke (spoke, fence watchdog)"
read -r account _ < <("$BIN/testbed" sa-kubeconfig --dir "$FLEET_DIR" --cluster hub --base deploy/hub \
  --out "$FLEET_DIR/hub-sa.kubeconfig")
echo "  hub:  $account"
for c in east west; do
  read -r account _ < <("$BIN/testbed" sa-kubeconfig --dir "$FLEET_DIR" --cluster "$c" --base deploy/spoke \
    --account kdfed-spoke --out "$FLEET_DIR/$c-spoke-sa.kubeconfig")
  read -r watchdog _ < <("$BIN/testbed" sa-kubeconfig --dir "$FLEET_DIR" --cluster "$c" --base deploy/spoke \
    --account kdfed-fence-watchdog --out "$FLEET_DIR/$c-watchdog-sa.kubeconfig")
  echo "  $c: $account, $watchdog"
done

step "Starting the hub (controllers, admission webhook)"
read -r crt key ca < <("$BIN/testbed" webhook-cert --dir "$FLEET_DIR" --cluster hub)
hook_port=$(free_port)
hub_admin=$(free_port)
start_bg hub "$BIN/kdfed-hub" --kubeconfig "$FLEET_DIR/hub-sa.kubeconfig" --admin-address "127.0.0.1:$hub_admin" \
  --webhook-address "127.0.0.1:$hook_port" --webhook-cert-file "$crt" --webhook-key-file "$key" \
  --webhook-ca-file "$ca" --webhook-url "https://127.0.0.1:$hook_port" --log-format json
# The webhook fails closed: wait until the hub is ready and has registered it.
for i in $(seq 60); do
  curl -fsS "http://127.0.0.1:$hub_admin/readyz" >/dev/null 2>&1 \
    && "$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/hub.kubeconfig" get mutatingwebhookconfiguration \
      kdfed-hub.kubedirector.hpe.com >/dev/null 2>&1 && break
  [ "$i" = 60 ] && { echo "the hub did not become ready; see $FLEET_DIR/logs/hub.log" >&2; exit 1; }
  sleep 1
done

step "Registering the members (as the platform team: deploy/hub's kdfed-fleet-admin role) and joining their spokes"
"$BIN/testbed" role-kubeconfig --dir "$FLEET_DIR" --cluster hub --account platform/fleet-admin \
  --cluster-role kdfed-fleet-admin --out "$FLEET_DIR/platform.kubeconfig" >/dev/null
PLATFORM="$BIN/kdfed --kubeconfig $FLEET_DIR/platform.kubeconfig"
$PLATFORM member add east --label region=eu --label provider=onprem -o "$FLEET_DIR/east-join.kubeconfig"
$PLATFORM member add west --label region=us --label provider=cloud -o "$FLEET_DIR/west-join.kubeconfig"
# East's spoke also serves the member's admission webhook (what deploy/spoke-webhook adds);
# west's does not: both ways a member may run.
read -r east_crt east_key east_ca < <("$BIN/testbed" webhook-cert --dir "$FLEET_DIR" --cluster east --name spoke-webhook)
east_hook=$(free_port)
declare -A spoke_admin watchdog_admin
for c in east west; do
  spoke_admin[$c]=$(free_port)
  webhook=()
  if [ "$c" = east ]; then
    webhook=(--webhook-address "127.0.0.1:$east_hook" --webhook-cert-file "$east_crt" --webhook-key-file "$east_key"
      --webhook-ca-file "$east_ca" --webhook-url "https://127.0.0.1:$east_hook")
  fi
  start_bg "spoke-$c" "$BIN/kdfed-spoke" --kubeconfig "$FLEET_DIR/$c-spoke-sa.kubeconfig" \
    --hub-kubeconfig "$FLEET_DIR/$c-join.kubeconfig" --member "$c" \
    --admin-address "127.0.0.1:${spoke_admin[$c]}" --log-format json "${webhook[@]}"
  # Beside each spoke, its fence watchdog (deploy/spoke's second Deployment).
  watchdog_admin[$c]=$(free_port)
  start_bg "watchdog-$c" "$BIN/kdfed-spoke" --fence-watchdog --kubeconfig "$FLEET_DIR/$c-watchdog-sa.kubeconfig" \
    --admin-address "127.0.0.1:${watchdog_admin[$c]}" --log-format json
done
for i in $(seq 60); do
  avail=$($PLATFORM member list 2>/dev/null | awk 'NR>1 && $3=="True"' | wc -l)
  [ "$avail" = 2 ] && break
  sleep 1
done

step "Starting Prometheus (scraping the hub, both spokes, their fence watchdogs and the console, with kdfed's alert rules)"
prom_port=$(free_port)
console_port=$(free_port)   # the console starts below
console_admin=$(free_port)
mkdir -p "$FLEET_DIR/prometheus"
cat > "$FLEET_DIR/prometheus/prometheus.yml" <<PROM
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
- $kdfed_root/dashboards/alerts.yaml
scrape_configs:
- job_name: kdfed-hub
  static_configs:
  - targets: ['127.0.0.1:$hub_admin']
- job_name: kdfed-spoke
  static_configs:
  - targets: ['127.0.0.1:${spoke_admin[east]}', '127.0.0.1:${spoke_admin[west]}']
- job_name: kdfed-fence-watchdog
  static_configs:
  - targets: ['127.0.0.1:${watchdog_admin[east]}', '127.0.0.1:${watchdog_admin[west]}']
- job_name: kdfed-console
  static_configs:
  - targets: ['127.0.0.1:$console_admin']
PROM
start_bg prometheus /usr/bin/prometheus --config.file="$FLEET_DIR/prometheus/prometheus.yml" \
  --storage.tsdb.path="$FLEET_DIR/prometheus/data" --web.listen-address="127.0.0.1:$prom_port"

step "Loading the example catalog and launching an example cluster by placement labels"
for i in $(seq 30); do
  $KDFED apply -f examples/apps >/dev/null 2>&1 && break
  sleep 1  # the webhook may need a moment after registration
done
$KDFED apply -f examples/clusters/minimal.yaml
# The greeter app's setup package, packed here and fetched by the members from this machine.
# Its cluster `greeting` chooses language=fr, not the app's default.
mkdir -p "$FLEET_DIR/packages"
tar czf "$FLEET_DIR/packages/greeter-setup.tgz" -C deploy/local/greeter/setup greeter
sed "s|@PACKAGE_URL@|file://$FLEET_DIR/packages/greeter-setup.tgz|" deploy/local/greeter/app.yaml.in \
  > "$FLEET_DIR/packages/greeter-app.yaml"
$KDFED apply -f "$FLEET_DIR/packages/greeter-app.yaml"
$KDFED apply -f deploy/local/greeter/cluster.yaml

step "Waiting until the example clusters are configured on their members (greeting runs its setup package)"
for cluster in hello greeting; do
  for i in $(seq 120); do
    ready=$("$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/hub.kubeconfig" get kdcluster "$cluster" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    [ "$ready" = True ] && break
    sleep 1
  done
  [ "$ready" = True ] || { echo "example cluster $cluster not ready; see $FLEET_DIR/logs" >&2; $KDFED cluster list >&2 || true; exit 1; }
  echo "  $cluster: Ready"
done

step "Starting the console (sign-in mode on loopback) and a sample end user, alice in team-a"
# alice (ServiceAccount team-a/alice) may manage clusters and read apps and Events in team-a
# only, and read the member clusters (cluster-scoped) for the launch form's placement hints.
"$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/hub.kubeconfig" apply -f - >/dev/null <<'RBAC'
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: alice, namespace: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: app-user, namespace: team-a}
rules:
- apiGroups: [kubedirector.hpe.com]
  resources: [kubedirectorapps]
  verbs: [get, list, watch]
- apiGroups: [kubedirector.hpe.com]
  resources: [kubedirectorclusters]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-app-user, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: app-user}
subjects: [{kind: ServiceAccount, name: alice, namespace: team-a}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kdfed-member-reader}
rules:
- apiGroups: [federation.kubedirector.hpe.com]
  resources: [kubedirectormembers]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-member-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kdfed-member-reader}
subjects: [{kind: ServiceAccount, name: alice, namespace: team-a}]
RBAC
# team-a's catalog: the example apps and the greeter.
$KDFED -n team-a apply -f examples/apps >/dev/null
$KDFED -n team-a apply -f "$FLEET_DIR/packages/greeter-app.yaml" >/dev/null
alice_token=$("$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/hub.kubeconfig" -n team-a create token alice --duration 24h)
openssl rand -hex 32 > "$FLEET_DIR/console-session.key"
# Sign-in mode: the hub's URL and CA from the admin kubeconfig, whose credentials the console
# drops; plain HTTP on 127.0.0.1 (browsers keep the Secure session cookie on loopback).
start_bg console "$BIN/kdfed-console" --hub-kubeconfig "$FLEET_DIR/hub.kubeconfig" \
  --address "127.0.0.1:$console_port" --admin-address "127.0.0.1:$console_admin" \
  --session-key-file "$FLEET_DIR/console-session.key" --log-format json
for i in $(seq 60); do
  curl -fsS "http://127.0.0.1:$console_admin/readyz" >/dev/null 2>&1 && break
  [ "$i" = 60 ] && { echo "the console did not become ready; see $FLEET_DIR/logs/console.log" >&2; exit 1; }
  sleep 1
done
echo "$alice_token" > "$FLEET_DIR/alice.token"
echo "  console: http://127.0.0.1:$console_port (alice's token: $FLEET_DIR/alice.token)"

step "Fleet summary"
for c in hub east west; do
  server=$(sed -n 's/^ *server: //p' "$FLEET_DIR/$c.kubeconfig")
  printf '  %-5s %s  kubeconfig: %s\n' "$c" "$server" "$FLEET_DIR/$c.kubeconfig"
done
echo
$PLATFORM member list
echo
$PLATFORM cluster list
echo
$PLATFORM catalog list
echo
$PLATFORM -n default catalog show greeter
echo
pod=$("$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/hub.kubeconfig" get kdcluster greeting \
  -o jsonpath='{.status.roles[0].members[0].pod}' 2>/dev/null || true)
if [ -n "$pod" ]; then
  printf '  greeting/%s on west says: ' "$pod"
  "$KDFED_KUBECTL" --kubeconfig "$FLEET_DIR/west.kubeconfig" exec "$pod" -c app -- sh -c 'cat /var/lib/greeter/index.txt' 2>/dev/null \
    || echo "(exec failed; see $FLEET_DIR/logs/exec-sync.log)"
fi
echo
echo "  metrics:    hub http://127.0.0.1:$hub_admin/metrics, east http://127.0.0.1:${spoke_admin[east]}/metrics, west http://127.0.0.1:${spoke_admin[west]}/metrics"
echo "              fence watchdogs east http://127.0.0.1:${watchdog_admin[east]}/metrics, west http://127.0.0.1:${watchdog_admin[west]}/metrics"
echo "  Prometheus: http://127.0.0.1:$prom_port (dashboards to import into Grafana: dashboards/*.json)"
echo "  console:    http://127.0.0.1:$console_port (metrics http://127.0.0.1:$console_admin/metrics); sign in as"
echo "              alice (team-a: clusters, apps; member list) with the token in $FLEET_DIR/alice.token:"
echo "              $alice_token"
echo "              or open it as the hub's admin: $BIN/kdfed --kubeconfig $FLEET_DIR/hub.kubeconfig console"
cat <<MSG

The fleet runs in the background (logs: $FLEET_DIR/logs/). Try:
  $BIN/kdfed --kubeconfig $FLEET_DIR/platform.kubeconfig cluster list   (the platform team's identity)
  $KDFED_KUBECTL --kubeconfig $FLEET_DIR/hub.kubeconfig get kdcluster hello -o yaml
  $KDFED_KUBECTL --kubeconfig $FLEET_DIR/east.kubeconfig get pods
  $KDFED_KUBECTL --kubeconfig $FLEET_DIR/west.kubeconfig exec <greeting pod> -c app -- sh -c 'cat /var/log/greeter/events'
  (the test bed runs exec'd commands inside a pod's own files only when they start with sh or bash)
Stop it with: deploy/local/down.sh
MSG
