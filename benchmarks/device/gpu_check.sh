#!/usr/bin/env bash
# The GPU checks (under 5 minutes on one GPU, each step under its own timeout): the host-sync check (sync_check.py:
# no synchronisation on the happy path), the overhead benchmark on CUDA (wall time with a synchronisation per
# block), compiled against eager per estimate (compile_speed.py), a VAE training step per estimator (vae_speed.py)
# and the vocabulary-scale categorical estimators, eager and compiled (large_k.py). Op counts do not depend on the
# device (tests/test_op_counts.py). Given MACHINE (a name in benchmarks/results/machines.json) the results are filed
# (benchmarks/record.py).
# Usage (repo root, PYTHONPATH=src): bash benchmarks/device/gpu_check.sh OUTDIR [MACHINE]   -> OUTDIR/gpu/*
set -u
OUT="${1:?usage: gpu_check.sh OUTDIR [MACHINE]}/gpu"
MACHINE="${2:-}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())" >> "$OUT/gpu.txt" 2>&1
# 1. the host-sync check first (short; the figure that matters most)
timeout 30 "$PY" benchmarks/device/sync_check.py --json "$OUT/sync_check.json" > "$OUT/sync_check.txt" 2>&1
echo "sync_check exit $?" >> "$OUT/sync_check.txt"
# 2. the overhead benchmark on CUDA (wall time with a synchronisation per block)
timeout 50 "$PY" benchmarks/overhead.py --device cuda --quick --rounds 5 --json "$OUT/overhead_cuda.json" \
    > "$OUT/overhead_cuda.md" 2>&1
echo "overhead cuda exit $?" >> "$OUT/overhead_cuda.md"
# 3. compiled (inductor) against eager, per estimate
timeout 90 "$PY" benchmarks/compile_speed.py --device cuda --rounds 3 --reps 20 --json "$OUT/compile_speed.json" \
    > "$OUT/compile_speed.md" 2>&1
echo "compile_speed exit $?" >> "$OUT/compile_speed.md"
# 4. a VAE step per estimator (784-200-784, batch 50), relative to reinforce
timeout 45 "$PY" benchmarks/vae_speed.py --device cuda --reps 10 --rounds 2 > "$OUT/vae_speed.md" 2>&1
echo "vae_speed exit $?" >> "$OUT/vae_speed.md"
# 5. vocabulary-scale K: time, peak memory, full-size tensors, eager and compiled
timeout 75 "$PY" benchmarks/large_k.py --device cuda --rounds 3 --sizes 64x1024,256x65536,256x262144 \
    --json "$OUT/large_k.json" > "$OUT/large_k.md" 2>&1
echo "large_k exit $?" >> "$OUT/large_k.md"
if [ -n "$MACHINE" ]; then
  "$PY" benchmarks/record.py compile_speed "$MACHINE" "$OUT/compile_speed.json" \
      --command "bash benchmarks/device/gpu_check.sh OUT $MACHINE (compile_speed.py --device cuda --rounds 3 --reps 20)"
  "$PY" benchmarks/record.py large_k "$MACHINE" "$OUT/large_k.json" \
      --command "bash benchmarks/device/gpu_check.sh OUT $MACHINE (large_k.py --device cuda --rounds 3)"
  "$PY" benchmarks/record.py sync_check "$MACHINE" "$OUT/sync_check.json" \
      --command "bash benchmarks/device/gpu_check.sh OUT $MACHINE (benchmarks/device/sync_check.py)"
  "$PY" benchmarks/record.py overhead_bernoulli "$MACHINE" "$OUT/overhead_cuda.json" \
      --command "bash benchmarks/device/gpu_check.sh OUT $MACHINE (overhead.py --device cuda --quick --rounds 5)"
fi
ls -la "$OUT"
