#!/usr/bin/env bash
# Build the test control plane from Go modules (the Go module proxy), once per version:
#   kube-apiserver, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes, hack/cluster/kube)
#   etcd                                                     (go.etcd.io/etcd/server/v3, hack/cluster/etcd)
#   helm                                                     (helm.sh/helm/v4, hack/cluster/helm)
#
# Output: $KUBEVINE_CLUSTER_CACHE/<kubernetes version>/bin (default cache:
# ${XDG_CACHE_HOME:-$HOME/.cache}/kubevine/cluster), outside the checkout. A stamp file there
# records what was built (a hash of the three go.mod/go.sum pairs and the Go version); when it
# matches, nothing is built. The bin directory is the only line this script prints on stdout;
# progress goes to stderr.
#
# Env: KUBEVINE_CLUSTER_CACHE (cache root), KUBEVINE_CLUSTER_BUILD_JOBS (go build -p, default
# the number of cores), GOCACHE (default <cache root>/go-build, removed after a successful build
# unless KUBEVINE_CLUSTER_KEEP_GOCACHE=1), GOMODCACHE (Go's default, ~1.2 GB of sources).
# The first build on 2 cores takes many minutes (docs/dev/real-cluster.md has the measured time).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${KUBEVINE_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevine/cluster}"
go_bin="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

mod_version() { # module path, go.mod file -> the version that go.mod requires
    awk -v m="$1" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$2"
}
kube_version="$(mod_version k8s.io/kubernetes "$here/kube/go.mod")"
etcd_version="$(mod_version go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")"
helm_version="$(mod_version helm.sh/helm/v4 "$here/helm/go.mod")"
[[ -n "$kube_version" && -n "$etcd_version" && -n "$helm_version" ]] || {
    echo "build.sh: cannot read module versions from $here/*/go.mod" >&2
    exit 1
}

out="$cache_root/$kube_version"
bin="$out/bin"
stamp="$out/stamp"
want_stamp="$(
    {
        "$go_bin" version
        echo "kubernetes $kube_version etcd $etcd_version helm $helm_version"
        cat "$here"/kube/go.mod "$here"/kube/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum \
            "$here"/etcd/main.go "$here"/helm/go.mod "$here"/helm/go.sum
    } | sha256sum | cut -d' ' -f1
)"
binaries=(kube-apiserver kube-controller-manager kube-scheduler etcd helm)

have_all() {
    [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]] || return 1
    local b
    for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if have_all; then
    echo "$bin"
    exit 0
fi

mkdir -p "$out"
# One builder at a time (pytest and `make cluster` may both ask): the second waits, then finds
# the stamp.
exec 9>"$out/.lock"
flock 9
if have_all; then
    echo "$bin"
    exit 0
fi

own_gocache=""
if [[ -z "${GOCACHE:-}" ]]; then
    own_gocache="$cache_root/go-build"
    export GOCACHE="$own_gocache"
fi
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
export CGO_ENABLED=0 GOTOOLCHAIN=local
jobs="${KUBEVINE_CLUSTER_BUILD_JOBS:-$(nproc)}"
export GOMAXPROCS="$jobs"
mkdir -p "$bin.new"
rm -f "$bin.new"/*

log() { echo "build.sh: $*" >&2; }
build() { # module dir, ldflags, packages...
    local dir="$1" ldflags="$2"
    shift 2
    (cd "$here/$dir" && nice -n 10 "$go_bin" build -p "$jobs" -ldflags "-s -w $ldflags" -o "$bin.new/" "$@")
}

started=$(date +%s)
log "building into $bin (kubernetes $kube_version, etcd $etcd_version, helm $helm_version; go -p $jobs; GOCACHE=$GOCACHE)"
log "a cold build on 2 cores takes many minutes"

t=$(date +%s)
build etcd "" .
log "etcd built in $(($(date +%s) - t)) s"

t=$(date +%s)
build helm "-X helm.sh/helm/v4/internal/version.version=$helm_version -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    helm.sh/helm/v4/cmd/helm
log "helm built in $(($(date +%s) - t)) s"

t=$(date +%s)
minor="${kube_version#v1.}"
minor="${minor%%.*}"
kflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    kflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    kflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
build kube "$kflags" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
log "kube-apiserver, kube-controller-manager, kube-scheduler built in $(($(date +%s) - t)) s"

elapsed=$(($(date +%s) - started))
rm -rf "$bin"
mv "$bin.new" "$bin"
{
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in ${elapsed} s wall clock on $(nproc) cores (go -p $jobs)"
    echo "kubernetes $kube_version etcd $etcd_version helm $helm_version"
    "$go_bin" version
} >"$out/build-info.txt"
echo "$want_stamp" >"$stamp"
log "done in ${elapsed} s"
# The compile cache (~5 GB) only speeds up a rebuild at another version; drop it unless asked.
if [[ -n "$own_gocache" && "${KUBEVINE_CLUSTER_KEEP_GOCACHE:-0}" != 1 ]]; then
    chmod -R u+w "$own_gocache" 2>/dev/null || true
    rm -rf "$own_gocache"
    log "removed the compile cache $own_gocache (KUBEVINE_CLUSTER_KEEP_GOCACHE=1 keeps it)"
fi
echo "$bin"
