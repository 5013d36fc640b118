#!/usr/bin/env bash
# Issue 10: the categorical VAE on dynamically binarised MNIST (20 latent variables x 10 classes, the
# Gumbel-softmax paper's setting; nonlinear 784-200-200 encoder/decoder), six estimators at one fixed
# budget each: ${SECONDS_PER_RUN}s of training (wall clock, single thread), 4 samples per example
# (4 evaluations of f per example and step for every estimator: carms gains over reinforce_loo from
# S >= 4, not at S = 2), batch 100, Adam 1e-3; then the 100-sample importance-weighted bound on
# ${TEST_EXAMPLES} test and as many training images, and the 1-sample test ELBO.
# 3 processes, 2 runs each in sequence; every run writes metrics.csv as it goes.
# Usage: PYTHONPATH=$PWD/src bash benchmarks/device/i10.sh OUTDIR   (PYTHON=... to pick the interpreter)
set -u
OUT="${1:?usage: i10.sh OUTDIR}/i10"
PY="${PYTHON:-python3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-150}"
TEST_EXAMPLES="${TEST_EXAMPLES:-2000}"
STEPS="${STEPS:-1000000}"
DATASET="${DATASET:-mnist}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"

run() {  # one estimator, then drop its checkpoint (results only: metrics.csv, summary.json, curves.png)
  local est="$1"
  "$PY" -m stochgrad train vae --dataset "$DATASET" --categories 10 --latents 20 --model nonlinear \
      --estimator "$est" --samples "${SAMPLES:-4}" --batch-size 100 --lr 1e-3 --steps "$STEPS" \
      --max-seconds "$SECONDS_PER_RUN" --log-every 100 --checkpoint-every 100000000 \
      --test-samples 100 --test-examples "$TEST_EXAMPLES" --threads 1 --device cpu --quiet \
      --out "$OUT/$est" > "$OUT/$est.log" 2>&1
  echo "$est exit $?" >> "$OUT/$est.log"
  rm -f "$OUT/$est"/checkpoint.pt "$OUT/$est"/checkpoint.pt.tmp.*
}

( run reinforce_loo; run gumbel_rao ) &
( run carms; run reinmax ) &
( run gumbel_st; run straight_through ) &
wait

"$PY" - "$OUT" <<'PYEOF'
import csv, json, os, sys
out = sys.argv[1]
rows = []
for est in ["reinforce_loo", "carms", "gumbel_st", "gumbel_rao", "reinmax", "straight_through"]:
    path = os.path.join(out, est, "summary.json")
    row = {"estimator": est}
    if os.path.exists(path):
        s = json.load(open(path))
        row.update({k: v for k, v in s.items() if not isinstance(v, (dict, list))})
    else:  # cut short: the last logged training ELBO
        m = os.path.join(out, est, "metrics.csv")
        if os.path.exists(m):
            last = list(csv.DictReader(open(m)))[-1:]
            if last:
                row.update({"steps": last[0]["step"], "train_elbo_last_log": last[0]["train_elbo"], "note": "no summary"})
    rows.append(row)
keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "estimator", k))
with open(os.path.join(out, "summary.csv"), "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
with open(os.path.join(out, "summary.md"), "w") as fh:
    fh.write("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
    for r in rows:
        fh.write("| " + " | ".join(f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |\n")
print(open(os.path.join(out, "summary.md")).read())
PYEOF
