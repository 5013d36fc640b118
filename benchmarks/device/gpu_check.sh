#!/usr/bin/env bash
# The GPU checks (about 90 s on one GPU): the host-sync check (sync_check.py: no synchronisation on the happy path)
# and the overhead benchmark on CUDA (wall time with a synchronisation per block). Given MACHINE (a name in
# benchmarks/results/machines.json) both are filed as results (benchmarks/record.py).
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
if [ -n "$MACHINE" ]; then
  "$PY" benchmarks/record.py sync_check "$MACHINE" "$OUT/sync_check.json" \
      --command "bash benchmarks/device/gpu_check.sh OUT $MACHINE (benchmarks/device/sync_check.py)"
  "$PY" benchmarks/record.py overhead_bernoulli "$MACHINE" "$OUT/overhead_cuda.json" \
      --command "bash benchmarks/device/gpu_check.sh OUT $MACHINE (overhead.py --device cuda --quick --rounds 5)"
fi
ls -la "$OUT"
