#!/usr/bin/env bash
# The per-call cost of the library against hand-written torch (benchmarks/overhead.py), RUNS full runs one after
# another (the range of their medians is what the README quotes), filed as one result for MACHINE (a name in
# benchmarks/results/machines.json). A full Bernoulli run takes ~9 minutes on a 2-core VM; nothing else should run.
#   bash benchmarks/reproduce/overhead.sh MACHINE [bernoulli|categorical] [RUNS] [overhead.py options...]
set -eu
cd "$(dirname "$0")/../.."
MACHINE="${1:?usage: overhead.sh MACHINE [bernoulli|categorical] [RUNS] [options]}"
DIST="${2:-bernoulli}"
RUNS="${3:-3}"
shift $(( $# < 3 ? $# : 3 ))
PY="${PY:-python}"
TMP="$(mktemp -d)"
files=()
for i in $(seq "$RUNS"); do
  OMP_NUM_THREADS=1 nice -n 5 "$PY" benchmarks/overhead.py --distribution "$DIST" --json "$TMP/run$i.json" "$@"
  files+=("$TMP/run$i.json")
done
"$PY" benchmarks/record.py "overhead_$DIST" "$MACHINE" "${files[@]}" \
  --command "python benchmarks/overhead.py --distribution $DIST $* ($RUNS runs one after another)"
rm -rf "$TMP"
