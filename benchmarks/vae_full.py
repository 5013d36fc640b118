"""The full-length linear VAE benchmark (NOTES.md: 784-200 logistic encoder and decoder, 200 Bernoulli
latents, dynamically binarised MNIST, batch 24, Adam 1e-3) for each estimator, on a GPU when one is
present; curves and summaries go to ``benchmarks/results/vae_<estimator>/``.

Run: ``python benchmarks/vae_full.py [--steps 1000000] [--estimators disarm,rebar]``. Without a GPU it
stops unless ``--cpu-ok`` is given (a million steps take many hours on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from stochgrad.studies.vae import VAEConfig, train_vae

DEFAULT = "reinforce,reinforce_optimal,disarm,rebar,relax,straight_through,gumbel_st"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--estimators", default=DEFAULT)
    p.add_argument("--cpu-ok", action="store_true")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not a.cpu_ok:
        raise SystemExit("no GPU found: pass --cpu-ok to run on the CPU anyway (slow), or fewer --steps")
    summaries = {}
    for name in a.estimators.split(","):
        cfg = VAEConfig(dataset="mnist", model="linear", estimator=name, steps=a.steps, batch_size=24, lr=1e-3,
                        device=device, out=os.path.join(a.out, f"vae_{name}"), log_every=1000,
                        checkpoint_every=50000, resume=os.path.exists(os.path.join(a.out, f"vae_{name}", "checkpoint.pt")))
        summaries[name] = train_vae(cfg)
    with open(os.path.join(a.out, "vae_full_summary.json"), "w") as fh:
        json.dump(summaries, fh, indent=1)
    print(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    main()
