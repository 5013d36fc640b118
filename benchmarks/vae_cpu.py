"""Issue 12's equal-step table and long runs on a small shared CPU machine, one single-threaded run at a time.

The linear VAE under the DisARM protocol (``stochgrad train vae --protocol disarm``) against the hand-written
loop (``benchmarks/vae_plain.py``), same seed: the same initial weights, batches and noise (the two consume one
generator in the same order), so a gap is floating-point divergence plus the estimator's own noise. Every run
checkpoints and is resumed, so the table fills in stages and a kill loses at most ``--checkpoint-every`` steps:

1. disarm seed 0 to 5,000 then 20,000 steps; every other (estimator, seed) to 5,000; then those to 20,000
   (each stage by stochgrad, then by the plain loop);
2. stochgrad's seed-0 disarm and reinforce_loo runs on towards ``--long-steps`` (the long runs), in
   alternating chunks, with the test bounds at every chunk's end.

Run from the repository root (it resumes where it stopped; ``touch OUT/STOP`` stops it between runs)::

    PYTHONPATH=$PWD/src nice -n 5 python benchmarks/vae_cpu.py --out benchmarks/results/vae_cpu --runs runs/vae_cpu

Results: ``OUT/<impl>_<estimator>_s<seed>_<k>k.json`` (the run's summary at that step, plus the machine) and
``OUT/<impl>_<estimator>_s<seed>.csv`` (its training curve so far); after every run ``OUT/report.md`` (the
equal-step table, gaps stochgrad − plain) and ``OUT/long_curves.png`` / ``.json`` (the seed-0 disarm and
reinforce_loo curves: training ELBO, test bounds, encoder-gradient variance). ``--report`` only rewrites those;
``--tiny`` runs a seconds-long version.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ESTIMATORS = ("disarm", "reinforce_loo", "straight_through_sigmoid")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


KEYS = (("train_elbo_last_epoch", "train (last epoch, 1 sample)"), ("test_elbo_1_sample", "test 1-sample"),
        ("test_elbo_100_samples", "test 100-sample bound"))


def _results(out):
    """{(impl, estimator, seed, steps): summary} from OUT's json files."""
    res = {}
    for path in glob.glob(os.path.join(out, "*_s[0-9]*_*.json")):
        s = json.load(open(path))
        res[(s["implementation"], s["estimator"], s["seed"], s["steps"])] = s
    return res


