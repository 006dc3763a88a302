#!/usr/bin/env bash
# Environments for the peer frameworks of bench/sft_throughput.py and bench/preprocess_throughput.py.
#
#   bash bench/setup.sh            # both peers (idempotent: a finished environment is left alone)
#   bash bench/setup.sh trl        # only TRL
#   bash bench/setup.sh lf         # only LLaMA-Factory
#
# lmforge runs from the project's own .venv (torch 2.13.0 CPU), which this script never changes.
# TRL: when the main .venv already has trl 1.x, it is reused (same torch and transformers as
#   lmforge, the fairest comparison); otherwise bench/.venv-trl gets torch 2.13.0 first (the CPU
#   wheel on this disk), then trl>=1,<2 with torch pinned on the same line.
# LLaMA-Factory 0.9.5: bench/.venv-lf gets torch 2.14.1 + torchvision 0.29.1 first (pip takes them
#   from this disk for Python 3.11; a CUDA build of several GB, which runs on the CPU), then
#   llamafactory==0.9.5 with both pinned on the same line, so pip never swaps them.
# Neither environment is used by CI or the unit tests.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
PYTHON="${PYTHON:-python3.11}"
MAIN_PY="$ROOT/.venv/bin/python"
TRL_SPEC="trl>=1,<2"
TRL_TORCH="torch==2.13.0"
LF_SPEC="llamafactory==0.9.5"
LF_TORCH=("torch==2.14.1" "torchvision==0.29.1")
READY=".bench-ready"  # written last: an environment without it is rebuilt from scratch

say() { echo "bench/setup: $*"; }

need_main() {
  if ! "$MAIN_PY" -c "import lmforge, psutil" 2>/dev/null; then
    say "the main environment $ROOT/.venv lacks lmforge or psutil; create it first (pip install -e . psutil)"
    exit 1
  fi
}

main_has_trl() {
  "$MAIN_PY" - <<'EOF' 2>/dev/null
import trl, sys
sys.exit(0 if trl.__version__.split(".")[0] == "1" else 1)
EOF
}

fresh_venv() {  # fresh_venv DIR: a new venv unless DIR holds a finished one; returns 1 when finished
  local dir="$1"
  if [[ -f "$dir/$READY" ]]; then
    return 1
  fi
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install --quiet --upgrade pip
}

setup_trl() {
  if main_has_trl; then
    say "TRL: reusing the main .venv ($("$MAIN_PY" -c 'import trl; print(trl.__version__)'))"
    return
  fi
  local dir="$BENCH/.venv-trl"
  if ! fresh_venv "$dir"; then
    say "TRL: $dir is ready"
    return
  fi
  say "TRL: building $dir"
  "$dir/bin/pip" install "$TRL_TORCH"
  "$dir/bin/pip" install "$TRL_SPEC" "$TRL_TORCH" psutil pyyaml
  "$dir/bin/python" -c "import torch, trl; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$dir/$READY"
  say "TRL: $("$dir/bin/python" -c 'import trl, torch, transformers as t; print("trl", trl.__version__, "torch", torch.__version__, "transformers", t.__version__)')"
}

setup_lf() {
  local dir="$BENCH/.venv-lf"
  if ! fresh_venv "$dir"; then
    say "LLaMA-Factory: $dir is ready"
    return
  fi
  say "LLaMA-Factory: building $dir (torch 2.14.1 + torchvision: several GB)"
  "$dir/bin/pip" install "${LF_TORCH[@]}"
  "$dir/bin/pip" install "$LF_SPEC" "${LF_TORCH[@]}" psutil
  "$dir/bin/python" -c "import torch; assert torch.__version__.startswith('2.14.1'), torch.__version__"
  "$dir/bin/llamafactory-cli" version >/dev/null
  touch "$dir/$READY"
  say "LLaMA-Factory: $("$dir/bin/python" -c 'import llamafactory as l, torch, transformers as t; print("llamafactory", l.__version__, "torch", torch.__version__, "transformers", t.__version__)')"
}

need_main
case "${1:-all}" in
  all) setup_trl; setup_lf ;;
  trl) setup_trl ;;
  lf) setup_lf ;;
  *) say "unknown target '$1'; use all, trl or lf"; exit 2 ;;
esac
main_torch="$("$MAIN_PY" -c 'import torch; print(torch.__version__)')"
say "main .venv torch is still $main_torch"
