"""The equal-time race: each estimator trains the same VAE for the same budget of CPU seconds; which objective does
each reach, and does ``auto`` keep up with the best of its candidates?

* ``--model linear``: the linear VAE of the DisARM protocol (200 Bernoulli latents, batch 50, Adam 1e-4), two
  evaluations of f per example and step for every estimator (``disarm``: one antithetic pair; the others two
  samples; ``auto``: a budget of 2, ranking its candidates by variance x seconds per step).
* ``--model categorical``: 20 variables x 10 classes, nonlinear 784-200-200 encoder and decoder, batch 100,
  Adam 1e-3, four samples per example for every estimator (the biased pathwise ones included for reference;
  ``auto`` chooses among the unbiased ones).

Every run has the same seed, one torch thread and ``--clock cpu``: its budget (``--seconds``, at least 300) is the
training thread's CPU time, which other processes on a shared machine cannot eat into. At the end: the 100-sample
importance-weighted bound and the one-sample ELBO on the whole test set. Runs go one after another; a finished run
is skipped, so the same command continues an interrupted race (an interrupted run starts over). ``--record MACHINE``
files the runs (``benchmarks/record.py``) as ``vae_race_<model>``; ``benchmarks/report.py --figures`` draws the
curves (training ELBO against CPU seconds, auto's switches marked).

    PYTHONPATH=$PWD/src nice -n 10 python benchmarks/reproduce/vae_race.py --model linear --seconds 300 \\
        --runs runs/race --record cpu-2core
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from record import read_run, save  # noqa: E402  (benchmarks/record.py)

MODELS = {
    "linear": {"flags": ["--protocol", "disarm", "--model", "linear"],
               "estimators": {"disarm": 1, "reinforce_loo": 2, "arms": 2, "double_cv": 2, "rodeo": 2, "auto": 2}},
    "categorical": {"flags": ["--protocol", "disarm", "--model", "nonlinear", "--categories", "10", "--latents", "20",
                              "--batch-size", "100", "--lr", "1e-3"],
                    "estimators": {"reinforce_loo": 4, "carms": 4, "auto": 4, "gumbel_st": 4, "straight_through": 4,
                                   "reinmax": 4, "gumbel_rao": 4}},
}


def done(out: Path, seconds: float) -> bool:
    path = out / "summary.json"
    if not path.exists():
        return False
    summary = json.loads(path.read_text())
    return summary.get("clock") == "cpu" and summary.get("train_seconds", 0) >= seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(MODELS), required=True)
    p.add_argument("--seconds", type=float, default=300.0, help="CPU seconds of training per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--estimators", help="comma-separated (default: the model's list)")
    p.add_argument("--runs", default="runs/race")
    p.add_argument("--test-examples", type=int, default=0, help="0: the whole test set")
    p.add_argument("--record", metavar="MACHINE")
    a = p.parse_args()
    spec = MODELS[a.model]
    names = a.estimators.split(",") if a.estimators else list(spec["estimators"])
    folders = []
    for seed in a.seeds:
        for name in names:
            out = Path(a.runs) / f"{a.model}_{name}_s{seed}"
            folders.append(out)
            if done(out, a.seconds):
                continue
            cmd = [sys.executable, "-m", "stochgrad", "train", "vae", *spec["flags"], "--estimator", name,
                   "--samples", str(spec["estimators"].get(name, 2)), "--seed", str(seed), "--steps", "100000000",
                   "--max-seconds", str(a.seconds), "--clock", "cpu", "--threads", "1", "--log-every", "100",
                   "--checkpoint-every", "100000000", "--test-samples", "100", "--test-examples",
                   str(a.test_examples), "--no-train-bound", "--quiet", "--out", str(out)]
            print(" ".join(cmd), flush=True)
            if subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}) != 0:
                print(f"{name} seed {seed}: the run failed", file=sys.stderr)
            for leftover in out.glob("checkpoint.pt*"):   # results only: metrics.csv, summary.json, curves.png
                leftover.unlink()
    if a.record:
        runs = {f.name: read_run(f) for f in folders if (f / "summary.json").exists()}
        note = (f"{a.seconds:.0f} s of the training thread's CPU time per run (--clock cpu), one thread, seeds "
                f"{a.seeds}; test bound on {a.test_examples or 'all'} test images. auto's switches (call = step) "
                "are in its summary.")
        command = "python benchmarks/reproduce/vae_race.py " + " ".join(arg for arg in sys.argv[1:])
        print(save(f"vae_race_{a.model}", a.record, runs, command, note))


if __name__ == "__main__":
    main()
