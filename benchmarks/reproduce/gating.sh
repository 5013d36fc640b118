#!/usr/bin/env bash
# The gating study (Bengio, Léonard & Courville 2013) on a shared CPU: the gaters named in GATERS advance in turn, one
# epoch each, so each gets its share of a limited budget. Every call resumes exactly from its checkpoint (--resume),
# so the runs equal uninterrupted ones. One process at a time, one thread, niced. Stops at the first of: EPOCHS
# epochs, early stopping, or the wall-clock time UNTIL (a `date` string). Then, given MACHINE (a name in
# benchmarks/results/machines.json), files every gater's summary.json and metrics.csv as one result
# (benchmarks/record.py); `python benchmarks/report.py --figures` then tables and plots it.
#   GATERS="straight_through reinforce_optimal" EPOCHS=30 UNTIL="00:20" bash benchmarks/reproduce/gating.sh [MACHINE]
set -u
cd "$(dirname "$0")/../.."
MACHINE=${1:-}
GATERS=${GATERS:-"straight_through reinforce_optimal"}
EPOCHS=${EPOCHS:-30}
UNTIL=$(date -d "${UNTIL:-+1 hour}" +%s)
RUNS=${RUNS:-runs/gating}
PY=${PY:-python}
mkdir -p "$RUNS"
done_epochs() { [ -f "$RUNS/$1/metrics.csv" ] && echo $(($(wc -l < "$RUNS/$1/metrics.csv") - 1)) || echo 0; }
declare -A stopped=()
while :; do
  advanced=0
  for g in $GATERS; do
    [ "$(date +%s)" -ge "$UNTIL" ] && break 2
    e=$(done_epochs "$g")
    { [ "$e" -ge "$EPOCHS" ] || [ -n "${stopped[$g]:-}" ]; } && continue
    resume=(); [ -f "$RUNS/$g/checkpoint.pt" ] && resume=(--resume)
    OMP_NUM_THREADS=1 nice -n 5 $PY -m stochgrad train gating --threads 1 --gater "$g" --epochs $((e + 1)) \
      --out "$RUNS/$g" --quiet "${resume[@]}" >> "$RUNS/$g.log" 2>&1 || echo "$g: exit $? at epoch $((e + 1))" >> "$RUNS/$g.log"
    if [ "$(done_epochs "$g")" -gt "$e" ]; then advanced=1; else stopped[$g]=1; fi   # early stopping or a failure
  done
  [ "$advanced" -eq 1 ] || break
done
if [ -n "$MACHINE" ]; then
  folders=(); for g in $GATERS; do folders+=("$RUNS/$g"); done
  $PY benchmarks/record.py gating "$MACHINE" "${folders[@]}" \
    --command "GATERS='$GATERS' EPOCHS=$EPOCHS bash benchmarks/reproduce/gating.sh $MACHINE"
fi
