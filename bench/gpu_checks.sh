#!/usr/bin/env bash
# The GPU checks of record in one run, for a session lent a GPU machine (see bench/README.md):
#   1. the packing and varlen tests, which run on CUDA where it is available (per-sample losses and gradients of
#      packed batches on every backend, flex attention's among them; the varlen kernel against SDPA, windows too);
#   2. lmforge's packed varlen SFT run with 5 profiled steps: tokens/s, MFU and the operators that take the time;
#   3. one recipe under FSDP2, ZeRO-2 and ZeRO-3 on one GPU (lmforge train --nproc 1) against it unsharded
#      (bench/sharded_strategies.py; needs deepspeed, in the dev extra), the chunked loss giving way under both.
# Everything it prints also goes to $OUT (the device tool's output folder) or bench/work/gpu-checks.
#   bash bench/gpu_checks.sh                        # on the GPU machine
#   bash bench/gpu_checks.sh --size tiny --dtype fp32 --conversations 40 --max-length 256   # a CPU smoke run
set -u
cd "$(dirname "$0")/.."
out=${OUT:-bench/work/gpu-checks}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$out/device.txt"
python -m pytest -q -p no:cacheprovider tests/train/test_packing_equivalence.py tests/model/test_varlen.py \
    2>&1 | tail -40 | tee "$out/tests.txt"
python bench/gpu_sft.py --conversations 1500 --runs lmforge:varlen --profile 5 --results "$out/sft.json" "$@" \
    2>&1 | tail -60 | tee "$out/sft.txt"
cp bench/work/gpu/*/lmforge-varlen/profile/summary.txt "$out/" 2>/dev/null || true
python bench/sharded_strategies.py --dtype bf16 2>&1 | tail -12 | tee "$out/sharded.txt"
