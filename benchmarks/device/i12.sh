#!/usr/bin/env bash
# Issue 12's real-data runs on a 16-core CPU machine: 8 single-threaded processes, about 6.5 minutes of wall
# clock. Run from the repository root:  PYTHONPATH=$PWD/src bash benchmarks/device/i12.sh OUTDIR
#   P1, P2  linear VAE, DisARM protocol, disarm / reinforce_loo, seed 0, as many steps as fit (>= 100k asked),
#           test bounds also at 5k and 20k steps (the equal-step comparison's seed 0)
#   P3      the interleaved speed comparison (plain loop vs stochgrad), then stochgrad disarm / reinforce_loo
#           seed 1 (20k steps), and straight_through_sigmoid seeds 0, 1 (5k steps) by stochgrad and the plain loop
#   P4      the plain-torch loop: disarm and reinforce_loo, seeds 0 and 1, 20k steps (evaluated at 5k too)
#   P5..P8  gating at the paper's protocol: straight_through; reinforce_optimal; stochastic_times_smooth, sigmoid,
#           sigmoid_noise; noisy_rectifier, rectifier — each for as many epochs as its time allows
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
  export LONG_S=8 STEPS=200 EVAL=100 ST_STEPS=100 CAP=60 ST_CAP=30 TEST_N=500 G_DATA=digits G_ST=10 G_RO=10 G_SMALL=3 G_RECT=5 WALL=240 REPS=5
else
  export LONG_S=300 STEPS=20000 EVAL=5000 ST_STEPS=5000 CAP=115 ST_CAP=40 TEST_N=0 G_DATA=mnist G_ST=345 G_RO=345 G_SMALL=85 G_RECT=150 WALL=395 REPS=300
fi

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
      --checkpoint-every 1000000 --log-every 500 "$@" > "$SCRATCH/$n.log" 2>&1
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

p1() { vae vae_long_disarm_s0 --estimator disarm --steps 1000000 --max-seconds "$LONG_S" --eval-at "$EVAL" "$STEPS" --seed 0; }
p2() { vae vae_long_reinforce_loo_s0 --estimator reinforce_loo --steps 1000000 --max-seconds "$LONG_S" --eval-at "$EVAL" "$STEPS" --seed 0; }
p3() {   # every 20k/5k run also stops at CAP/ST_CAP seconds of training: a slow machine gives fewer steps, not a kill
  mkdir -p "$SCRATCH/vae_speed"
  "$PY" "$HERE/../vae_plain.py" speed --reps "$REPS" --rounds 5 --out "$SCRATCH/vae_speed" > "$SCRATCH/vae_speed.log" 2>&1; collect
  vae vae_disarm_s1 --estimator disarm --steps "$STEPS" --eval-at "$EVAL" --seed 1 --max-seconds "$CAP"
  vae vae_reinforce_loo_s1 --estimator reinforce_loo --steps "$STEPS" --eval-at "$EVAL" --seed 1 --max-seconds "$CAP"
  for s in 0 1; do
    vae vae_straight_through_sigmoid_s$s --estimator straight_through_sigmoid --steps "$ST_STEPS" --seed $s --max-seconds "$ST_CAP"
    plain plain_straight_through_sigmoid_s$s --estimator straight_through_sigmoid --steps "$ST_STEPS" --seed $s --max-seconds "$ST_CAP"
  done
}
p4() {
  for s in 0 1; do
    plain plain_disarm_s$s --estimator disarm --steps "$STEPS" --eval-at "$EVAL" --seed $s --max-seconds "$CAP"
    plain plain_reinforce_loo_s$s --estimator reinforce_loo --steps "$STEPS" --eval-at "$EVAL" --seed $s --max-seconds "$CAP"
  done
}
p5() { gate straight_through "$G_ST"; }
p6() { gate reinforce_optimal "$G_RO"; }
p7() { for g in stochastic_times_smooth sigmoid sigmoid_noise; do gate $g "$G_SMALL"; done; }
p8() { for g in noisy_rectifier rectifier; do gate $g "$G_RECT"; done; }
export -f p1 p2 p3 p4 p5 p6 p7 p8

start=$(date +%s)
for p in p1 p2 p3 p4 p5 p6 p7 p8; do
  timeout -k 5 "$WALL" bash -c "$p" > "$SCRATCH/$p.log" 2>&1 &
done
wait
collect
"$PY" "$HERE/i12_report.py" "$OUT" > "$OUT/report.md" 2> "$OUT/report.err" || true
echo "i12: done in $(( $(date +%s) - start )) s; results in $OUT" | tee "$OUT/done.txt"
rm -rf "$SCRATCH"
