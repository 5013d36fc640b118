#!/usr/bin/env bash
# Issue 12's real-data runs on a 16-core CPU machine: 16 single-threaded processes in parallel, one per VAE run, for
# a wall clock derived from the machine (not a fixed number of seconds). Run from the repository root:
#   PYTHONPATH=$PWD/src bash benchmarks/device/i12.sh OUTDIR
# First (~15 s) benchmarks/device/i12_plan.py measures the VAE's steps/s and the seconds of one test evaluation on
# this machine and derives the wall: long enough for every 20k-step run and its evaluations (×0.75 safety on the
# rate). I12_WALL=SECONDS sets the wall instead (runs that no longer fit are capped in steps, never killed in an
# evaluation: the plan says how many steps each gets); I12_LONG_STEPS=N lengthens the wall so the long runs reach
# N steps. The plan is printed and kept in OUTDIR/i12/plan.txt.
#   L1, L2  linear VAE, DisARM protocol, disarm / reinforce_loo, seed 0, as many steps as the wall allows
#           (>= 100k asked), test bounds also at 5k and 20k steps (the equal-step comparison's seed 0)
#   V1..V6  20k steps, test bounds at 5k too: stochgrad disarm / reinforce_loo seed 1; the plain-torch loop
#           (benchmarks/vae_plain.py: same weights, batches and noise at the same seed) disarm / reinforce_loo seeds 0, 1
#   V7..V10 straight_through_sigmoid seeds 0, 1 by stochgrad and the plain loop, 20k steps (5k too); V7 first runs
#           the interleaved speed comparison (plain loop vs stochgrad, process CPU time)
#   G1..G4  gating at the paper's protocol: straight_through; reinforce_optimal; stochastic_times_smooth, sigmoid,
#           sigmoid_noise; noisy_rectifier, rectifier — each for as many epochs as its share of the wall allows
# Results (csv/json/png/log only) land in OUTDIR/i12/<run>/; benchmarks/device/i12_report.py OUTDIR/i12 writes
# OUTDIR/i12/report.md from them. I12_TINY=1 runs a seconds-long version (digits for gating) to test the script.
set -u
OUT="${1:?usage: i12.sh OUTDIR}/i12"
PY="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$OUT"
SCRATCH="$(mktemp -d)"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PY OUT SCRATCH HERE
if [ "${I12_TINY:-0}" = 1 ]; then
  export STEPS=200 EVAL=100 TEST_N=500 G_DATA=digits REPS=5 I12_WALL="${I12_WALL:-90}"
else
  export STEPS=20000 EVAL=5000 TEST_N=0 G_DATA=mnist REPS=300
fi
eval "$("$PY" "$HERE/i12_plan.py" --wall "${I12_WALL:-0}" --long-steps "${I12_LONG_STEPS:-0}" --steps "$STEPS" \
        --test-examples "$TEST_N" --speed-reps "$REPS" | tee "$OUT/plan.txt")"
export LONG_S CAP SPEED_CAP G_ST G_RO G_SMALL G_RECT KILL

collect() {   # the small files of every run (finished or cut short) into OUT
  for d in "$SCRATCH"/*/; do
    [ -d "$d" ] || continue
    n="$(basename "$d")"; mkdir -p "$OUT/$n"
    cp "$d"/*.json "$d"/*.csv "$d"/*.png "$OUT/$n/" 2>/dev/null
  done
  cp "$SCRATCH"/*.log "$OUT/" 2>/dev/null
  true
}
vae() {       # vae NAME ARGS...: stochgrad's VAE, DisARM protocol
  local n="$1"; shift
  "$PY" -m stochgrad train vae --protocol disarm --quiet --out "$SCRATCH/$n" --test-examples "$TEST_N" \
      --checkpoint-every 1000000 --log-every 500 --no-train-bound "$@" > "$SCRATCH/$n.log" 2>&1
  rm -f "$SCRATCH/$n/checkpoint.pt"; collect
}
plain() {     # plain NAME ARGS...: the hand-written loop
  local n="$1"; shift
  "$PY" "$HERE/../vae_plain.py" train --out "$SCRATCH/$n" --test-examples "$TEST_N" --log-every 500 "$@" \
      > "$SCRATCH/$n.log" 2>&1
  collect
}
gate() {      # gate GATER SECONDS: gating for as many epochs as fit in SECONDS of training
  local n="gating_$1"
  "$PY" -m stochgrad train gating --dataset "$G_DATA" --gater "$1" --epochs 1000 --patience 1000 \
      --max-seconds "$2" --quiet --out "$SCRATCH/$n" > "$SCRATCH/$n.log" 2>&1
  rm -f "$SCRATCH/$n/checkpoint.pt"; collect
}
export -f collect vae plain gate

long() { vae "vae_long_$1_s0" --estimator "$1" --steps 1000000 --max-seconds "$LONG_S" --eval-at "$EVAL" "$STEPS" --seed 0; }
v20k() {     # v20k vae|plain ESTIMATOR SEED [CAP]: one 20k-step run, test bounds at 5k too, training capped at CAP s
  local n; [ "$1" = vae ] && n="vae_$2_s$3" || n="plain_$2_s$3"
  "$1" "$n" --estimator "$2" --steps "$STEPS" --eval-at "$EVAL" --seed "$3" --max-seconds "${4:-$CAP}"
}
speed_then() {
  mkdir -p "$SCRATCH/vae_speed"
  "$PY" "$HERE/../vae_plain.py" speed --reps "$REPS" --rounds 5 --out "$SCRATCH/vae_speed" > "$SCRATCH/vae_speed.log" 2>&1; collect
  v20k "$@" "$SPEED_CAP"
}
export -f long v20k speed_then

start=$(date +%s)
jobs=("long disarm" "long reinforce_loo"
      "v20k vae disarm 1" "v20k vae reinforce_loo 1" "v20k plain disarm 0" "v20k plain reinforce_loo 0"
      "v20k plain disarm 1" "v20k plain reinforce_loo 1"
      "speed_then vae straight_through_sigmoid 0" "v20k plain straight_through_sigmoid 0"
      "v20k vae straight_through_sigmoid 1" "v20k plain straight_through_sigmoid 1"
      "gate straight_through $G_ST" "gate reinforce_optimal $G_RO"
      "for g in stochastic_times_smooth sigmoid sigmoid_noise; do gate \$g $G_SMALL; done"
      "for g in noisy_rectifier rectifier; do gate \$g $G_RECT; done")
i=0
for j in "${jobs[@]}"; do
  i=$((i + 1))
  timeout -k 5 "$KILL" bash -c "$j" > "$SCRATCH/job$i.log" 2>&1 &
done
wait
collect
"$PY" "$HERE/i12_report.py" "$OUT" > "$OUT/report.md" 2> "$OUT/report.err" || true
echo "i12: done in $(( $(date +%s) - start )) s; results in $OUT" | tee "$OUT/done.txt"
rm -rf "$SCRATCH"
