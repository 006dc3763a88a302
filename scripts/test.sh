#!/usr/bin/env bash
# Set up .venv if missing (torch pinned first), then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh dev
export TOKENIZERS_PARALLELISM=false
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "lmforge: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
