"""Cost of a categorical gradient estimate through stochgrad against hand-written plain torch (issue 10),
as same-round ratios (a shared machine: never absolute claims).

Method: ``benchmarks/overhead.py``'s own functions (``python benchmarks/overhead.py --categorical`` runs
this table after its own): candidates timed in rounds, a freshly shuffled order within each
round, each for a block of calls, in process CPU time (CUDA: wall time, synchronised per block); the
ratio is taken within each round and the table gives the median of the rounds' ratios [quartiles]. A
control row times the plain reinforce against itself.

Logits ``(batch, n, K)``; ``f(h) = Σ_i (w·h_i − 0.45)²`` with ``w = linspace(0, 1, K)``, so the estimator's
own work dominates. Run: ``python benchmarks/overhead_categorical.py [--quick] [--device cuda]``.
"""
from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

import stochgrad as sg

SIZES = [(10, 10, 1), (20, 10, 100), (30, 10, 1024), (100, 64, 64)]   # (n units, K classes, batch)
CORE = ["reinforce", "reinforce_optimal", "reinforce_loo", "straight_through", "gumbel_st", "reinmax"]


def f(h):
    w = torch.linspace(0, 1, h.shape[-1], dtype=h.dtype, device=h.device)
    return ((h * w).sum(-1) - 0.45).square().sum(-1)


# ---- hand-written references ----------------------------------------------------------------------------
def _sample(p, gen, lead=()):
    """One uniform per unit through the inverse CDF, as a careful user writes it."""
    u = torch.rand((*lead, *p.shape[:-1]), generator=gen, dtype=p.dtype, device=p.device)
    idx = (p.cumsum(-1)[..., :-1] < (1 - u).unsqueeze(-1)).sum(-1)
    return F.one_hot(idx, p.shape[-1]).to(p.dtype)


def _attach(value, a, g):
    s = (g * a).sum((-2, -1))
    (value + s - s.detach()).sum().backward()


def plain_reinforce(a, gen, baseline=None):
    p = torch.softmax(a.detach(), -1)
    h = _sample(p, gen)
    L = f(h)
    score = h - p
    c = 0.0 if baseline is None else baseline(score, L)
    _attach(L, a, score * (L[..., None, None] - c))


class PlainOptimal:
    """Eq. 7 per unit and class, from moving numerator and denominator."""

    def __init__(self):
        self.num = self.den = None

    def __call__(self, score, L):
        w = score.square()
        if self.num is None:
            self.num = torch.zeros(score.shape[-2:], dtype=score.dtype, device=score.device)
            self.den = torch.zeros_like(self.num)
        c = torch.where(self.den > 0, self.num / self.den.clamp_min(1e-30), 0.0)
        self.num.mul_(0.9).add_(0.1 * (w * L[..., None, None]).reshape(-1, *w.shape[-2:]).mean(0))
        self.den.mul_(0.9).add_(0.1 * w.reshape(-1, *w.shape[-2:]).mean(0))
        return c


def plain_loo(a, gen, S=2):
    p = torch.softmax(a.detach(), -1)
    h = _sample(p, gen, (S,))
    L = f(h)
    c = (L.sum(0, keepdim=True) - L) / (S - 1)
    _attach(L.mean(0), a, ((h - p) * (L - c)[..., None, None]).mean(0))


def plain_straight_through(a, gen):
    p = torch.softmax(a, -1)
    h = _sample(p.detach(), gen)
    f(h + p - p.detach()).sum().backward()


def plain_gumbel_st(a, gen, tau=0.5):
    u = torch.rand(a.shape, generator=gen, dtype=a.dtype, device=a.device).clamp_min(torch.finfo(a.dtype).tiny)
    z = a - torch.log(-torch.log(u))
    soft = torch.softmax(z / tau, -1)
    hard = F.one_hot(z.argmax(-1), a.shape[-1]).to(a.dtype)
    f(hard + soft - soft.detach()).sum().backward()


def plain_reinmax(a, gen, tau=1.0):
    p0 = torch.softmax(a.detach(), -1)
    h = _sample(p0, gen)
    p1 = 0.5 * (h + torch.softmax(a.detach() / tau, -1))
    p1 = torch.softmax(a + (p1.log() - a).detach(), -1)        # Liu et al. 2023, Alg. 2
    p2 = 2 * p1 - 0.5 * torch.softmax(a, -1)
    f(h + p2 - p2.detach()).sum().backward()


def reference(name, gen):
    if name == "reinforce_optimal":
        state = PlainOptimal()
        return lambda a: plain_reinforce(a, gen, state)
    plain = {"reinforce": plain_reinforce, "reinforce_loo": plain_loo, "straight_through": plain_straight_through,
             "gumbel_st": plain_gumbel_st, "reinmax": plain_reinmax}[name]
    return lambda a: plain(a, gen)


def ours(name, gen):
    est = sg.get_estimator(name).to(gen.device)
    samples = max(1, est.min_samples)
    return lambda a: sg.expect(f, a, est, samples, gen, distribution="categorical").sum().backward()


# ---- the method: benchmarks/overhead.py's ------------------------------------------------------------------
from overhead import cell, clock, ratio, rounds  # noqa: E402  (beside this file)


def run(quick: bool, device: torch.device, n_rounds: int) -> dict:
    torch.manual_seed(0)
    rng, now = random.Random(0), clock(device)
    gen = torch.Generator(device=device).manual_seed(0)
    header = "| " + " | ".join(f"n={n}, K={K}, b={B}" for n, K, B in SIZES) + " |"
    print(f"# categorical overhead ({device}, {torch.get_num_threads()} thread(s), {n_rounds} rounds)\n")
    print("stochgrad / hand-written plain torch, median [quartiles] of within-round ratios\n")
    print("| estimator " + header)
    print("|---|" + "---|" * len(SIZES))
    table = {name: [] for name in ["control: plain reinforce / itself", *CORE]}
    for n, K, B in SIZES:
        a = torch.randn(B, n, K, device=device, requires_grad=True)
        cands = {"plain reinforce": reference("reinforce", gen), "plain reinforce (again)": reference("reinforce", gen)}
        for name in CORE:
            cands[name], cands["plain " + name] = ours(name, gen), reference(name, gen)
        big = n * K * B >= 100000
        reps = (3 if big else 20) if quick else (10 if big else 100)
        times = rounds(cands, a, reps, n_rounds, now, rng)
        table["control: plain reinforce / itself"].append(ratio(times, "plain reinforce (again)", "plain reinforce"))
        for name in CORE:
            table[name].append(ratio(times, name, "plain " + name))
    for name, cells in table.items():
        print(f"| {name} | " + " | ".join(cell(c) for c in cells) + " |")
    return {name: {f"n={n},K={K},b={B}": c for (n, K, B), c in zip(SIZES, cells)} for name, cells in table.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 5 quick, 9 full)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run(args.quick, torch.device(args.device), args.rounds or (5 if args.quick else 9))
