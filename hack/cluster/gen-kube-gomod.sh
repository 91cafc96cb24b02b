#!/usr/bin/env bash
# Regenerate kube/go.mod and kube/go.sum for a k8s.io/kubernetes release:
#   hack/cluster/gen-kube-gomod.sh v1.37.2
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0
# and replaces them with ./staging folders; a module that depends on it must replace each one
# with the published v0.<minor>.<patch>. The list is read from the release's own go.mod.
set -euo pipefail
version="${1:?usage: $0 vX.Y.Z}"
staging="v0.${version#v1.}"
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kube"
mod="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
mkdir -p "$dir"
{
    echo "module kubevine.local/hack/cluster/kube"
    echo
    echo "go $(sed -n 's/^go //p' "$mod")"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$mod" | grep -o 'k8s.io/[a-z0-9-]* =>' |
        awk -v v="$staging" '{ print "\t" $1 " => " $1 " " v }'
    echo ")"
} >"$dir/go.mod"
rm -f "$dir/go.sum"
cd "$dir"
go get -tool \
    "k8s.io/kubernetes/cmd/kube-apiserver@$version" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@$version" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$version"
echo "kube/go.mod now builds k8s.io/kubernetes $version with staging modules at $staging"
