"""The categorical VAE at ReinMax's published protocol (``stochgrad train vae --protocol reinmax``: 784-512-256
ReLU encoder and decoder, batch 100, 160 epochs, the configuration script's optimiser, learning rate and
temperature; see :mod:`stochgrad.studies.vae`), one run per estimator, one after another, each resumable.

Run (long: ~45 CPU-minutes per estimator on one core of a 2-core Xeon VM; start it in the background)::

    nice -n 10 python benchmarks/reproduce/vae_reinmax.py --config 10x30 \\
        --estimators reinmax,gumbel_st,straight_through,reinforce_loo --runs runs/vae_reinmax

Killed or stopped, the same command continues every unfinished run from its last checkpoint (every 1,000
steps) and skips finished ones. ``--collect`` writes what the runs have reached (finished runs' summaries,
unfinished runs' last logged step and training ELBO) to
``benchmarks/results/vae_reinmax/<machine>/<date>_<commit>.json``, ``--collect-only`` does only that.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "..", "results", "vae_reinmax")


def run_dir(runs: str, config: str, estimator: str, seed: int) -> str:
    return os.path.join(runs, f"{config}_{estimator}_s{seed}")


def finished(out: str) -> dict | None:
    """The run's summary, if it finished (its summary's steps are the protocol's)."""
    path = os.path.join(out, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        summary = json.load(fh)
    return summary if summary.get("steps") == summary.get("planned_steps", 96_000) else None


def train(out: str, config: str, estimator: str, seed: int, extra: list[str]) -> int:
    classes, latents = config.split("x")
    cmd = [sys.executable, "-m", "stochgrad", "train", "vae", "--protocol", "reinmax", "--estimator", estimator,
           "--categories", classes, "--latents", latents, "--seed", str(seed), "--out", out, "--clock", "cpu",
           "--quiet", *extra]
    if os.path.exists(os.path.join(out, "checkpoint.pt")):
        cmd.append("--resume")
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def progress(out: str) -> dict:
    """An unfinished run: its last logged row (step, training ELBO of the last 100 steps, CPU seconds)."""
    path = os.path.join(out, "metrics.csv")
    if not os.path.exists(path):
        return {"steps": 0}
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {"steps": 0}
    last = rows[-1]
    return {"steps": int(last["step"]), "train_elbo_last_100_steps": float(last["train_elbo"]),
            "train_seconds": float(last["seconds"])}


def collect(runs: str, config: str, estimators: list[str], seed: int, machine: str) -> str:
    from stochgrad.runinfo import environment, git_commit

    table = {}
    for name in estimators:
        out = run_dir(runs, config, name, seed)
        summary = finished(out)
        table[name] = {"finished": True, **summary} if summary else {"finished": False, **progress(out)}
    commit = (git_commit()[0] or "nocommit")[:7]
    date = datetime.date.today().isoformat()
    folder = os.path.join(RESULTS, machine)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{date}_{commit}.json")
    with open(path, "w") as fh:
        json.dump({"benchmark": "vae_reinmax", "config": config, "seed": seed, "machine": machine,
                   "protocol": "stochgrad train vae --protocol reinmax (ReinMax mnist_vae, 160 epochs)",
                   "runs": table, "environment": environment()}, fh, indent=1)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="10x30", help="classes x latents, a published one (10x30, 8x16, ...)")
    p.add_argument("--estimators", default="reinmax,gumbel_st,straight_through,reinforce_loo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/vae_reinmax", help="folder of the runs (checkpoints, metrics)")
    p.add_argument("--machine", default=os.environ.get("STOCHGRAD_MACHINE", "xeon-2core"))
    p.add_argument("--collect", action="store_true", help="write the results file after the runs")
    p.add_argument("--collect-only", action="store_true", help="only write the results file")
    p.add_argument("--steps", type=int, default=None, help="a shorter run (tests)")
    a = p.parse_args()
    names = a.estimators.split(",")
    if not a.collect_only:
        extra = [] if a.steps is None else ["--steps", str(a.steps)]
        for name in names:
            out = run_dir(a.runs, a.config, name, a.seed)
            if finished(out) is None and train(out, a.config, name, a.seed, extra) != 0:
                print(f"{name}: the run stopped with an error; rerun to resume it", file=sys.stderr)
    if a.collect or a.collect_only:
        print("wrote", collect(a.runs, a.config, names, a.seed, a.machine))


if __name__ == "__main__":
    main()
