#!/usr/bin/env bash
# Builds the binaries the local cluster and the tests need from their upstream Go modules, once per
# machine, into a cache outside the repository keyed by component and version: the control plane
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd), kwok, helm, minio for the
# S3 server, and the real node (kubelet, kube-proxy, containerd with its runc shim and ctr,
# kube-router's network policy controller, CoreDNS), and trivy, a judge of what the chart and the
# operator produce. Each component's version is pinned in exactly one place: the go.mod of its
# wrapper module under hack/tools/<component>/. runc and the CNI plugins are Debian's
# (hack/install-packages.sh).
#
# Usage: hack/build-tools.sh [component...]     (default: all)
# Prints nothing but progress on stderr; the cache root is $MODELGUARD_CACHE
# (default ~/.cache/modelguard).
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${MODELGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelguard}

# A mismatch between the pinned modules and the local Go must fail loudly, not download a toolchain.
export GOTOOLCHAIN=local
# The official release binaries are static; so are ours.
export CGO_ENABLED=0
# go.sum is checked in: a build never edits it.
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"

log() { printf 'build-tools: %s\n' "$*" >&2; }

# module_version COMPONENT MODULE: the version of MODULE required by hack/tools/COMPONENT/go.mod.
module_version() {
  (cd "$hack_dir/tools/$1" && go list -m -f '{{.Version}}' "$2")
}

