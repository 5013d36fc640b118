"""CARMS's variance against the official code's estimator, on small categorical problems with exact gradients.

The official code (alekdimi/carms: ``antithetic.py`` ``InverseCategorical``, ``vae.py`` ``matrix_grad``) draws, per
unit, one of the ``K(K−1)/2`` orderings with the lower class index first, the higher last and the others between in
cyclic order from the last one on, shared by the unit's ``S`` samples, and weights each pair by
``clip((p p' + 1e-3)/(q + 1e-3), 0.01, 10)``. It is written out here from that description (``official``), with the
same Dirichlet copula as the library's; ``official_unclipped`` is the same without the clip and the ``1e-3``
(unbiased). ``carms`` is the library's estimator (``rotations=1``, the default: the official ordering set with the
rarer end first; ``carms_rotations_4``: four arrangements of the classes between the ends). For each: the total variance of one estimate (sum over
coordinates) with its standard error, and the largest |z| of the mean against the exact gradient.

    PYTHONPATH=$PWD/src nice -n 10 python benchmarks/carms_variance.py --record cpu-2core
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import stochgrad as sg
from stochgrad import problems
from stochgrad.checks import sample_gradients
from stochgrad.distributions import CATEGORICAL, one_hot
from stochgrad.estimators.arms import dirichlet_copula
from stochgrad.exact import exact_gradient
from stochgrad.sampling import uniform

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402  (benchmarks/record.py)

SETTINGS = {  # name: (problem, samples)
    "decoder 2x10, S=2": (lambda: problems.categorical_decoder(n=2, K=10, d=3, C=5), 2),
    "nonseparable 3x4, S=2": (problems.categorical_nonseparable, 2),
    "decoder 3x5, S=4": (lambda: problems.categorical_decoder(n=3, K=5), 4),
}


def official_orders(K: int) -> torch.Tensor:
    """``(K(K−1)/2, K)``: first ``a < b`` last, the others cyclic from ``b + 1``."""
    rows = []
    for a in range(K):
        for b in range(a + 1, K):
            ring = [(b + 1 + m) % K for m in range(K - 1)]
            rows.append([a, *[c for c in ring if c not in (a, b)], b])
    return torch.tensor(rows)


def official(f, logits, S, gen, clip=True):
    """One estimate per example of the official code's CARMS (module docstring); logits ``(B, n, K)``."""
    p = CATEGORICAL.probs(logits)
    O = official_orders(p.shape[-1])
    P, K = O.shape
    u = dirichlet_copula(S, p.shape[:-1], p, gen)                                  # (S, B, n)
    order = O[(uniform(p.shape[:-1], p, gen) * P).long().clamp_max(P - 1)]       # (B, n, K), shared by the samples
    edges = p.gather(-1, order).cumsum(-1)[..., :-1]
    z = order.expand(S, *order.shape).gather(-1, (edges <= u.unsqueeze(-1)).sum(-1, keepdim=True)).squeeze(-1)
    h = one_hot(z, K, p)
    L = f(h)
    stacked = p.unsqueeze(-2).expand(*p.shape[:-1], P, K).gather(-1, O.expand(*p.shape[:-1], P, K))
    below = (stacked.cumsum(-1) - stacked).gather(-1, O.argsort(-1).expand(*p.shape[:-1], P, K))   # (B, n, P, K)
    lo = below.unsqueeze(0).expand(S, *below.shape).gather(-1, z[..., None, None].expand(*z.shape, P, 1)).squeeze(-1)
    pz = h.mul(p).sum(-1)
    hi = (lo + pz.unsqueeze(-1)).clamp(0, 1)
    k = S - 1
    lo, hi = lo.clamp(0, 1).pow(1 / k), hi.pow(1 / k)
    i, j = torch.triu_indices(S, S, 1)
    cdf = lambda x, y: (x[i] + y[j] - 1).clamp_min(0).pow(k)   # noqa: E731
    q = (cdf(hi, hi) - cdf(lo, hi) - cdf(hi, lo) + cdf(lo, lo)).mean(-1)
    w = ((pz[i] * pz[j] + 1e-3) / (q + 1e-3)).clamp(0.01, 10) if clip else pz[i] * pz[j] / q.clamp_min(1e-300)
    wd = w * (L.unsqueeze(-1)[i] - L.unsqueeze(-1)[j])
    signal = torch.zeros_like(pz).index_add_(0, i, wd).index_add_(0, j, -wd)
    return (signal.unsqueeze(-1) * (h - p)).sum(0) / (S * (S - 1))


def summary(G: torch.Tensor, exact: torch.Tensor) -> dict:
    sq = (G - G.mean(0)).square().flatten(1).sum(-1)
    z = (G.mean(0) - exact).abs() / (G.var(0) / len(G)).sqrt().clamp_min(1e-30)
    return {"variance": sq.mean().item(), "variance_se": (sq.std() / len(sq) ** 0.5).item(),
            "max_abs_z": z.max().item(), "relative_bias": ((G.mean(0) - exact).norm() / exact.norm()).item()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--estimates", type=int, default=200000)
    p.add_argument("--batch", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record", metavar="MACHINE")
    a = p.parse_args()
    torch.set_num_threads(1)
    runs = {}
    for name, (make, S) in SETTINGS.items():
        prob = make()
        exact = exact_gradient(prob.f, prob.logits, "categorical")[1]
        row = {}
        for label, clip in (("official", True), ("official_unclipped", False)):
            gen = torch.Generator().manual_seed(a.seed)
            G = torch.cat([official(prob.f, prob.logits.expand(a.batch, *prob.logits.shape), S, gen, clip)
                           for _ in range(a.estimates // a.batch)])
            row[label] = summary(G, exact)
        for label, rotations in (("carms", 1), ("carms_rotations_4", 4)):
            G = sample_gradients(sg.get_estimator("carms", rotations=rotations), prob.f, prob.logits, a.estimates,
                                 a.batch, S, torch.Generator().manual_seed(a.seed), distribution="categorical")
            row[label] = summary(G, exact)
        runs[name] = row
        print(name, {k: f"{v['variance']:.4g} ± {v['variance_se']:.2g} (|z| {v['max_abs_z']:.1f})" for k, v in row.items()},
              flush=True)
    if a.record:
        note = (f"{a.estimates} estimates per estimator and setting; variance = mean over estimates of ‖g − ḡ‖² with "
                "its standard error; max_abs_z of the mean against the exact gradient.")
        print(save("carms_variance", a.record, runs, "python benchmarks/carms_variance.py " + " ".join(sys.argv[1:]), note))


if __name__ == "__main__":
    main()
