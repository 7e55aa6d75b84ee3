#!/usr/bin/env bash
# The CPU grid of results/cpu/bench-serving, before (OLD: a second worktree at the commit the issues were filed
# at) and after (this tree), alternating OLD NEW OLD NEW in one sitting with nothing else on the cores.
# Usage from the project root: bash results/cpu/engine-ab/run_ab.sh OLD_WORKTREE OUT_DIR
set -euo pipefail
old=$1
out=$2
args=(--pairs smollm2 --lengths 2048 4096 --budget 128 --methods full snapkv speckv --max-new-tokens 32 --repeats 2)
for round in ${ROUNDS:-1 2}; do
  for which in old new; do
    src=src
    [ "$which" = old ] && src="$old/src"
    echo "round $round: $which" >&2
    PYTHONPATH="$src" OMP_NUM_THREADS=2 .venv/bin/draftapprox bench "${args[@]}" --out "$out/$which-$round" >/dev/null
    PYTHONPATH="$src" OMP_NUM_THREADS=2 .venv/bin/draftapprox bench --pairs smollm2 --lengths 2048 --budget 128 \
      --throughput-batches 4 --max-new-tokens 32 --out "$out/$which-$round-throughput" >/dev/null
  done
done
