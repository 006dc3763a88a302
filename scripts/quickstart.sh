#!/usr/bin/env bash
# The embedded default: set up .venv if needed, then build a synthetic task, a tokenizer and a tiny
# model, pretrain, fine-tune and evaluate, all on CPU and without a model hub (about ten minutes on
# two cores, set-up included). Arguments go to `lmforge quickstart`, e.g. --workdir runs/qs2.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# An existing .venv where lmforge imports is reused as it is; otherwise setup_env.sh creates or
# completes it (Python >= 3.10, the pinned torch first, then lmforge).
if ! { [ -x .venv/bin/lmforge ] && .venv/bin/python -c "import lmforge" >/dev/null 2>&1; }; then
  source scripts/setup_env.sh
fi
export TOKENIZERS_PARALLELISM=false
exec .venv/bin/lmforge quickstart "$@"
