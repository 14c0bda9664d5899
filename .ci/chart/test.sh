#!/usr/bin/env bash
# Chart and compose checks, offline (make test-chart):
#   1. tools: helm, kubeconform, helm-unittest built into .ci/chart/bin when missing;
#   2. Kubernetes JSON schemas converted from k8s.io/kubernetes' swagger.json
#      (cached in .ci/chart/cache), and a self-test that they refuse bad manifests;
#   3. for each value set in charts/hubnode/ci/: helm lint --strict, helm
#      template, kubeconform -strict on every rendered manifest;
#   4. values that must be refused are refused, with the expected message;
#   5. helm-unittest (charts/hubnode/tests);
#   6. helm package;
#   7. docker-compose.yml loaded by compose-go (unknown keys, depends_on) and,
#      when installed, by docker-compose v1's `config -q`.
# Everything temporary lives in one temp dir, removed on exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chart="$root/charts/hubnode"
# Outside the checkout, so every clone on this machine (CI included) reuses the builds.
BIN="${CHART_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/hubnode/chart-bin}"
CACHE="${CHART_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hubnode/chart-cache}"
KUBE_VERSION=v1.37.2
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS=-buildvcs=false

tmp="$(mktemp -d "${TMPDIR:-/tmp}/hubnode-chart.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# helm keeps its config and cache in the temp dir, not in $HOME.
export HELM_CONFIG_HOME="$tmp/helm/config" HELM_CACHE_HOME="$tmp/helm/cache" HELM_DATA_HOME="$tmp/helm/data"

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "tools"
"$here/tools.sh" helm kubeconform helm-unittest
helm="$BIN/helm"
"$helm" version --short

step "Kubernetes $KUBE_VERSION JSON schemas"
schemas="$CACHE/schemas-$KUBE_VERSION"
if [[ ! -f "$schemas/.complete" ]]; then
  dir="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "$dir/api/openapi-spec/swagger.json" ]] || fail "no swagger.json in k8s.io/kubernetes@$KUBE_VERSION"
  rm -rf "$schemas" && mkdir -p "$schemas"
  (cd "$here" && go run ./k8sschema -in "$dir/api/openapi-spec/swagger.json" -out "$schemas")
  touch "$schemas/.complete"
fi
echo "$(find "$schemas" -name '*.json' | wc -l) schemas in $schemas"
# ServiceMonitor is a CRD (Prometheus Operator) with no schema in
# Kubernetes' OpenAPI: a small hand-written one checks its shape.
kubeconform=("$BIN/kubeconform" -strict -summary -output text
  -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json"
  -schema-location "$here/schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json")

step "schema self-test: kubeconform must refuse broken manifests"
cat >"$tmp/bad-field.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: x
          image: x
          readinessProbes: {}   # misspelt: must be refused
EOF
cat >"$tmp/bad-type.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  ports:
    - port: "3000"              # a string where an integer belongs
EOF
cat >"$tmp/bad-required.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  template: {}                  # no selector
EOF
cat >"$tmp/good-quantities.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: x}
spec:
  containers:
    - name: x
      image: x
      resources: {requests: {cpu: 1, memory: 128Mi}, limits: {cpu: "1500m"}}
      ports: [{containerPort: 3000}]
      readinessProbe: {httpGet: {path: /, port: http}}
      livenessProbe: {httpGet: {path: /, port: 3000}}
EOF
for f in bad-field bad-type bad-required; do
  if "${kubeconform[@]}" "$tmp/$f.yaml" >"$tmp/$f.out" 2>&1; then
    cat "$tmp/$f.out"; fail "kubeconform accepted $f.yaml"
  fi
  echo "refused $f.yaml: $(grep -m1 -o "' - at .*" "$tmp/$f.out" | cut -c4-140)"
done
"${kubeconform[@]}" "$tmp/good-quantities.yaml" || fail "kubeconform refused int-or-string / Quantity forms"

