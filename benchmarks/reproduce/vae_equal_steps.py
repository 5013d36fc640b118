"""The equal-step comparison and long runs of the linear VAE on a small CPU machine, one single-threaded run at a time.

The linear VAE under the DisARM protocol (``stochgrad train vae --protocol disarm``) against the hand-written
loop (``benchmarks/vae_plain.py``), same seed: the same initial weights, batches and noise (the two consume one
generator in the same order), so a gap is floating-point divergence plus the estimator's own noise. Every run
checkpoints and is resumed, so the table fills in stages and a kill loses at most ``--checkpoint-every`` steps:

1. disarm seed 0 to 5,000 then 20,000 steps; every other (estimator, seed) to 5,000; then those to 20,000
   (each stage by stochgrad, then by the plain loop);
2. stochgrad's seed-0 disarm and reinforce_loo runs on towards ``--long-steps`` (the long runs), in
   alternating chunks, with the test bounds at every chunk's end.

Run from the repository root (it resumes where it stopped; ``touch WORK/STOP`` stops it between runs)::

    PYTHONPATH=$PWD/src nice -n 5 python benchmarks/reproduce/vae_equal_steps.py --work runs/vae_equal_steps --record cpu-2core

Work files: ``WORK/<impl>_<estimator>_s<seed>_<k>k.json`` (the run's summary at that step, plus the machine) and
``WORK/<impl>_<estimator>_s<seed>.csv`` (its training curve so far). ``--record MACHINE`` files them all as one result
(``benchmarks/results/vae_equal_steps/MACHINE/<date>_<commit>.json``, see ``record.py``) once the runs are done;
``benchmarks/report.py`` draws its table (gaps stochgrad − plain) and the seed-0 curves. ``--tiny`` runs a
seconds-long version.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCHMARKS)
from record import read_metrics, save  # noqa: E402  (benchmarks/record.py)

ESTIMATORS = ("disarm", "reinforce_loo", "straight_through_sigmoid")
NOTE = ("The linear VAE under the DisARM protocol, stochgrad (`stochgrad train vae --protocol disarm`) against a "
        "hand-written plain-torch loop (benchmarks/vae_plain.py); at the same seed both start from the same weights and "
        "draw the same batches and noise. One single-threaded run at a time.")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def collect(work) -> tuple[dict, dict]:
    """The runs' summaries by file stem and their training curves (``{stem: {column: values}}``) from WORK."""
    runs = {os.path.basename(p)[:-5]: json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "*_s[0-9]*_*.json")))}
    curves = {os.path.basename(p)[:-4]: read_metrics(Path(p)) for p in sorted(glob.glob(os.path.join(work, "*.csv")))}
    return runs, curves


def plan(stages, seeds):
    """(estimator, seed, steps) in the order run, the most evidence per CPU second first: disarm of the first seed
    through every stage (its curve is the long run's start), then the first stage of every other (estimator,
    seed), then the later stages (reinforce_loo, disarm, straight-through)."""
    first = [("disarm", seeds[0], s) for s in stages]
    rest = [(e, seed, stages[0]) for seed in seeds for e in ESTIMATORS]
    rest += [(e, seed, s) for s in stages[1:] for seed in seeds
             for e in ("reinforce_loo", "disarm", "straight_through_sigmoid")]
    return first + [r for r in rest if r not in first]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/vae_equal_steps/summaries", help="the runs' summaries and curves")
    p.add_argument("--runs", default="runs/vae_equal_steps", help="run directories (checkpoints; not committed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--stages", type=int, nargs="+", default=[5000, 20000])
    p.add_argument("--long-steps", type=int, default=100000)
    p.add_argument("--long-chunk", type=int, default=20000)
    p.add_argument("--tiny", action="store_true", help="a seconds-long version (tests the script)")
    p.add_argument("--record", metavar="MACHINE", help="when every run is done, file them as one result for MACHINE")
    a = p.parse_args()
    extra = []
    if a.tiny:
        a.stages, a.long_steps, a.long_chunk = [20, 40], 80, 20
        extra = ["--test-examples", "200", "--test-samples", "5", "--log-every", "10", "--checkpoint-every", "10"]
    else:
        extra = ["--log-every", "500", "--checkpoint-every", "1000"]
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.runs, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run(impl, est, seed, steps):
        name = f"{impl}_{est}_s{seed}"
        result = os.path.join(a.work, f"{name}_{steps // 1000 if steps >= 1000 else steps}{'k' if steps >= 1000 else ''}.json")
        if os.path.exists(result):
            return
        if os.path.exists(os.path.join(a.work, "STOP")):
            sys.exit("STOP file found")
        d = os.path.join(a.runs, name)
        resume = ["--resume"] if os.path.exists(os.path.join(d, "checkpoint.pt")) else []
        if impl == "stochgrad":
            cmd = [sys.executable, "-m", "stochgrad", "train", "vae", "--threads", "1", "--protocol", "disarm",
                   "--estimator", est, "--seed", str(seed), "--steps", str(steps), "--out", d, "--quiet",
                   "--no-train-bound"]
        else:
            cmd = [sys.executable, os.path.join(BENCHMARKS, "vae_plain.py"), "train", "--estimator", est,
                   "--seed", str(seed), "--steps", str(steps), "--out", d]
        t, cpu = time.time(), _children_cpu()
        done = os.path.join(d, "summary.json")
        if not (os.path.exists(done) and json.load(open(done))["steps"] == steps):   # else: finished, not yet copied
            proc = subprocess.run(cmd + extra + resume, env=env, capture_output=True, text=True)
            if proc.returncode:
                print(f"{name} to {steps}: rc {proc.returncode}\n{proc.stderr[-2000:]}", flush=True)
                return
        with open(os.path.join(d, "summary.json")) as fh:
            summary = json.load(fh)
        summary.update(implementation=impl, seed=seed, wall_seconds_this_stage=time.time() - t,
                       cpu_seconds_this_stage=_children_cpu() - cpu, machine=f"{platform.node()} {platform.processor()}, "
                       f"{os.cpu_count()} cores shared, 1 thread, load {os.getloadavg()[0]:.1f} at the end")
        with open(result, "w") as fh:
            json.dump(summary, fh, indent=1)
        shutil.copy(os.path.join(d, "metrics.csv"), os.path.join(a.work, f"{name}.csv"))
        print(f"{time.strftime('%H:%M:%S')} {name} {steps}: train {summary['train_elbo_last_epoch']:.2f} test1 "
              f"{summary['test_elbo_1_sample']:.2f} test{'5' if a.tiny else '100'} "
              f"{summary['test_elbo_5_samples' if a.tiny else 'test_elbo_100_samples']:.2f} "
              f"({time.time() - t:.0f} s)", flush=True)

    for est, seed, steps in plan(a.stages, a.seeds):
        for impl in ("stochgrad", "plain"):
            run(impl, est, seed, steps)
    steps = a.stages[-1]
    while steps < a.long_steps:   # the long runs: stochgrad seed 0, alternating chunks
        steps = min(steps + a.long_chunk, a.long_steps)
        for est in ("disarm", "reinforce_loo"):
            run("stochgrad", est, a.seeds[0], steps)
    if a.record:
        runs, curves = collect(a.work)
        print(save("vae_equal_steps", a.record, runs, "python benchmarks/reproduce/vae_equal_steps.py " + " ".join(sys.argv[1:]),
                   NOTE, extra={"curves": curves}))


if __name__ == "__main__":
    main()
