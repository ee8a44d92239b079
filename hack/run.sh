#!/usr/bin/env bash
# `make run`: brings up the local control plane (or, with CLUSTER=existing, uses the cluster that
# $KUBECONFIG names), runs the operator, applies manifests/examples/ and shows their status.
#
# NODE=real (the default): the data plane is real (hack/dataplane.py): the operator runs in the
# cluster from its own image, installed by helm from the chart, its webhooks called by the API
# server through its Service; the example model is signed into an in-cluster MinIO, verified by
# the operator and again, byte by byte, by fetch-verify in each model pod on the real node, and
# served; a pod of an admitted namespace calls it and gets the verified root digest, a pod of
# another namespace is refused by the model's NetworkPolicy (kube-router). Then the operator's log
# follows until Ctrl-C; the operator and the cluster keep running (`make cluster-down` stops them).
#
# NODE=kwok: every node simulated, the operator a process on this machine, until Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin=${BIN:-.venv/bin}
cluster=${CLUSTER:-local}
cluster_dir=${CLUSTER_DIR:-.cluster}
node=${NODE:-real}
# The chart's operator pods (release modelguard), each replica's log.
operator_pods=app.kubernetes.io/instance=modelguard
kubectl=$("$bin/python" hack/localcluster.py which kubectl)

show_status() {
  echo
  "$kubectl" get modeldeployments --all-namespaces -o wide
  echo
  "$kubectl" get modeldeployments --all-namespaces -o \
    custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,CONDITION:.status.conditions[*].type,STATUS:.status.conditions[*].status,REASON:.status.conditions[*].reason,MESSAGE:.status.conditions[*].message'
  echo
  "$kubectl" get modeldeployments --all-namespaces -o \
    custom-columns='NAME:.metadata.name,VERIFIED ROOT:.status.verification.rootDigest,SIGNER:.status.verification.signer,FILES:.status.verification.files'
  echo
  "$kubectl" get serviceaccounts,deployments,services,networkpolicies,pods --all-namespaces \
    -l app.kubernetes.io/managed-by=modelguard
}

if [ "$cluster" = local ] && [ "$node" = real ]; then
  "$bin/python" hack/localcluster.py up --dir "$cluster_dir" --node real
  export KUBECONFIG="$PWD/$cluster_dir/kubeconfig"
  # Images built and imported, the in-cluster store, the chart from the image's digest, the
  # operator pod Ready on the real node.
  "$bin/python" hack/dataplane.py up --dir "$cluster_dir"
  "$kubectl" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
  "$bin/python" hack/demo.py --kubeconfig "$KUBECONFIG" --store cluster
  # The example as written, with the digest of the model server image built here.
  "$bin/python" hack/dataplane.py example --dir "$cluster_dir" |
    "$kubectl" apply --server-side -f -
  applied=$SECONDS
  echo "run: waiting for the example to be verified, fetched and verified again in its pods, and served..."
  if "$kubectl" wait --for=condition=Ready --timeout=600s modeldeployments --all --all-namespaces; then
    echo "run: served $((SECONDS - applied))s after apply"
  else
    echo "run: not Ready in time; the operator's log follows" >&2
    "$kubectl" logs -n modelguard-system -l "$operator_pods" --prefix --tail=50 >&2 || true
  fi
  show_status
  echo
  "$kubectl" get pods -n team-nlp -o wide
  echo
  echo "run: calling the example from two namespaces (pods on the real node, kubectl exec + wget):"
  "$bin/python" hack/dataplane.py show --dir "$cluster_dir" || echo "run: the calls did not go as expected (above)" >&2
  echo
  echo "run: the admission webhook, called by the API server through the operator's Service, refuses a direct change of what the operator manages:"
  "$kubectl" scale deployment sentiment -n team-nlp --replicas=5 2>&1 | sed 's/^/  /' || true
  echo
  echo "run: the operator runs in the cluster (deployment/modelguard in modelguard-system); its replicas' logs follow. Ctrl-C stops following; the operator and the cluster keep running until \`make cluster-down\`."
  echo "run: KUBECONFIG=$KUBECONFIG"
  trap 'echo; echo "run: stopped following the log; the operator keeps running (make cluster-down stops it)"; exit 0' INT
  # Every replica's log: the one that reconciles is whichever holds the Lease.
  "$kubectl" logs -f -n modelguard-system -l "$operator_pods" --prefix --tail=20 || true
  exit 0
fi

