"""A published VAE protocol at its full length (``stochgrad.studies.vae.PROTOCOLS``: ``disarm`` — linear or
nonlinear, batch 50, Adam 1e-4, 1,000,000 steps; ``rodeo`` — nonlinear, batch 100, Adam 1e-3, 1,000,000
steps) for each estimator, on a GPU when one is present; each run writes its curves and summary into
``OUT/vae_<protocol>_<model>_<estimator>/`` (default ``runs/vae_full``), and a run that finds its checkpoint resumes.
``--record MACHINE`` files them all as one result, ``benchmarks/results/vae_full_<protocol>_<model>/MACHINE/`` (see
``record.py``).

Run: ``python benchmarks/vae_full.py --protocol disarm [--model nonlinear] [--estimators disarm,reinforce_loo]
[--steps N] [--max-seconds S] [--record MACHINE]``. Without a GPU it stops unless ``--cpu-ok`` is given (a million
steps take many hours on one core).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from stochgrad.studies.vae import PROTOCOLS, VAEConfig, train_vae

from record import read_run, save  # beside this file (benchmarks/ is on sys.path)

DEFAULT = "disarm,reinforce_loo,reinforce_optimal,rebar,relax,straight_through_sigmoid,gumbel_st"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--protocol", default="disarm", choices=list(PROTOCOLS))
    p.add_argument("--model", default=None, choices=["linear", "nonlinear"], help="default: the protocol's")
    p.add_argument("--steps", type=int, default=None, help="default: the protocol's (1,000,000)")
    p.add_argument("--max-seconds", type=float, default=0.0, help="stop each run after this much training time")
    p.add_argument("--estimators", default=DEFAULT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu-ok", action="store_true")
    p.add_argument("--out", default="runs/vae_full")
    p.add_argument("--record", metavar="MACHINE", help="file the runs as one result for MACHINE (results/machines.json)")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not a.cpu_ok:
        raise SystemExit("no GPU found: pass --cpu-ok to run on the CPU anyway (slow), or fewer --steps")
    summaries = {}
    model = a.model or PROTOCOLS[a.protocol]["model"]
    for name in a.estimators.split(","):
        out = os.path.join(a.out, f"vae_{a.protocol}_{model}_{name}")
        cfg = VAEConfig(dataset="mnist", protocol=a.protocol, model=model, estimator=name, steps=a.steps,
                        seed=a.seed, device=device, out=out, log_every=1000, checkpoint_every=10000,
                        max_seconds=a.max_seconds, resume=os.path.exists(os.path.join(out, "checkpoint.pt")),
                        progress=False)
        summaries[name] = train_vae(cfg)
        print(json.dumps(summaries[name]), flush=True)
    with open(os.path.join(a.out, f"vae_full_{a.protocol}_{model}_summary.json"), "w") as fh:
        json.dump(summaries, fh, indent=1)
    if a.record:
        runs = {name: read_run(Path(a.out) / f"vae_{a.protocol}_{model}_{name}") for name in summaries}
        print(save(f"vae_full_{a.protocol}_{model}", a.record, runs, "python benchmarks/vae_full.py " + " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()
