#!/usr/bin/env bash
# Builds the test bed's binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, helm) from the Go module proxy at pinned versions into a
# cache outside the repository. Idempotent: a second run only checks the cache.
#
# Go is a test-bed tool only; the product is Rust.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${KDFED_CACHE:-$HOME/.cache/kdfed}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
mkdir -p "$BIN" "$SRC"

log() { printf '[testbed-install] %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go is required (test bed only)"; exit 1; }
if ! command -v openssl >/dev/null; then
  log "installing openssl"
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"

# --- helm (chart tests) -------------------------------------------------------------
# helm.sh/helm/v3 has no replace directives, so `go install` builds it as published. It
# is built in the background, beside the other builds, and waited for at the end.
helm_dir="$BIN/helm-$HELM_VERSION"
helm_pid=""
if [ ! -x "$helm_dir/helm" ]; then
  log "building helm $HELM_VERSION (in the background)"
  mkdir -p "$helm_dir"
  (
    # As helm's Makefile: its version, and the Kubernetes version of its client-go as the
    # default for `helm template` and `helm lint` (else v1.20).
    helm_gomod=$(GOFLAGS= go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
    k8s_minor=$(sed -n 's/^\s*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$helm_gomod")
    hv="helm.sh/helm/v3/internal/version"
    ldflags="-s -w -X $hv.version=$HELM_VERSION -X $hv.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
      ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
    done
    GOBIN="$helm_dir/.tmp" GOFLAGS="-buildvcs=false" go install -ldflags "$ldflags" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    mv "$helm_dir/.tmp/helm" "$helm_dir/helm"
    rmdir "$helm_dir/.tmp"
    log "helm $HELM_VERSION built"
  ) &
  helm_pid=$!
fi

# --- Kubernetes control plane -------------------------------------------------
k8s_dir="$BIN/k8s-$K8S_VERSION"
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
need_k8s=0
for c in "${k8s_cmds[@]}"; do [ -x "$k8s_dir/$c" ] || need_k8s=1; done
if [ "$need_k8s" = 1 ]; then
  log "building Kubernetes $K8S_VERSION (${k8s_cmds[*]}); cold builds take 15-30 minutes"
  mod="$SRC/k8s-$K8S_VERSION"
  mkdir -p "$mod" "$k8s_dir"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  [ -f "$gomod" ] || { log "cannot download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  minor="${K8S_VERSION#v1.}"
  staging_version="v0.$minor"
  {
    echo "module kdfed.local/testbed-k8s"
    echo
    echo "go $(sed -n 's/^go \(.*\)/\1/p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # every staging module that kubernetes requires at v0.0.0 gets the matching v0.Y.Z
    grep -E '^\s+k8s\.io/[^ ]+ v0\.0\.0\s*$' "$gomod" | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } > "$mod/go.mod"
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
    ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${k8s_cmds[@]}"; do
    if [ ! -x "$k8s_dir/$c" ]; then
      log "go build $c"
      (cd "$mod" && go build -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$k8s_dir/$c.tmp" "k8s.io/kubernetes/cmd/$c")
      mv "$k8s_dir/$c.tmp" "$k8s_dir/$c"
    fi
  done
fi

# --- etcd -------------------------------------------------------------------------
etcd_dir="$BIN/etcd-$ETCD_VERSION"
if [ ! -x "$etcd_dir/etcd" ]; then
  log "building etcd $ETCD_VERSION"
  mod="$SRC/etcd-$ETCD_VERSION"
  mkdir -p "$mod" "$etcd_dir"
  cat > "$mod/go.mod" <<GOMOD
module kdfed.local/testbed-etcd

go 1.25

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$mod" && go build -ldflags "-s -w" -o "$etcd_dir/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
fi

# --- kwok -------------------------------------------------------------------------
kwok_dir="$BIN/kwok-$KWOK_VERSION"
if [ ! -x "$kwok_dir/kwok" ]; then
  log "building kwok $KWOK_VERSION"
  mkdir -p "$kwok_dir"
  GOBIN="$kwok_dir" GOFLAGS="-buildvcs=false" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
# kwok's stage and CRD YAMLs ship in its module
kwok_mod=$(GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
rm -rf "$kwok_dir/kustomize"
cp -r "$kwok_mod/kustomize" "$kwok_dir/kustomize"
chmod -R u+w "$kwok_dir/kustomize"

if [ -n "$helm_pid" ]; then
  wait "$helm_pid" || { log "building helm $HELM_VERSION failed"; exit 1; }
fi

# A stable place for the runtime to find everything.
cat > "$BIN/env" <<ENV
KDFED_KUBE_APISERVER=$k8s_dir/kube-apiserver
KDFED_KUBE_CONTROLLER_MANAGER=$k8s_dir/kube-controller-manager
KDFED_KUBE_SCHEDULER=$k8s_dir/kube-scheduler
KDFED_KUBECTL=$k8s_dir/kubectl
KDFED_ETCD=$etcd_dir/etcd
KDFED_KWOK=$kwok_dir/kwok
KDFED_KWOK_STAGES=$kwok_dir/kustomize/stage
KDFED_KWOK_CRDS=$kwok_dir/kustomize/crd/bases
KDFED_HELM=$helm_dir/helm
K8S_VERSION=$K8S_VERSION
ENV
log "test bed binaries ready in $BIN (see $BIN/env)"
