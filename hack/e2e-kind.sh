#!/usr/bin/env bash
# `make e2e-kind`: ModelGuard end to end on a kind cluster, for users with a Docker engine.
#
#   1. builds kind from its pinned Go module (hack/tools/kind) and creates a cluster
#      ($KIND_CLUSTER, default modelguard-e2e; node image $KIND_NODE_IMAGE, default kind's own);
#   2. builds the operator image with the Dockerfile and loads it into the nodes (`kind load
#      docker-image`); the chart names images by digest, so the digest containerd gave the loaded
#      image is read back from a node (`crictl inspecti`) and used with imagePullPolicy Never;
#   3. installs the chart with it (admission webhooks on, certificates from the chart) and waits
#      for the operator pod to be Ready and its webhook to refuse what it must;
#   4. runs the integration suite against the cluster (`pytest tests/integration
#      --kubeconfig=...`, the existing-cluster mode of `make test`), unless E2E_SUITE=0;
#   5. deletes the cluster, unless KEEP=1.
#
# It needs Docker and cannot run where there is none: this project's own tests run on a local
# control plane built from source (`make test`), and this target is not run by them or by CI.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bin=${BIN:-.venv/bin}
cluster=${KIND_CLUSTER:-modelguard-e2e}
state=${E2E_DIR:-.e2e-kind}
kubeconfig="$state/kubeconfig"
namespace=modelguard-system
release=modelguard
image=ghcr.io/modelguard-dev/modelguard:e2e

say() { printf 'e2e-kind: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

if ! command -v docker >/dev/null 2>&1; then
  fail "needs Docker: no docker command on PATH. kind runs its nodes as Docker containers, and the
image is built with the Dockerfile. On a machine without a container engine run \`make test\`,
which runs the same suite on a local control plane built from source."
fi
if ! docker info >/dev/null 2>&1; then
  fail "needs a running Docker engine: \`docker info\` failed ($(docker info 2>&1 | tail -1)).
Start it (or set DOCKER_HOST), or run \`make test\` instead."
fi

hack/build-tools.sh kind helm kubernetes
kind=$("$bin/python" hack/localcluster.py which kind)
helm=$("$bin/python" hack/localcluster.py which helm)
kubectl=$("$bin/python" hack/localcluster.py which kubectl)
mkdir -p "$state"

cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    say "cluster $cluster kept (KEEP=1); KUBECONFIG=$kubeconfig; delete it with: $kind delete cluster --name $cluster"
  else
    "$kind" delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

say "creating kind cluster $cluster"
"$kind" create cluster --name "$cluster" --kubeconfig "$kubeconfig" --wait 120s \
  ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
"$kubectl" --kubeconfig "$kubeconfig" version

say "building $image with the Dockerfile"
docker build --platform linux/amd64 -t "$image" .
"$kind" load docker-image --name "$cluster" "$image"
node=$("$kind" get nodes --name "$cluster" | head -1)
# The name containerd gives the loaded image by its manifest digest: what the chart pins.
digest=$(docker exec "$node" crictl inspecti -o go-template \
  --template '{{range .status.repoDigests}}{{println .}}{{end}}' "$image" | sed -n 's/.*@//p' | head -1)
[ -n "$digest" ] || fail "no digest for $image in node $node (crictl inspecti shows no repoDigests)"
say "image loaded as ${image%:*}@$digest"

say "installing the chart"
"$kubectl" --kubeconfig "$kubeconfig" create namespace "$namespace"
"$kubectl" --kubeconfig "$kubeconfig" label namespace "$namespace" \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
"$helm" --kubeconfig "$kubeconfig" install "$release" charts/modelguard -n "$namespace" \
  --set image.digest="$digest" --set imagePullPolicy=Never --wait --timeout 300s
"$kubectl" --kubeconfig "$kubeconfig" -n "$namespace" rollout status deployment/"$release" --timeout=180s

say "checking that the admission webhook answers"
refused=$("$kubectl" --kubeconfig "$kubeconfig" apply -f - 2>&1 <<YAML || true
apiVersion: modelguard.dev/v1alpha1
kind: ModelDeployment
metadata: {name: e2e-refused, namespace: default}
spec:
  trustPolicy: does-not-exist
  model: {name: m, version: "1", source: {uri: "s3://models/m/1/"}}
  serving: {image: "registry.example/s@sha256:$(printf '0%.0s' $(seq 64))"}
YAML
)
case "$refused" in
  *does-not-exist*) say "refused as it must be: ${refused##*: }" ;;
  *) fail "a ModelDeployment naming a missing TrustPolicy was not refused: $refused" ;;
esac

if [ "${E2E_SUITE:-1}" = 1 ]; then
  say "running the integration suite against $cluster"
  # The suite installs its own release of the chart and runs the operator it tests; the one
  # above is removed first so that the two do not answer the same webhooks.
  "$helm" --kubeconfig "$kubeconfig" uninstall "$release" -n "$namespace" --wait
  "$bin/pytest" tests/integration --kubeconfig="$repo/$kubeconfig" ${PYTEST_ARGS:-}
fi
say "done"
