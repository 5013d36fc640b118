#!/usr/bin/env bash
# Estimators on a VAE at one fixed training budget each: SECONDS_PER_RUN of training (wall clock, one thread per run),
# 3 processes with 2 runs each in sequence; then the 100-sample importance-weighted bound on TEST_EXAMPLES test and
# as many training images, and the 1-sample test ELBO. Every run writes metrics.csv as it goes.
#   bernoulli:   the linear VAE (784-200 logistic encoder and decoder, 200 Bernoulli latents) under the DisARM
#                paper's protocol, 2 evaluations of f per example and step for every estimator (disarm: one
#                antithetic pair; arms, double_cv, rodeo, reinforce_loo: 2 samples; auto: a budget of 2, plus its
#                measuring calls; its report lands in auto/summary.json)
#   categorical: 20 variables x 10 classes (the Gumbel-softmax paper's setting), nonlinear 784-200-200 encoder and
#                decoder, batch 100, Adam 1e-3, 4 samples per example for every estimator (carms gains over
#                reinforce_loo from 4 samples, not at 2)
# Given MACHINE (a name in benchmarks/results/machines.json) the runs are filed as one result (benchmarks/record.py).
# Usage: PYTHONPATH=$PWD/src bash benchmarks/reproduce/vae_estimators.sh OUTDIR bernoulli|categorical [MACHINE]
set -u
DIST="${2:?usage: vae_estimators.sh OUTDIR bernoulli|categorical [MACHINE]}"
OUT="${1}/vae_${DIST}_estimators"
MACHINE="${3:-}"
PY="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-150}"
TEST_EXAMPLES="${TEST_EXAMPLES:-2000}"
STEPS="${STEPS:-1000000}"
DATASET="${DATASET:-mnist}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
case "$DIST" in
  bernoulli)   MODEL=(--protocol disarm --model linear)
               LANES=("auto:2 reinforce_loo:2" "rodeo:2 disarm:1" "double_cv:2 arms:2") ;;
  categorical) MODEL=(--categories 10 --latents 20 --model nonlinear --batch-size 100 --lr 1e-3)
               LANES=("reinforce_loo:4 gumbel_rao:4" "carms:4 reinmax:4" "gumbel_st:4 straight_through:4") ;;
  *) echo "the distribution is bernoulli or categorical, not $DIST" >&2; exit 2 ;;
esac

run() {  # run ESTIMATOR:SAMPLES, then drop its checkpoint (results only: metrics.csv, summary.json, curves.png)
  local est="${1%%:*}" samples="${1##*:}"
  "$PY" -m stochgrad train vae --dataset "$DATASET" "${MODEL[@]}" --estimator "$est" --samples "$samples" \
      --steps "$STEPS" --max-seconds "$SECONDS_PER_RUN" --log-every 100 --checkpoint-every 100000000 \
      --test-samples 100 --test-examples "$TEST_EXAMPLES" --threads 1 --device cpu --quiet \
      --out "$OUT/$est" > "$OUT/$est.log" 2>&1
  echo "$est exit $?" >> "$OUT/$est.log"
  rm -f "$OUT/$est"/checkpoint.pt "$OUT/$est"/checkpoint.pt.tmp.*
}

folders=()
for lane in "${LANES[@]}"; do
  ( for job in $lane; do run "$job"; done ) &
  for job in $lane; do folders+=("$OUT/${job%%:*}"); done
done
wait
if [ -n "$MACHINE" ]; then
  "$PY" "$HERE/../record.py" "vae_${DIST}_estimators" "$MACHINE" "${folders[@]}" \
    --command "SECONDS_PER_RUN=$SECONDS_PER_RUN bash benchmarks/reproduce/vae_estimators.sh OUT $DIST $MACHINE"
fi
