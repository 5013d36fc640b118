"""The categorical VAE at ReinMax's published protocol (``stochgrad train vae --protocol reinmax``: 784-512-256
ReLU encoder and decoder, batch 100, 160 epochs, the configuration script's optimiser, learning rate and
temperature; see :mod:`stochgrad.studies.vae`), one run per estimator, one after another, each resumable.

Run (long: ~45 CPU-minutes per estimator on one core of a 2-core Xeon VM; start it in the background)::

    nice -n 10 python benchmarks/reproduce/vae_reinmax.py --config 10x30 \\
        --estimators reinmax,gumbel_st,straight_through,reinforce_loo --runs runs/vae_reinmax

Killed or stopped, the same command continues every unfinished run from its last checkpoint (every 1,000
steps) and skips finished ones. ``--collect`` files what the runs have reached (finished runs' summaries and curves,
unfinished runs' curves so far) as ``benchmarks/results/vae_reinmax/<machine>/<date>_<commit>.json``
(``benchmarks/record.py``); ``--collect-only`` does only that.
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


def collect(runs: str, config: str, estimators: list[str], seed: int, machine: str, command: str):
    """Files every run (finished or not: its metrics so far) as one result (``benchmarks/record.py``)."""
    folders = {name: run_dir(runs, config, name, seed) for name in estimators}
    table = {}
    for name, out in folders.items():
        if os.path.exists(os.path.join(out, "metrics.csv")):
            run = read_run(Path(out))
            run["finished"] = finished(out) is not None
            if not run["finished"]:
                run.pop("summary", None)   # a summary of a shorter earlier run, if any: not this protocol's
            table[name] = run
    note = (f"ReinMax's MNIST protocol, {config.replace('x', ' classes x ')} latents, seed {seed}, one CPU thread; "
            "seconds are the training thread's CPU time. test_elbo_1_sample_analytic_kl is the published code's test "
            "figure (one sample, exact KL); train_elbo_last_epoch its training figure. Unfinished runs: metrics so far.")
    return save("vae_reinmax", machine, table, command, note)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="10x30", help="classes x latents, a published one (10x30, 8x16, ...)")
    p.add_argument("--estimators", default="reinmax,gumbel_st,straight_through,reinforce_loo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/vae_reinmax", help="folder of the runs (checkpoints, metrics)")
    p.add_argument("--machine", default="cpu-2core", help="a machine named in benchmarks/results/machines.json")
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
        command = "python benchmarks/reproduce/vae_reinmax.py " + " ".join(a for a in sys.argv[1:] if "collect" not in a)
        print("wrote", collect(a.runs, a.config, names, a.seed, a.machine, command))


if __name__ == "__main__":
    main()