def _fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def report(out):
    """OUT/report.md (the equal-step table) and OUT/long_curves.{png,json}."""
    res = _results(out)
    steps_all = sorted({k[3] for k in res})
    lines = ["# Linear VAE, DisARM protocol: stochgrad against the plain-torch loop at equal steps", "",
             "Same seed = same initial weights, batches and noise (the two draw from one generator in the same order); "
             "gap = stochgrad − plain, nats. 1 thread per run, one run at a time, on a shared 2-core machine.", "",
             "<!-- --8<-- [start:table] -->",
             "| estimator | steps | seed | " + " | ".join(f"{label}: stochgrad | plain | gap" for _, label in KEYS) + " |",
             "|---|---|---|" + "---|---|---|" * len(KEYS)]
    gaps = {}
    for est in ESTIMATORS:
        for steps in steps_all:
            for seed in sorted({k[2] for k in res}):
                lib, pl = res.get(("stochgrad", est, seed, steps)), res.get(("plain", est, seed, steps))
                if lib is None and pl is None:
                    continue
                row = [est, f"{steps:,}", str(seed)]
                for key, _ in KEYS:
                    a, b = (None if r is None else r.get(key) for r in (lib, pl))
                    g = None if a is None or b is None else a - b
                    if g is not None:
                        gaps.setdefault((est, steps, key), []).append(g)
                    row += [_fmt(a), _fmt(b), _fmt(g, "+.2f")]
                lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Mean gap over the seeds present (nats):", "",
              "| estimator | steps | seeds | " + " | ".join(label for _, label in KEYS) + " |", "|---|---|---|" + "---|" * len(KEYS)]
    for (est, steps) in sorted({(e, s) for e, s, _ in gaps}, key=lambda k: (ESTIMATORS.index(k[0]), k[1])):
        vals = [gaps.get((est, steps, k), []) for k, _ in KEYS]
        lines.append(f"| {est} | {steps:,} | {max(len(v) for v in vals)} | "
                     + " | ".join(_fmt(sum(v) / len(v) if v else None, "+.2f") for v in vals) + " |")
    curves = {}
    for est in ("disarm", "reinforce_loo"):
        for impl in ("stochgrad", "plain"):
            path = os.path.join(out, f"{impl}_{est}_s0.csv")
            if not os.path.exists(path):
                continue
            rows = list(csv.DictReader(open(path)))
            points = sorted((s["steps"], s.get("test_elbo_100_samples"), s.get("test_elbo_1_sample"))
                            for k, s in res.items() if k[:3] == (impl, est, 0))
            curves[f"{impl} {est}"] = {
                "step": [int(r["step"]) for r in rows], "train_elbo": [float(r["train_elbo"]) for r in rows],
                "encoder_grad_variance": [float(r["encoder_grad_variance"]) for r in rows] if rows and
                "encoder_grad_variance" in rows[0] else None,
                "test_steps": [p[0] for p in points], "test_elbo_100_samples": [p[1] for p in points],
                "test_elbo_1_sample": [p[2] for p in points]}
    long = [f"| {name} | {c['step'][-1] if c['step'] else 0:,} | "
            + ", ".join(f"{s:,}: {_fmt(v)}" for s, v in zip(c["test_steps"], c["test_elbo_100_samples"])) + " |"
            for name, c in curves.items()]
    lines += ["", "## Seed-0 runs of disarm and reinforce_loo (the long runs), curves in `long_curves.png`", "",
              "| run | steps | test 100-sample bound at steps |", "|---|---|---|", *long]
    lines.append("<!-- --8<-- [end:table] -->")
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "long_curves.json"), "w") as fh:
        json.dump(curves, fh)
    if curves:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(15, 4))
        for name, c in curves.items():
            style = "-" if name.startswith("stochgrad") else "--"
            ax[0].plot(c["step"], c["train_elbo"], style, label=name)
            ax[1].plot(c["test_steps"], c["test_elbo_100_samples"], style + "o", label=name)
            if c["encoder_grad_variance"]:
                ax[2].plot(c["step"], c["encoder_grad_variance"], style, label=name)
        for a_, title in zip(ax, ("training ELBO (1 sample, mean over 500 steps)", "test 100-sample bound",
                                  "encoder-gradient variance (stochgrad)")):
            a_.set_title(title)
            a_.set_xlabel("step")
            a_.legend()
        ax[0].set_ylim(bottom=max(min(min(c["train_elbo"]) for c in curves.values() if c["train_elbo"]), -200))
        fig.suptitle("Linear VAE, DisARM protocol, seed 0 (2-core shared CPU, 1 thread)")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "long_curves.png"), dpi=90)
        plt.close(fig)


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
    p.add_argument("--out", default="benchmarks/results/vae_cpu")
    p.add_argument("--runs", default="runs/vae_cpu", help="run directories (checkpoints; not committed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--stages", type=int, nargs="+", default=[5000, 20000])
    p.add_argument("--long-steps", type=int, default=100000)
    p.add_argument("--long-chunk", type=int, default=20000)
    p.add_argument("--tiny", action="store_true", help="a seconds-long version (tests the script)")
    p.add_argument("--report", action="store_true", help="only write OUT/report.md and the curves from OUT")
    a = p.parse_args()
    if a.report:
        return report(a.out)
    extra = []
    if a.tiny:
        a.stages, a.long_steps, a.long_chunk = [20, 40], 80, 20
        extra = ["--test-examples", "200", "--test-samples", "5", "--log-every", "10", "--checkpoint-every", "10"]
    else:
        extra = ["--log-every", "500", "--checkpoint-every", "1000"]
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.runs, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run(impl, est, seed, steps):
        name = f"{impl}_{est}_s{seed}"
        result = os.path.join(a.out, f"{name}_{steps // 1000 if steps >= 1000 else steps}{'k' if steps >= 1000 else ''}.json")
        if os.path.exists(result):
            return
        if os.path.exists(os.path.join(a.out, "STOP")):
            sys.exit("STOP file found")
        d = os.path.join(a.runs, name)
        resume = ["--resume"] if os.path.exists(os.path.join(d, "checkpoint.pt")) else []
        if impl == "stochgrad":
            cmd = [sys.executable, "-m", "stochgrad", "train", "vae", "--threads", "1", "--protocol", "disarm",
                   "--estimator", est, "--seed", str(seed), "--steps", str(steps), "--out", d, "--quiet",
                   "--no-train-bound"]
        else:
            cmd = [sys.executable, os.path.join(HERE, "vae_plain.py"), "train", "--estimator", est,
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
        shutil.copy(os.path.join(d, "metrics.csv"), os.path.join(a.out, f"{name}.csv"))
        print(f"{time.strftime('%H:%M:%S')} {name} {steps}: train {summary['train_elbo_last_epoch']:.2f} test1 "
              f"{summary['test_elbo_1_sample']:.2f} test{'5' if a.tiny else '100'} "
              f"{summary['test_elbo_5_samples' if a.tiny else 'test_elbo_100_samples']:.2f} "
              f"({time.time() - t:.0f} s)", flush=True)
        report(a.out)

    for est, seed, steps in plan(a.stages, a.seeds):
        for impl in ("stochgrad", "plain"):
            run(impl, est, seed, steps)
    steps = a.stages[-1]
    while steps < a.long_steps:   # the long runs: stochgrad seed 0, alternating chunks
        steps = min(steps + a.long_chunk, a.long_steps)
        for est in ("disarm", "reinforce_loo"):
            run("stochgrad", est, a.seeds[0], steps)


if __name__ == "__main__":
    main()
