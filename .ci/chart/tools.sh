#!/usr/bin/env bash
# Builds the chart-check tools into .ci/chart/bin, each only when it is
# missing or was built at another version (a <tool>.version stamp beside it).
# Everything comes from the Go module proxy; nothing is downloaded otherwise.
#
#   tools.sh helm kubeconform helm-unittest        # make test-chart
#   tools.sh kube etcd kwok                        # make test-chart-install
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Outside the checkout, so every clone on this machine (CI included) reuses the builds.
BIN="${CHART_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/hubnode/chart-bin}"
mkdir -p "$BIN"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 GOFLAGS=-buildvcs=false

HELM_VERSION=v3.22.0          # its k8s.io modules are v0.37 -> Capabilities 1.37
KUBECONFORM_VERSION=v0.8.0
HELM_UNITTEST_VERSION=v1.1.2  # built against helm v3.21.3 / k8s.io v0.36
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

fresh() { # fresh NAME VERSION: true when BIN/NAME exists at VERSION
  [[ -x "$BIN/$1" && "$(cat "$BIN/$1.version" 2>/dev/null)" == "$2" ]]
}
stamp() { echo "$2" >"$BIN/$1.version"; }
say() { echo "tools: building $*" >&2; }

build_helm() {
  fresh helm "$HELM_VERSION" && return
  say "helm $HELM_VERSION"
  # Plain `go install` leaves helm reporting Kubernetes v1.20 to
  # .Capabilities (and to lint's deprecation rule); stamp what the release
  # Makefile stamps.
  local p=helm.sh/helm/v3
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w \
    -X $p/internal/version.version=$HELM_VERSION \
    -X $p/pkg/chartutil.k8sVersionMajor=1 -X $p/pkg/chartutil.k8sVersionMinor=37 \
    -X $p/pkg/lint/rules.k8sVersionMajor=1 -X $p/pkg/lint/rules.k8sVersionMinor=37" \
    "$p/cmd/helm@$HELM_VERSION"
  stamp helm "$HELM_VERSION"
}

build_kubeconform() {
  fresh kubeconform "$KUBECONFORM_VERSION" && return
  say "kubeconform $KUBECONFORM_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  stamp kubeconform "$KUBECONFORM_VERSION"
}

build_helm_unittest() {
  fresh helm-unittest "$HELM_UNITTEST_VERSION" && return
  say "helm-unittest $HELM_UNITTEST_VERSION (wrapper module)"
  local p=helm.sh/helm/v3
  (cd "$here/tools/helm-unittest" && go build -trimpath -ldflags "-s -w \
    -X $p/pkg/chartutil.k8sVersionMajor=1 -X $p/pkg/chartutil.k8sVersionMinor=36" \
    -o "$BIN/helm-unittest" github.com/helm-unittest/helm-unittest/cmd/helm-unittest)
  stamp helm-unittest "$HELM_UNITTEST_VERSION"
}

build_kube() {
  local c ok=1 v=${KUBE_VERSION#v}
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    fresh "$c" "$KUBE_VERSION" || ok=0
  done
  ((ok)) && return
  local p=k8s.io/component-base/version
  # gitVersion/gitMajor/gitMinor so clients (helm, kwokctl) can parse /version.
  local ld="-s -w -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=${v%%.*} -X $p.gitMinor=$(cut -d. -f2 <<<"$v") \
    -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    fresh "$c" "$KUBE_VERSION" && continue
    say "$c $KUBE_VERSION (wrapper module; minutes)"
    (cd "$here/tools/kube" && go build -trimpath -ldflags "$ld" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c")
    stamp "$c" "$KUBE_VERSION"
  done
}

build_etcd() {
  fresh etcd "$ETCD_VERSION" && return
  say "etcd $ETCD_VERSION (wrapper module)"
  (cd "$here/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  stamp etcd "$ETCD_VERSION"
}

build_kwok() {
  local c
  for c in kwok kwokctl; do
    fresh "$c" "$KWOK_VERSION" && continue
    say "$c $KWOK_VERSION"
    GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/$c@$KWOK_VERSION"
    stamp "$c" "$KWOK_VERSION"
  done
}

for t in "$@"; do
  case "$t" in
  helm) build_helm ;;
  kubeconform) build_kubeconform ;;
  helm-unittest) build_helm_unittest ;;
  kube) build_kube ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  *) echo "tools.sh: unknown tool $t" >&2; exit 2 ;;
  esac
done
