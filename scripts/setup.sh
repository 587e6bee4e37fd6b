#!/usr/bin/env bash
# Create ./.venv and install rlscale into it (idempotent: a stamp of pyproject.toml skips a repeated install).
#   bash scripts/setup.sh          # runtime only
#   bash scripts/setup.sh test     # + test extras (pytest, hypothesis, ray, trl)
# On a machine without CUDA, torch is pinned to the CPU build first (a plain `torch` requirement would pull a
# multi-GB CUDA build). Override with RLSCALE_TORCH_SPEC="torch==X.Y.Z" if you need another version.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=".venv/.rlscale-installed-${extras:-base}"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c "import rlscale, torch" 2>/dev/null; then
  exit 0
fi
"$VPY" -m pip install -q --upgrade pip
if ! "$VPY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    spec="${RLSCALE_TORCH_SPEC:-torch}"
  else
    spec="${RLSCALE_TORCH_SPEC:-torch==2.13.0}"   # the CPU wheel on this machine kind
  fi
  echo "[setup] installing $spec"
  "$VPY" -m pip install -q "$spec"
fi
case "$extras" in
  test) target=".[test,ray,trl]" ;;
  "") target="." ;;
  *) target=".[$extras]" ;;
esac
echo "[setup] installing rlscale $target"
"$VPY" -m pip install -q -e "$target"
echo "$want" > "$stamp"
