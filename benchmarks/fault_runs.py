"""Fault runs of the checkpoints: ``kill -9`` of ``stochgrad train vae`` at random moments (some during a
checkpoint write), each followed by ``--resume`` until the run finishes; every finished run must equal an
uninterrupted run of the same length: the final checkpoint's tensors, the metrics rows (step, ELBO,
gradient variance) and the summary's numbers (training time, steps per second and environment aside). Then a disk-full
run on a small tmpfs (needs root): it must end with a clear "no space left" error, no temporary file
left behind and an intact, verified last checkpoint.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fault_runs.py [--trials 20] [--seed 0] [--work DIR]
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from stochgrad.studies.training import load_checkpoint, payload_digest

ARGS = ["--dataset", "digits", "--model", "nonlinear", "--estimator", "disarm", "--steps", "300", "--batch-size", "16",
        "--log-every", "5", "--checkpoint-every", "7", "--test-samples", "5", "--test-examples", "50", "--quiet"]


CLOCK = ("train_seconds", "steps_per_second", "environment")   # what the clock and the moment decide in summary.json


def command(out, *extra):
    return [sys.executable, "-m", "stochgrad", "train", "vae", "--out", out, *ARGS, *extra]


def rows_written(out) -> int:
    """Complete rows of ``out``'s metrics.csv so far (0 without one)."""
    try:
        with open(os.path.join(out, "metrics.csv")) as fh:
            return max(0, fh.read().count("\n") - 1)
    except OSError:
        return 0


def finish(out) -> tuple[int, str]:
    r = subprocess.run(command(out, "--resume"), capture_output=True, text=True)
    if r.returncode and "no checkpoint to resume from" in r.stderr:   # killed before its first checkpoint
        r = subprocess.run(command(out), capture_output=True, text=True)
        return r.returncode, "restarted fresh (no checkpoint yet)"
    return r.returncode, r.stderr.strip().splitlines()[-1] if r.returncode else "resumed"


def outcome(out) -> dict:
    state = load_checkpoint(os.path.join(out, "checkpoint.pt"))
    with open(os.path.join(out, "metrics.csv")) as fh:
        rows = [(r["step"], r["train_elbo"], r["encoder_grad_variance"]) for r in csv.DictReader(fh)]
    with open(os.path.join(out, "summary.json")) as fh:
        summary = {k: v for k, v in json.load(fh).items() if k not in CLOCK}
    for e in summary.get("evaluations", []):
        e.pop("train_seconds", None)
    return {"state": state, "rows": rows, "summary": summary}


def same(a, b) -> list[str]:
    diff = []
    for part in ("model", "estimator", "optimizer", "generator", "gradient_variance", "log_window"):
        if payload_digest(a["state"].get(part)) != payload_digest(b["state"].get(part)):
            diff.append(part)
    if a["state"]["step"] != b["state"]["step"]:
        diff.append("step")
    if a["rows"] != b["rows"]:
        diff.append("metrics.csv")
    if a["summary"] != b["summary"]:
        diff.append("summary.json")
    return diff


def kill_runs(work, trials, rng) -> list[dict]:
    ref = os.path.join(work, "reference")
    t0 = time.perf_counter()
    proc = subprocess.Popen(command(ref), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while proc.poll() is None:   # when does training start writing checkpoints?
        if first is None and os.path.exists(os.path.join(ref, "checkpoint.pt")):
            first = time.perf_counter() - t0
        time.sleep(0.005)
    span = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit("the reference run failed")
    first = first or 0.5 * span
    reference = outcome(ref)
    print(f"reference run: {span:.1f} s, first checkpoint after {first:.1f} s, {len(reference['rows'])} metric rows")
    results = []
    for k in range(trials):
        out = os.path.join(work, f"trial{k:02d}")
        proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.perf_counter()
        # odd trials: kill while the n-th checkpoint's temporary file exists (n random); even trials: at a
        # random moment of training, whatever the machine's speed: once metrics.csv holds a random number of
        # rows (0: before the first), after a further random pause of up to 0.3 s
        during_write = k % 2 == 1
        nth = rng.randint(1, 30)
        rows_target, pause = rng.randint(0, len(reference["rows"]) - 2), rng.uniform(0.0, 0.3)
        reached = None
        seen, present = 0, False
        while proc.poll() is None:
            elapsed = time.perf_counter() - start
            if during_write:
                now = bool(glob.glob(os.path.join(out, "checkpoint.pt.tmp.*")))
                if now and not present:
                    seen += 1
                    if seen >= nth:
                        break
                present = now
                if elapsed > 3 * span:
                    break
                time.sleep(0.0005)
            else:
                if reached is None and rows_written(out) >= rows_target:
                    reached = elapsed
                if reached is not None and elapsed > reached + pause:
                    break
                time.sleep(0.002)
        killed_at = time.perf_counter() - start
        finished_first = proc.poll() is not None
        if not finished_first:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stale = glob.glob(os.path.join(out, "checkpoint.pt.tmp.*"))
        try:
            step_at_kill = load_checkpoint(os.path.join(out, "checkpoint.pt"))["step"]
        except Exception:
            step_at_kill = None
        rc, how = finish(out)
        left = glob.glob(os.path.join(out, "*.tmp.*"))
        diff = same(outcome(out), reference) if rc == 0 else ["did not finish"]
        r = {"trial": k, "killed_after_s": round(killed_at, 2), "mode": "during write" if during_write else "random",
             "finished_before_kill": finished_first, "temp_file_at_kill": bool(stale), "checkpoint_step_at_kill": step_at_kill,
             "resume": how, "rc": rc, "temp_files_left": len(left), "differences": diff}
        results.append(r)
        print(json.dumps(r))
    return results


def disk_full(work) -> dict:
    mnt = os.path.join(work, "tmpfs")
    os.makedirs(mnt, exist_ok=True)
    probe = os.path.join(work, "probe")
    subprocess.run(command(probe, "--steps", "2"), check=True, capture_output=True)
    size = os.path.getsize(os.path.join(probe, "checkpoint.pt"))
    limit = int(size * 1.6) // 4096 * 4096 + 8192   # room for one checkpoint and the metrics, not two checkpoints
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", mnt]).returncode:
        return {"skipped": "mount -t tmpfs failed (not root?)"}
    try:
        out = os.path.join(mnt, "run")
        r = subprocess.run(command(out), capture_output=True, text=True)
        err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        files = sorted(os.listdir(out))
        try:
            step = load_checkpoint(os.path.join(out, "checkpoint.pt"))["step"]
            intact = f"verified, step {step}"
        except Exception as e:  # noqa: BLE001
            intact = f"NOT intact: {e}"
        return {"tmpfs_bytes": limit, "checkpoint_bytes": size, "rc": r.returncode, "error": err, "files": files,
                "last_checkpoint": intact}
    finally:
        subprocess.run(["umount", mnt])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temporary one, removed after)")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="stochgrad_faults_")
    os.makedirs(work, exist_ok=True)
    try:
        results = kill_runs(work, args.trials, random.Random(args.seed))
        ok = [r for r in results if r["rc"] == 0 and not r["differences"] and not r["temp_files_left"]]
        during = sum(r["temp_file_at_kill"] for r in results)
        print(f"kill -9: {len(ok)}/{len(results)} runs finished identical to the uninterrupted run; "
              f"{during} kills landed during a checkpoint write; "
              f"{sum(r['finished_before_kill'] for r in results)} runs finished before their kill")
        full = disk_full(work)
        print("disk full:", json.dumps(full))
        return 0 if len(ok) == len(results) and full.get("rc", 1) != 0 else 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
