#!/usr/bin/env bash
# Where local learning pays (benchmarks/local_vs_backprop.py), by batch and by width: 8 layers of 1024 units at
# batch 64, 128, 256 and 512, 8 layers of 2048 at batch 128, and 1024 x 128 again with glibc's malloc thresholds
# fixed (--keep-heap); ROUNDS rounds of one step per candidate. Filed as one result for MACHINE (a name in
# benchmarks/results/machines.json). About 25 minutes on a 2-core VM; nothing else should run.
#   ROUNDS=25 bash benchmarks/reproduce/local_vs_backprop.sh MACHINE
set -eu
cd "$(dirname "$0")/../.."
MACHINE="${1:?usage: local_vs_backprop.sh MACHINE}"
ROUNDS="${ROUNDS:-25}"
PY="${PY:-python}"
TMP="$(mktemp -d)"
files=()
step() {  # step NAME OPTIONS...
  local name="$1"; shift
  OMP_NUM_THREADS=1 nice -n 5 "$PY" benchmarks/local_vs_backprop.py --rounds "$ROUNDS" --reps 1 --json "$TMP/$name.json" "$@"
  files+=("$TMP/$name.json")
}
for b in 64 128 256 512; do step "8x1024_b$b" --batch "$b"; done
step 8x2048_b128 --width 2048 --batch 128
step 8x1024_b128_keep_heap --batch 128 --keep-heap
"$PY" benchmarks/record.py local_vs_backprop "$MACHINE" "${files[@]}" \
  --command "ROUNDS=$ROUNDS bash benchmarks/reproduce/local_vs_backprop.sh $MACHINE"
rm -rf "$TMP"
