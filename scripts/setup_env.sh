# Sourced by quickstart.sh and test.sh: create .venv when missing and install lmforge into it.
# torch is pinned and installed first: an unpinned torch (asked for by any package) pulls a multi-GB CUDA build.
# Usage: source scripts/setup_env.sh [EXTRAS]   e.g. "dev"
set -euo pipefail
LMFORGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LMFORGE_TORCH="${LMFORGE_TORCH:-torch==2.13.0}"
VENV="$LMFORGE_ROOT/.venv"
extras="${1:-}"

pick_python() {
  for py in python3.11 python3 python; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
      echo "$py"; return
    fi
  done
  echo "lmforge: Python >= 3.10 is needed (3.11 recommended) and none was found on PATH" >&2
  exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  py="$(pick_python)"
  echo "lmforge: creating $VENV with $("$py" --version)" >&2
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

stamp="$VENV/.lmforge-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$LMFORGE_ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "lmforge: installing $LMFORGE_TORCH, then lmforge${extras:+[$extras]} into .venv" >&2
  "$VENV/bin/python" -m pip install --quiet "$LMFORGE_TORCH"
  "$VENV/bin/python" -m pip install --quiet -e "$LMFORGE_ROOT${extras:+[$extras]}"
  touch "$stamp"
fi
