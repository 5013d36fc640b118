"""Steps per second of the linear VAE training step (784-200-784, batch 50) for each estimator, relative
to ``reinforce``, measured in the same process and interleaved. Synthetic binary data: only speed.

Run: ``python benchmarks/vae_speed.py [--device cuda]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import stochgrad as sg
from stochgrad.studies.vae import BernoulliVAE

NAMES = ["reinforce", "reinforce_ma", "reinforce_optimal", "reinforce_loo", "learned", "straight_through",
         "straight_through_sigmoid", "gumbel", "gumbel_st", "arm", "disarm", "rebar", "relax", "spsa",
         "node_perturbation"]


def main(device: str, reps: int, rounds: int):
    torch.manual_seed(0)
    x = (torch.rand(50, 784, device=device) < 0.2).float()
    models = {n: BernoulliVAE(784, 200, "linear").to(device) for n in NAMES}
    opts = {n: torch.optim.Adam(m.parameters(), 1e-3) for n, m in models.items()}
    ests = {n: sg.get_estimator(n).to(device) for n in NAMES}
    gen = torch.Generator(device=device).manual_seed(0)

    def step(n):
        opts[n].zero_grad()
        models[n](x, ests[n], 2 if n == "reinforce_loo" else 1, gen).mean().backward()
        opts[n].step()

    def timed(n):
        for _ in range(3):
            step(n)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            step(n)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / reps

    res = {n: [] for n in NAMES}
    for r in range(rounds):   # rotate the order each round: no estimator is always timed first
        for n in NAMES[r % len(NAMES):] + NAMES[:r % len(NAMES)]:
            res[n].append(timed(n))
    base = statistics.median(res["reinforce"])
    print(f"device {device}; steps/s relative to reinforce ({1 / base:.0f} steps/s here)")
    print("| estimator | f evals | steps/s ÷ reinforce's |\n|---|---|---|")
    for n in NAMES:
        print(f"| {n} | {sg.estimators()[n].cost} | {base / statistics.median(res[n]):.2f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    main(a.device, a.reps, a.rounds)
