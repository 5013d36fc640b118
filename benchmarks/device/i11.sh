#!/usr/bin/env bash
# Issue 11: the linear VAE (784-200 logistic encoder and decoder, 200 Bernoulli latents) on dynamically
# binarised MNIST, six estimators at one fixed budget each: ${SECONDS_PER_RUN}s of training (wall clock,
# single thread) and 2 evaluations of f per example and step for every estimator (disarm: 1 antithetic
# pair; arms, double_cv, rodeo, reinforce_loo: 2 samples; auto: a budget of 2, plus its measuring calls),
# the DisARM paper's protocol otherwise (stochgrad train vae --protocol disarm: its batch, learning rates and
# learning signal); then the 100-sample importance-weighted bound on ${TEST_EXAMPLES} test and as many
# training images, and the 1-sample test ELBO. auto's report (its choice over the run, and why) lands in
# auto/summary.json. 3 processes, 2 runs each in sequence; every run writes metrics.csv as it goes.
# Usage: PYTHONPATH=$PWD/src bash benchmarks/device/i11.sh OUTDIR   (PYTHON=... to pick the interpreter)
set -u
OUT="${1:?usage: i11.sh OUTDIR}/i11"
PY="${PYTHON:-python3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-150}"
TEST_EXAMPLES="${TEST_EXAMPLES:-2000}"
STEPS="${STEPS:-1000000}"
DATASET="${DATASET:-mnist}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"

run() {  # one estimator with its sample count, then drop its checkpoint (results only)
  local est="$1" samples="$2"
  "$PY" -m stochgrad train vae --dataset "$DATASET" --protocol disarm --model linear \
      --estimator "$est" --samples "$samples" --steps "$STEPS" \
      --max-seconds "$SECONDS_PER_RUN" --log-every 100 --checkpoint-every 100000000 \
      --test-samples 100 --test-examples "$TEST_EXAMPLES" --threads 1 --device cpu --quiet \
      --out "$OUT/$est" > "$OUT/$est.log" 2>&1
  echo "$est exit $?" >> "$OUT/$est.log"
  rm -f "$OUT/$est"/checkpoint.pt "$OUT/$est"/checkpoint.pt.tmp.*
}

( run auto 2; run reinforce_loo 2 ) &
( run rodeo 2; run disarm 1 ) &
( run double_cv 2; run arms 2 ) &
wait

"$PY" - "$OUT" <<'PYEOF'
import csv, json, os, sys
out = sys.argv[1]
rows, auto = [], None
for est in ["disarm", "reinforce_loo", "arms", "double_cv", "rodeo", "auto"]:
    row = {"estimator": est}
    m = os.path.join(out, est, "metrics.csv")
    last = list(csv.DictReader(open(m)))[-1:] if os.path.exists(m) else []
    if last:   # the encoder-gradient variance (moving moments, decay 0.999) at the last log
        row.update({"steps_logged": int(last[0]["step"]), "train_elbo_last_log": float(last[0]["train_elbo"]),
                    "encoder_grad_variance": float(last[0]["encoder_grad_variance"])})
    path = os.path.join(out, est, "summary.json")
    if os.path.exists(path):
        s = json.load(open(path))
        row.update({k: v for k, v in s.items() if not isinstance(v, (dict, list)) and k not in ("estimator",)})
        if s.get("steps") and s.get("train_seconds"):
            row["steps_per_second"] = s["steps"] / s["train_seconds"]
        if est == "auto" and "auto" in s:
            auto = s["auto"]
            row["auto_chosen_at_end"] = auto["chosen"]
            row["auto_measuring_fraction"] = auto["measuring_fraction"]
    else:
        row["note"] = "no summary (cut short?)"
    rows.append(row)
keys = ["estimator", "steps", "steps_per_second", "train_elbo_last_log", "encoder_grad_variance",
        "train_elbo_100_samples", "test_elbo_100_samples", "test_elbo_1_sample", "auto_chosen_at_end",
        "auto_measuring_fraction", "note"]
keys += sorted({k for r in rows for k in r} - set(keys))
with open(os.path.join(out, "summary.csv"), "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
with open(os.path.join(out, "summary.md"), "w") as fh:
    fh.write("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
    for r in rows:
        fh.write("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |\n")
    if auto:
        fh.write("\n## auto over the run\n\nswitches (call, candidate): " + ", ".join(f"{c}: {n}" for c, n in auto["history"])
                 + "\n\n| candidate | f evals | variance (last measurements) | variance x evals |\n|---|---|---|---|\n")
        for name, c in sorted(auto["candidates"].items(), key=lambda kv: kv[1]["variance_x_evaluations"]):
            fh.write(f"| {name} | {c['evaluations']} | {c['variance']:.4g} | {c['variance_x_evaluations']:.4g} |\n")
print(open(os.path.join(out, "summary.md")).read())
PYEOF
