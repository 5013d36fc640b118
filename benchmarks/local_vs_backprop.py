"""One training step of a 784-200-200-10 stochastic network (batch 100): broadcast-only local learning
(reinforce_optimal layers, ``broadcast(local=True)``) against the same step with back-propagation
(straight-through layers, ``loss.backward()``). Prints time ratios measured in the same process,
interleaved (the machine is shared: only ratios mean anything). Target: local <= 0.7 x backprop.

Run: ``python benchmarks/local_vs_backprop.py [--rounds N]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import stochgrad as sg


def net(estimator):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 200), sg.StochasticBinary(estimator), nn.Linear(200, 200),
                         sg.StochasticBinary(estimator), nn.Linear(200, 10))


def main(rounds: int, reps: int):
    x, y = torch.rand(100, 784), torch.randint(0, 10, (100,))
    local, backprop = net("reinforce_optimal"), net("straight_through")
    opt_l = torch.optim.SGD(local.parameters(), lr=0.01)
    opt_b = torch.optim.SGD(backprop.parameters(), lr=0.01)

    def step_local():
        opt_l.zero_grad()
        with sg.broadcast(local=True) as graph:
            loss = nn.functional.cross_entropy(local(x), y, reduction="none")
        graph.backward(loss)
        opt_l.step()

    def step_backprop():
        opt_b.zero_grad()
        nn.functional.cross_entropy(backprop(x), y).backward()
        opt_b.step()

    # the same local step written by hand in plain torch: what the method costs without the library
    W = [p for p in local.parameters()]
    num = [torch.zeros(200), torch.zeros(200)]
    den = [torch.zeros(200), torch.zeros(200)]
    opt_p = torch.optim.SGD(W, lr=0.01)

    def step_plain_local():
        opt_p.zero_grad()
        h, hs = x, []
        for k in range(2):
            a = nn.functional.linear(h, W[2 * k], W[2 * k + 1])
            p = torch.sigmoid(a.detach())
            h = (torch.rand(p.shape) < p).float()
            hs.append((a, h - p))
        out = nn.functional.linear(h, W[4], W[5])
        loss = nn.functional.cross_entropy(out, y, reduction="none")
        roots, grads = [loss.mean()], [None]
        L = loss.detach().unsqueeze(-1)
        for k, (a, score) in enumerate(hs):
            c = torch.where(den[k] > 0, num[k] / den[k].clamp_min(1e-30), 0.0)
            roots.append(a)
            grads.append(score * (L - c) / 100)
            w = score.square()
            num[k] = 0.9 * num[k] + 0.1 * (w * L).mean(0)
            den[k] = 0.9 * den[k] + 0.1 * w.mean(0)
        torch.autograd.backward(roots, grads)
        opt_p.step()

    def forward_only():
        with torch.no_grad():
            backprop(x)

    def timed(fn):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps

    fns = {"local": step_local, "backprop": step_backprop, "plain_local": step_plain_local, "forward": forward_only}
    for fn in fns.values():
        timed(fn)
    res = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            res[k].append(timed(fn))
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"threads: {torch.get_num_threads()}, {rounds} rounds x {reps} steps, medians")
    print(f"local step / backprop step  = {med['local'] / med['backprop']:.2f}  (target <= 0.7)")
    print(f"plain-torch local step / backprop step = {med['plain_local'] / med['backprop']:.2f}  (the method without the library)")
    print(f"stochgrad local / plain-torch local = {med['local'] / med['plain_local']:.2f}  (the library's overhead)")
    print(f"forward only / backprop step = {med['forward'] / med['backprop']:.2f}  (the floor of any method)")
    print(f"per-round ratios: {[round(a / b, 2) for a, b in zip(res['local'], res['backprop'])]}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=50)
    a = p.parse_args()
    main(a.rounds, a.reps)