# build COMPONENT VERSION LDFLAGS PACKAGE...: builds those of PACKAGEs whose binary is not in
# $cache_root/COMPONENT-VERSION/ yet (a component gains binaries over time: only the new ones are
# built). Builds into a temporary directory and renames each binary into place, so an interrupted
# build never leaves a half-written binary behind. $build_tags, when set, are the Go build tags.
build() {
  local component=$1 version=$2 ldflags=$3
  shift 3
  local dest="$cache_root/$component-$version" missing=() pkg
  for pkg in "$@"; do [ -x "$dest/$(basename "$pkg")" ] || missing+=("$pkg"); done
  if [ ${#missing[@]} = 0 ]; then
    log "$component $version: cached in $dest"
    return
  fi
  local tmp="$dest.partial.$$" started=$SECONDS
  rm -rf "$tmp" && mkdir -p "$tmp" "$dest"
  log "$component $version: building ${missing[*]} (a cold build takes a while)"
  (cd "$hack_dir/tools/$component" &&
    go build ${build_tags:+-tags "$build_tags"} -ldflags "$ldflags" -o "$tmp/" "${missing[@]}")
  for pkg in "${missing[@]}"; do mv "$tmp/$(basename "$pkg")" "$dest/"; done
  rm -rf "$tmp"
  log "$component $version: built in $((SECONDS - started))s into $dest"
}

# Version stamps: without them the binaries call themselves v0.0.0-master and helm's kubeVersion
# checks, kwok's flag selection and the API server's emulation-version logic misbehave.
kube_ldflags() {
  local version=$1 minor date
  minor=$(echo "$version" | cut -d. -f2)
  date=$(cd "$hack_dir/tools/kubernetes" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
  local flags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

build_kubernetes() {
  local version
  version=$(module_version kubernetes k8s.io/kubernetes)
  build kubernetes "$version" "$(kube_ldflags "$version")" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}

build_etcd() {
  local version
  version=$(module_version etcd go.etcd.io/etcd/server/v3)
  build etcd "$version" "-s -w" ./cmd/etcd
}

build_kwok() {
  local version
  version=$(module_version kwok sigs.k8s.io/kwok)
  build kwok "$version" "-s -w" sigs.k8s.io/kwok/cmd/kwok
  # kwok only simulates what its Stage configuration says; ship upstream's stages of the same
  # release next to the binary, as kwokctl does: "fast" node and pod life cycles, and the node
  # heartbeat with leases (without it the node controller finds the nodes silent, marks them
  # NotReady and evicts every pod after five minutes).
  local dest="$cache_root/kwok-$version/stages" src stage
  src=$(cd "$hack_dir/tools/kwok" && go mod download -json sigs.k8s.io/kwok | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$dest"
  for stage in "$src"/kustomize/stage/node/fast/node-*.yaml \
    "$src"/kustomize/stage/node/heartbeat-with-lease/node-*.yaml \
    "$src"/kustomize/stage/pod/fast/pod-*.yaml; do
    [ -f "$dest/$(basename "$stage")" ] || cp "$stage" "$dest/"
  done
}

build_helm() {
  local version
  version=$(module_version helm helm.sh/helm/v3)
  # As helm's own Makefile does: the Kubernetes version helm assumes without a cluster (helm template,
  # helm lint) follows the client-go it is built with, or it defaults to v1.20.
  local client_go major minor flags="-s -w -X helm.sh/helm/v3/internal/version.version=$version" pkg
  client_go=$(module_version helm k8s.io/client-go)
  major=$(( $(echo "${client_go#v}" | cut -d. -f1) + 1 ))
  minor=$(echo "$client_go" | cut -d. -f2)
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  build helm "$version" "$flags" helm.sh/helm/v3/cmd/helm
}

build_minio() {
  local version
  version=$(module_version minio github.com/minio/minio)
  # MinIO publishes commits, not tagged module versions: its release stamp is the commit time, which
  # the pseudo-version (v0.0.0-YYYYMMDDhhmmss-<12 hex>) carries. The flags are those of MinIO's own
  # buildscripts/gen-ldflags.go (minus GOPATH/GOROOT, meaningless with -trimpath); without them the
  # server reports version "DEVELOPMENT.GOGET" and its commit is unknown.
  local stamp commit release flags="-s -w" pkg=github.com/minio/minio/cmd
  stamp=$(echo "$version" | cut -d- -f2)
  commit=$(echo "$version" | cut -d- -f3)
  release="${stamp:0:4}-${stamp:4:2}-${stamp:6:2}T${stamp:8:2}:${stamp:10:2}:${stamp:12:2}Z"
  flags+=" -X $pkg.Version=$release -X $pkg.CopyrightYear=${stamp:0:4}"
  flags+=" -X $pkg.ReleaseTag=DEVELOPMENT.${release//:/-}"
  flags+=" -X $pkg.CommitID=$commit -X $pkg.ShortCommitID=$commit"
  build minio "$version" "$flags" github.com/minio/minio
}

build_containerd() {
  local version pkg=github.com/containerd/containerd/v2 flags
  version=$(module_version containerd "$pkg")
  # As containerd's Makefile stamps a release; the tags are its static build's, minus the snapshotters
  # this node never uses (btrfs, devmapper, zfs). The shim also leaves gRPC out (no_grpc), as
  # upstream builds it: it speaks ttrpc only.
  flags="-s -w -X $pkg/version.Version=$version -X $pkg/version.Package=$pkg"
  build_tags="no_btrfs no_devmapper no_zfs urfave_cli_no_docs osusergo netgo static_build" \
    build containerd "$version" "$flags" "$pkg/cmd/containerd" "$pkg/cmd/ctr"
  build_tags="no_btrfs no_devmapper no_zfs urfave_cli_no_docs osusergo netgo static_build no_grpc" \
    build containerd "$version" "$flags" "$pkg/cmd/containerd-shim-runc-v2"
}

build_kube_router() {
  local version pkg=github.com/cloudnativelabs/kube-router/v2 date
  version=$(module_version kube-router "$pkg")
  date=$(cd "$hack_dir/tools/kube-router" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$pkg")
  build kube-router "$version" \
    "-s -w -X $pkg/pkg/version.Version=$version -X $pkg/pkg/version.BuildDate=$date" \
    "$pkg/cmd/kube-router"
}

build_coredns() {
  local version
  version=$(module_version coredns github.com/coredns/coredns)
  build coredns "$version" "-s -w" ./cmd/coredns
}

build_trivy() {
  local version pkg=github.com/aquasecurity/trivy
  version=$(module_version trivy "$pkg")
  # As trivy's goreleaser.yml stamps a release: the version without its "v" (what `trivy --version`
  # prints), built with the JSON v2 experiment its code needs (encoding/json/v2), statically.
  GOEXPERIMENT=jsonv2 build trivy "$version" \
    "-s -w -X $pkg/pkg/version/app.ver=${version#v}" "$pkg/cmd/trivy"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(etcd kwok helm kubernetes minio containerd kube-router coredns trivy)
for component in "${components[@]}"; do
  "build_${component//-/_}"
done
