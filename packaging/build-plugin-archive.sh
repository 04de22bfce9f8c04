#!/usr/bin/env bash
# Build the archive the krew manifest points at, for one platform (default: linux amd64):
#   svctrace-<version>-linux-<arch>.tar.gz = kubectl-svctrace (a launcher) + lib/py3XX/ for Python 3.10-3.13.
# Dependencies with compiled parts (pydantic-core) are taken as manylinux wheels for each Python version, so the
# plugin runs with whichever python3 (>= 3.10) the machine has. Run from the repository root.
set -euo pipefail
arch=${1:-amd64}
case "$arch" in
  amd64) platform=manylinux2014_x86_64 ;;
  arm64) platform=manylinux2014_aarch64 ;;
  *) echo "usage: $0 [amd64|arm64]" >&2; exit 2 ;;
esac
version=$(python3 -c 'import svctrace; print(svctrace.__version__)')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/own" .
# python-iptables ships no wheels (it compiles a helper), and svctrace reads rules with iptables-save anyway
# (bench/bench_node_collect.py has the figures), so the plugin leaves it out.
deps=$(python3 -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(x for x in d if not x.startswith("python-iptables")))')
for py in 310 311 312 313; do
  # shellcheck disable=SC2086
  python3 -m pip install --quiet --target "$work/root/lib/py$py" --platform "$platform" --python-version "$py" \
      --only-binary=:all: --implementation cp $deps
  python3 -m pip install --quiet --no-deps --target "$work/root/lib/py$py" "$work"/own/svctrace-*.whl
done
cat > "$work/root/kubectl-svctrace" <<'LAUNCHER'
#!/bin/sh
# kubectl plugin launcher: run svctrace with the libraries bundled for this python3's version.
here=$(dirname "$(readlink -f "$0")")
py=$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null) || {
  echo "kubectl-svctrace: error: python3 is not installed" >&2; exit 2; }
if [ ! -d "$here/lib/py$py" ]; then
  echo "kubectl-svctrace: error: python3 is version ${py%?}.${py#?}; this build supports 3.10 to 3.13" >&2; exit 2
fi
PYTHONPATH="$here/lib/py$py" exec python3 -m svctrace "$@"
LAUNCHER
chmod +x "$work/root/kubectl-svctrace"
cp README.md "$work/root/"
out="svctrace-${version}-linux-${arch}.tar.gz"
tar -C "$work/root" -czf "$out" .
sha256sum "$out"