step "lint, template and kubeconform per value set"
for values in "$chart"/ci/*-values.yaml; do
  name="$(basename "$values" -values.yaml)"
  echo "-- $name"
  "$helm" lint --strict "$chart" -f "$values" >"$tmp/lint-$name.out" 2>&1 || { cat "$tmp/lint-$name.out"; fail "helm lint --strict ($name)"; }
  for kv in 1.37.0 1.27.0; do
    out="$tmp/render-$name-$kv.yaml"
    "$helm" template hubnode-test "$chart" -n hubnode-test -f "$values" --kube-version "$kv" >"$out"
    "${kubeconform[@]}" "$out" || fail "kubeconform ($name, Kubernetes $kv)"
  done
  # The preStop sleep action exists from 1.30 only.
  grep -q 'sleep:' "$tmp/render-$name-1.37.0.yaml" || fail "$name: no preStop sleep on 1.37"
  ! grep -q 'sleep:' "$tmp/render-$name-1.27.0.yaml" || fail "$name: preStop sleep rendered for 1.27"
done
grep -q '^kind: ServiceMonitor' "$tmp/render-full-1.37.0.yaml" || fail "full: no ServiceMonitor rendered"

step "values that must be refused"
refuse() { # refuse 'expected message' helm-template-args...
  local want="$1"; shift
  if "$helm" template t "$chart" "$@" >"$tmp/refuse.out" 2>&1; then
    fail "rendered, expected refusal ($want): $*"
  fi
  grep -qF -- "$want" "$tmp/refuse.out" || { cat "$tmp/refuse.out"; fail "refused without \"$want\": $*"; }
  echo "refused: $* -> $want"
}
J=(--set secrets.jwtSecret=test-jwt-secret-0123456789)
refuse "needs Redis" "${J[@]}" --set replicaCount=3
refuse "needs Redis" "${J[@]}" --set autoscaling.enabled=true
refuse "secrets.jwtSecret (or secrets.existingSecret) is required"
refuse "leave secrets.jwtSecret, secrets.apiKey and redis.url empty" "${J[@]}" --set secrets.existingSecret=x
refuse "additional properties 'replicas' not allowed" "${J[@]}" --set replicas=3
refuse "minLength" --set secrets.jwtSecret=short
refuse "must be at least preStopSleepSeconds + config.shutdownTimeoutSeconds" "${J[@]}" --set terminationGracePeriodSeconds=20
refuse "must exceed config.pingIntervalSeconds" "${J[@]}" --set ingress.enabled=true --set ingress.proxyTimeoutSeconds=20
refuse "chart requires kubeVersion" "${J[@]}" --kube-version 1.26.0

step "pods roll on config and secret changes, and only then"
checksums() { "$helm" template t "$chart" "${J[@]}" "$@" | grep -E 'checksum/(config|secret):' | tr -d ' ' | sort | tr '\n' ' '; }
base="$(checksums)"
[[ "$(checksums --set replicaCount=1 --set resources.requests.cpu=200m)" == "$base" ]] || fail "checksums changed without a config change"
cfg="$(checksums --set config.logLevel=debug)"
[[ "${cfg%% *}" != "${base%% *}" && "${cfg#* }" == "${base#* }" ]] || fail "checksum/config did not follow config.logLevel: $base / $cfg"
sec="$(checksums --set secrets.apiKey=another-api-key-0123456789)"
[[ "${sec%% *}" == "${base%% *}" && "${sec#* }" != "${base#* }" ]] || fail "checksum/secret did not follow secrets.apiKey: $base / $sec"
echo "checksum/config follows config, checksum/secret follows the Secret, neither moves otherwise"

step "helm-unittest"
"$BIN/helm-unittest" --color=false "$chart"

step "helm package"
"$helm" package "$chart" -d "$tmp" >/dev/null
tar -tzf "$tmp"/hubnode-0.1.0.tgz | grep -E '/(tests|ci)/' && fail "package contains tests or ci values"
echo "packaged $(ls "$tmp"/*.tgz | xargs -n1 basename)"

step "docker-compose.yml"
(cd "$here/tools/composecheck" && go build -o "$BIN/composecheck" .)
(cd "$root" && JWT_SECRET=compose-check-secret-0123 API_KEY=compose-check-key-0123 "$BIN/composecheck" docker-compose.yml)
# Must refuse: no JWT_SECRET (the message says what to do), an unknown key.
if (cd "$root" && env -u JWT_SECRET -u API_KEY "$BIN/composecheck" docker-compose.yml) >"$tmp/compose.out" 2>&1 \
  || ! grep -q 'set JWT_SECRET' "$tmp/compose.out"; then
  cat "$tmp/compose.out"; fail "compose file loads without JWT_SECRET"
fi
sed 's/^    hostname: hubnode1$/&\n    hostnme: typo/' "$root/docker-compose.yml" >"$tmp/compose-typo.yml"
if JWT_SECRET=compose-check-secret-0123 API_KEY=compose-check-key-0123 "$BIN/composecheck" "$tmp/compose-typo.yml" >"$tmp/compose.out" 2>&1; then
  fail "compose-go accepted an unknown key"
fi
echo "refused: no JWT_SECRET; unknown key ($(grep -o 'hostnme.*' "$tmp/compose.out" | head -1))"
if command -v docker-compose >/dev/null; then
  (cd "$root" && JWT_SECRET=compose-check-secret-0123 API_KEY=compose-check-key-0123 docker-compose -f docker-compose.yml config -q) \
    && echo "docker-compose $(docker-compose version --short) config -q: ok"
else
  echo "docker-compose v1 not installed: skipped (compose-go checked the file)"
fi

printf '\nchart checks: ok\n'
