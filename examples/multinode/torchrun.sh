#!/usr/bin/env bash
# Many machines, one job: run this same command on every node (node 0 first or in any order); torchrun's c10d
# rendezvous on node 0 gathers them. NNODES machines x GPUS_PER_NODE processes train one recipe.
#   MASTER_ADDR: an address of node 0 every node can reach; NODE_RANK is only for your own logs here.
# Every node needs the same lmforge, recipe and data paths (a shared filesystem, or copies); rank 0 of the whole
# job writes the run directory, so `output` must be on storage node 0 can write (shared storage is simplest).
set -euo pipefail
NNODES="${NNODES:-2}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
MASTER_ADDR="${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
MASTER_PORT="${MASTER_PORT:-29500}"
RECIPE="${1:?usage: torchrun.sh RECIPE [key=value ...]}"
shift
exec torchrun \
  --nnodes "$NNODES" \
  --nproc_per_node "$GPUS_PER_NODE" \
  --rdzv_backend c10d \
  --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" \
  --rdzv_id "lmforge-${RDZV_ID:-$(basename "$RECIPE" .yaml)}" \
  -m lmforge.cli train "$RECIPE" "$@"