case "$cluster" in
  local)
    echo "run: NODE=kwok: every node simulated; no container runs, so nothing is fetched, verified in a pod or served, and NetworkPolicies are objects nothing enforces; the operator runs on this machine"
    "$bin/python" hack/localcluster.py up --dir "$cluster_dir" --node "$node"
    export KUBECONFIG="$PWD/$cluster_dir/kubeconfig"
    # kwok runs no containers, so the model pods' agent image is never pulled here; any image
    # pinned by digest satisfies the operator.
    export MODELGUARD_AGENT_IMAGE="${MODELGUARD_AGENT_IMAGE:-ghcr.io/modelguard-dev/modelguard@sha256:$(printf '0%.0s' {1..64})}"
    ;;
  existing)
    : "${KUBECONFIG:?CLUSTER=existing needs KUBECONFIG to name the cluster to use}"
    : "${MODELGUARD_AGENT_IMAGE:?CLUSTER=existing needs MODELGUARD_AGENT_IMAGE: the modelguard image by digest, which model pods run as their verifying init container}"
    echo "run: using the existing cluster of context $("$kubectl" config current-context)"
    ;;
  *)
    echo "run: CLUSTER must be 'local' or 'existing', not '$cluster'" >&2
    exit 2
    ;;
esac

if [ "$cluster" = local ]; then
  # The chart as a platform team installs it: CRDs, the operator's ServiceAccount and its
  # least-privilege RBAC. Its operator Deployment is scaled to zero because kwok runs no
  # containers: the operator runs on this machine instead, under that ServiceAccount's identity.
  helm=$("$bin/python" hack/localcluster.py which helm)
  "$helm" --kubeconfig "$KUBECONFIG" upgrade --install modelguard charts/modelguard \
    --namespace modelguard-system --create-namespace \
    --set replicaCount=0 --set webhook.enabled=false --set "image.digest=${MODELGUARD_AGENT_IMAGE#*@}" \
    --set "image.repository=${MODELGUARD_AGENT_IMAGE%@*}" \
    --wait --timeout 180s >/dev/null
  echo "run: chart installed (release modelguard, namespace modelguard-system)"
  # A previous run that was killed may have left its loopback webhooks registered.
  "$kubectl" delete validatingwebhookconfiguration modelguard-local --ignore-not-found >/dev/null
else
  "$kubectl" apply --server-side --force-conflicts -f crds/
fi
"$kubectl" wait --for=condition=Established --timeout=60s -f crds/

# The example's model store: a local S3 server with the example model signed by a demo key, the
# TrustPolicy trusting that key, and the storage Secret the example names.
if [ "$cluster" = local ]; then
  "$bin/python" hack/demo.py --kubeconfig "$KUBECONFIG" --store local
else
  echo "run: CLUSTER=existing: the examples need your TrustPolicy, model store and Secret (README)"
fi

mkdir -p .run
log=.run/operator.log
: > "$log"
if [ "$cluster" = local ]; then
  # As the chart's ServiceAccount, serving the chart's admission webhooks on loopback.
  PYTHONPATH=hack "$bin/python" hack/localoperator.py --kubeconfig "$KUBECONFIG" \
    --dir .run/operator --log "$log" >> "$log" 2>&1 &
  operator=$!
  until grep -q "admission webhooks on" "$log"; do
    kill -0 "$operator" 2>/dev/null || { tail -n 50 "$log" >&2; exit 1; }
    sleep 0.5
  done
else
  "$bin/modelguard" run --verbose >> "$log" 2>&1 &
  operator=$!
fi
trap 'kill "$operator" 2>/dev/null; wait "$operator" 2>/dev/null; echo; echo "run: operator stopped"' EXIT

"$kubectl" apply --server-side -f manifests/examples/
echo "run: waiting for the examples to become Ready..."
if ! "$kubectl" wait --for=condition=Ready --timeout=120s modeldeployments --all --all-namespaces; then
  echo "run: not Ready in time; the operator log follows" >&2
  tail -n 50 "$log" >&2
fi
show_status
if [ "$cluster" = local ]; then
  echo
  echo "run: the admission webhook refuses a direct change of what the operator manages:"
  "$kubectl" scale deployment sentiment -n team-nlp --replicas=5 2>&1 | sed 's/^/  /' || true
fi
echo
echo "run: the operator keeps running (its log follows, also in $log); Ctrl-C stops it."
echo "run: KUBECONFIG=$KUBECONFIG"
tail -n +1 -f "$log" &
tailer=$!
trap 'kill "$tailer" "$operator" 2>/dev/null; wait "$operator" 2>/dev/null; echo; echo "run: operator stopped"' EXIT
wait "$operator"
