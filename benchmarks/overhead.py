"""Time per gradient estimate of every estimator, as ratios (noisy shared machine: never absolute claims).

1. Core estimators against a hand-written plain-torch version of the same formula, run in the same
   process, interleaved: ratio = stochgrad time / plain time (target <= 1.2).
2. Every estimator relative to ``reinforce`` (same f, same shapes).

f is the separable quadratic ``Σ (b − 0.45)²`` so that the estimator's own work dominates.
Run: ``python benchmarks/overhead.py [--quick]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import stochgrad as sg


def f(b):
    return (b - 0.45).square().sum(-1)


# ---- hand-written references: what a careful user would write without the library ----------------
def plain_reinforce(a, gen, baseline=None):
    p = torch.sigmoid(a.detach())
    h = (torch.rand(p.shape, generator=gen, dtype=a.dtype) < p).to(a.dtype)
    L = f(h)
    score = h - p
    c = 0.0 if baseline is None else baseline(score, L)
    g = score * (L.unsqueeze(-1) - c)
    surrogate = (g * a).sum(-1)
    (L + surrogate - surrogate.detach()).sum().backward()


class PlainMA:
    def __init__(self):
        self.mean, self.weight = 0.0, 0.0

    def __call__(self, score, L):
        c = self.mean / self.weight if self.weight else 0.0
        self.mean = 0.9 * self.mean + 0.1 * L.mean()
        self.weight = 0.9 * self.weight + 0.1
        return c


class PlainOptimal:
    def __init__(self):
        self.num = self.den = None

    def __call__(self, score, L):
        w = score.square()
        if self.num is None:
            self.num = self.den = torch.zeros(score.shape[-1], dtype=score.dtype)
        c = torch.where(self.den > 0, self.num / self.den.clamp_min(1e-300), 0.0)
        self.num = 0.9 * self.num + 0.1 * (w * L.unsqueeze(-1)).reshape(-1, w.shape[-1]).mean(0)
        self.den = 0.9 * self.den + 0.1 * w.reshape(-1, w.shape[-1]).mean(0)
        return c


def plain_loo(a, gen, S=2):
    p = torch.sigmoid(a.detach())
    h = (torch.rand((S, *p.shape), generator=gen, dtype=a.dtype) < p).to(a.dtype)
    L = f(h)
    c = (L.sum(0, keepdim=True) - L) / (S - 1)
    g = ((h - p) * (L - c).unsqueeze(-1)).mean(0)
    surrogate = (g * a).sum(-1)
    (L.mean(0) + surrogate - surrogate.detach()).sum().backward()


def plain_straight_through(a, gen, sigmoid=False):
    p = torch.sigmoid(a.detach())
    h = (torch.rand(p.shape, generator=gen, dtype=a.dtype) < p).to(a.dtype)
    r = torch.sigmoid(a) if sigmoid else a
    f(h + r - r.detach()).sum().backward()


def plain_exact(a, gen):
    n = a.shape[-1]
    states = ((torch.arange(2 ** n).unsqueeze(-1) >> torch.arange(n - 1, -1, -1)) & 1).to(a.dtype)
    states = states.reshape(2 ** n, *([1] * (a.dim() - 1)), n)
    logp = (states * torch.nn.functional.logsigmoid(a) + (1 - states) * torch.nn.functional.logsigmoid(-a)).sum(-1)
    (logp.exp() * f(states)).sum(0).sum().backward()


PLAIN = {
    "exact": plain_exact,
    "straight_through": plain_straight_through,
    "straight_through_sigmoid": lambda a, g: plain_straight_through(a, g, sigmoid=True),
    "reinforce": plain_reinforce,
    "reinforce_ma": None,  # stateful: built per run below
    "reinforce_optimal": None,
    "reinforce_loo": plain_loo,
}


def timed(fn, a, repeats):
    """Median seconds per call over blocks of calls."""
    blocks = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(repeats):
            a.grad = None
            fn(a)
        blocks.append((time.perf_counter() - t) / repeats)
    return statistics.median(blocks)


def run(quick: bool):
    torch.manual_seed(0)
    sizes = [(10, 1), (10, 1024), (1000, 1), (1000, 1024)]
    gen = torch.Generator().manual_seed(0)
    print("## stochgrad vs hand-written plain torch (ratio = stochgrad / plain; target <= 1.2)\n")
    print("| estimator | " + " | ".join(f"D={D}, batch={B}" for D, B in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    worst = 0.0
    for name, plain in PLAIN.items():
        cells = []
        for D, B in sizes:
            if name == "exact" and D > 10:
                cells.append("n/a")
                continue
            a = torch.randn(B, D, requires_grad=True)
            reps = 20 if quick else (100 if D * B < 100000 else 20)
            if name == "exact":
                reps = max(2, reps // 10)
            est = sg.get_estimator(name)
            samples = 2 if name == "reinforce_loo" else 1
            ours = lambda x: est(f, x, samples, gen).sum().backward()  # noqa: E731
            if plain is None:
                state = PlainMA() if name == "reinforce_ma" else PlainOptimal()
                ref = lambda x, s=state: plain_reinforce(x, gen, s)  # noqa: E731
            else:
                ref = lambda x, p=plain: p(x, gen)  # noqa: E731
            ours(a), ref(a)  # warm up
            t_ours, t_ref = [], []
            for _ in range(3 if quick else 4):  # interleave to share the machine's noise
                t_ours.append(timed(ours, a, reps))
                t_ref.append(timed(ref, a, reps))
            ratio = min(t_ours) / min(t_ref)
            worst = max(worst, ratio)
            cells.append(f"{ratio:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nworst ratio: {worst:.2f}\n")

    print("## every estimator, time per estimate relative to reinforce (samples=1; loo 2)\n")
    print("| estimator | f evals | " + " | ".join(f"D={D}, batch={B}" for D, B in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for name, info in sg.estimators().items():
        cells = []
        for D, B in sizes:
            if name == "exact" and D > 10 or name == "finite_difference" and D * D * B > 2e6:
                cells.append("n/a")
                continue
            a = torch.randn(B, D, requires_grad=True)
            reps = 10 if quick else 50
            est, base = sg.get_estimator(name), sg.get_estimator("reinforce")
            s = max(1, est.min_samples)
            ours = lambda x: est(f, x, s, gen).sum().backward()  # noqa: E731
            ref = lambda x: base(f, x, 1, gen).sum().backward()  # noqa: E731
            ours(a), ref(a)
            cells.append(f"{min(timed(ours, a, reps) for _ in range(2)) / min(timed(ref, a, reps) for _ in range(2)):.2f}")
        print(f"| {name} | {info.cost} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args().quick)
