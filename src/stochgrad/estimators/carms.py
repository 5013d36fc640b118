"""``carms``: CARMS, the Categorical-Antithetic-REINFORCE Multi-Sample estimator (Dimitriev & Zhou 2021).

Dimitriev & Zhou, NeurIPS 2021 (arXiv 2110.14002), official code alekdimi/carms (``vae.py``
``matrix_grad``, ``antithetic.py`` ``InverseCategorical``, ``copulas.py`` ``Dirichlet``), read to verify.

**Coupling** (paper §3, "CARMS-I"). Per unit, the ``S`` samples share one uniform from the Dirichlet
copula each (``d ~ Dir(1, …, 1)``, ``u_s = (1 − d_s)^{S−1}``: each ``u_s ~ U[0, 1)``, the set mutually
antithetic; the same copula as [`arms`][stochgrad.estimators.arms]) and one ordering ``π`` of the ``K`` classes ([`orderings`][stochgrad.estimators.carms.orderings]), drawn
uniformly from the official code's set: one pair of classes at the two ends, the others between in cyclic index
order from the last one on; ``K(K−1)/2`` orderings, every pair at the ends once. Of the two ends the less probable
comes first (the ordering read backwards otherwise), as ARMS puts the rarer value where the copula spreads the
samples. Class ``c`` is sample ``s`` iff ``u_s`` falls in ``c``'s interval ``[L_c(π), R_c(π))`` of the stacked
probabilities. Every sample is exactly ``Cat(softmax(a))``. The law of a pair of samples is known: with the
copula's bivariate CDF ``C(x, y) = max(x^{1/(S−1)} + y^{1/(S−1)} − 1, 0)^{S−1}``::

    q(c, c') = mean_π [C(R_c, R_c') − C(L_c, R_c') − C(R_c, L_c') + C(L_c, L_c')]

Which classes sit next to each other matters: with the middle classes in plain index order instead of cyclic
order, the variance was up to 1.7× higher (2 units × 10 classes, S = 2; ``benchmarks/carms_variance.py``).
``rotations=R`` adds ``R − 1`` more arrangements of the middle per pair (the ring started at evenly spread
places): lower variance at ``S = 2``, ``R`` times the pair-law cost.

**Estimator** (paper Eq. of Thm. 1; ``matrix_grad`` in the official code). Per unit, with the score
``s_i = e_{z_i} − p`` and the importance weight ``w(c, c') = p_c p_c' / q(c, c')``::

    ĝ = 1/(S(S−1)) Σ_{i≠j} w(z_i, z_j) (f(z_i) − f(z_j)) s_i

Unbiased: the units are coupled independently, so ``E[f(z_j) | z_i, z_j at this unit]`` is the unit's
marginal loss, and ``E[w(z_i, z_j) g(z_i, z_j)] = Σ_{c,c'} p_c p_c' g(c, c')`` wherever ``q(c, c') > 0``
(the sum over independent pairs, i.e. ``reinforce_loo``'s mean, which is the gradient); ``q > 0`` for
every pair of distinct classes because some ordering puts them at the two ends, where the copula
reaches them (and same-class pairs have mean zero: ``f(z_i) − f(z_j)`` then has mean zero). A constant
added to ``f`` cancels in ``f(z_i) − f(z_j)``. With independent samples ``w = 1`` and this is
``reinforce_loo``. K = 2 (one ordering): the weight of a pair of different classes is ARMS's factor
``p(1 − p)/(q − C(q, q))`` ([`arms`][stochgrad.estimators.arms], test); same-class pairs get ``p_c²/q(c, c)`` where ARMS keeps
that factor (both unbiased), so the two differ there.

**Differences from the official code**: no clipping of ``w`` to [0.01, 10] and no ``1e-3`` added to ``p p'``
and ``q`` (each biases it: 0.2–0.6 % of the gradient, measured exactly); the rarer end first instead of the lower
class index (the same at ``S = 2``; at ``S > 2`` ARMS's orientation, whose variance on Bernoulli units was 14–18 %
lower than a fixed one's). The code shares one ordering across a unit's ``S`` samples, as here (its pair law
assumes it). ``w`` can be large where ``q`` is small; that is the price of exactness. Probabilities, coupling and pair law are
computed in float64 (float32 on ``mps``): ``q`` is a sum of copula terms near 1, and for a pair of rare classes
(``q ≈ 5·10⁻⁹`` in a trained VAE's encoder) float32 cancels it to zero or below, which made ``w ≈ 10²⁸`` and diverged
the training; the samples are drawn from the same float64 intervals, so the pair law is that of the draw. Measured against the official
code's estimator (``benchmarks/carms_variance.py``, 200,000 estimates): variance 1.06× its (clipped, biased: max
|z| 4.3) figure at 2 units × 10 classes, ``S = 2``, and 1.00× at 3 × 4 (``S = 2``) and 3 × 5 (``S = 4``); with
``rotations=4``, 0.99×, 0.99× and 1.00×, at 2.1× (``S = 2``) and 3.4× (``S = 4``) the time per step of the default on
the 20 × 10 categorical VAE. Cost: ``S``
evaluations of ``f`` plus ``S²·R·K(K−1)/2`` copula terms per unit, so it is meant for moderate ``K``. Bernoulli
units: the K = 2 case.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..distributions import BERNOULLI, CATEGORICAL, as_categorical, one_hot, wide
from ..gradient import attach_gradient
from ..options import POSITIVE
from ..sampling import uniform
from .arms import dirichlet_copula
from .base import Estimator


def orderings(K: int, rotations: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """The orderings of ``K`` classes CARMS draws from: ``(a, b, r)``, each ``(P,)``, ``P = R·K(K−1)/2``.

    Ordering ``(a, b, r)`` puts class ``a`` first and ``b > a`` last, and the others between in cyclic index order
    starting at class ``r`` (skipping ``a`` and ``b``): every pair of classes at the two ends once, as the official
    code has them, with ``R = min(rotations, K − 2)`` (at least 1) starting points spread evenly around the ring of
    the other classes read from ``b + 1`` on (``R = 1``: the official code's ordering set, the ring from ``b + 1``).
    """
    a, b = torch.triu_indices(K, K, 1, device=device)
    R = max(1, min(rotations, K - 2))
    j = torch.arange(R, device=device) * max(K - 2, 1) // R                  # ring positions 0 ≤ j < K − 2
    # ring position j of pair (a, b): class b + 1 + j, moved one further on if a lies at or before it
    step = (a - b - 1) % K                                                 # a's distance after b + 1
    ring = (b.unsqueeze(-1) + 1 + j + (j.unsqueeze(0) >= step.unsqueeze(-1)).long()) % K   # (K(K−1)/2, R)
    return a.repeat_interleave(R), b.repeat_interleave(R), ring.flatten()


def lower_edges(p: Tensor, c: Tensor, a: Tensor, b: Tensor, r: Tensor) -> Tensor:
    """``L_c(π)``: the probability stacked below class ``c`` in each ordering ``π = (a, b, r)`` ([`orderings`][stochgrad.estimators.carms.orderings]).

    ``p`` ``(*batch, n, K)``; ``c`` class indices ``(..., *batch, n, 1)``; ``a``, ``b``, ``r`` ``(P,)`` →
    ``(..., *batch, n, P)``. A middle class ``c`` has ``a`` below it and the ring from ``r`` up to ``c``: the cyclic
    mass from ``r`` to ``c``, less ``a``'s and ``b``'s where they lie in that stretch (``a`` is then counted once).
    """
    K = p.shape[-1]
    cum = p.cumsum(-1) - p                                                 # Σ_{c' < c} p_c'
    wraps = c < r                                                          # the stretch r … c − 1 wraps past K − 1
    mass = cum.expand(*c.shape[:-1], K).gather(-1, c) - cum[..., r] + wraps.to(p.dtype)
    dist_c = c - r + K * wraps                                             # (c − r) mod K
    pa, pb = p[..., a], p[..., b]
    middle = mass + pa * ((a - r) % K >= dist_c) - pb * ((b - r) % K < dist_c)
    return torch.where(c == a, 0.0, torch.where(c == b, 1 - pb, middle)).clamp_(0, 1)


def pair_law(p: Tensor, z: Tensor, samples: int, rotations: int = 1, arrangements=None) -> tuple[Tensor, Tensor, Tensor]:
    """``q(z_i, z_j)`` for every two ``i < j`` of the ``S`` samples' classes ``z`` ``(S, *batch, n)``.

    Returns ``(i, j, q)``: the pairs' indices ``(M,)`` and their probabilities ``(M, *batch, n)``,
    ``M = S(S−1)/2`` (the copula is exchangeable, so ``q(c, c') = q(c', c)``). ``arrangements``: the
    [`orderings`][stochgrad.estimators.carms.orderings] of these ``K`` and ``rotations``, where the caller has them.
    """
    a, b, r = orderings(p.shape[-1], rotations, p.device) if arrangements is None else arrangements
    c = z.unsqueeze(-1)
    pc = p.expand(*c.shape[:-1], p.shape[-1]).gather(-1, c)
    lo = lower_edges(p, c, a, b, r)                                       # (S, *batch, n, P)
    lo = torch.where(p[..., a] > p[..., b], 1 - lo - pc, lo).clamp_(0, 1)   # reversed where a is the likelier end
    hi = (lo + pc).clamp_(0, 1)
    k = samples - 1
    if k > 1:   # the copula's CDF in the k-th roots (S = 2: the antithetic pair u, 1 − u, C(x, y) = max(x + y − 1, 0))
        lo, hi = lo.pow_(1.0 / k), hi.pow_(1.0 / k)
    i, j = torch.triu_indices(samples, samples, 1, device=p.device)

    def cdf(x, y):  # C(x_i, y_j) from the k-th roots, (M, *batch, n, P)
        out = (x[i] + y[j] - 1).clamp_min_(0)
        return out.pow_(k) if k > 1 else out

    return i, j, (cdf(hi, hi) - cdf(lo, hi) - cdf(hi, lo) + cdf(lo, lo)).mean(-1)


def carms_sample(p: Tensor, samples: int, generator=None, rotations: int = 1, arrangements=None) -> Tensor:
    """``S`` coupled class indices ``(S, *batch, n)`` for probabilities ``p`` ``(*batch, n, K)`` (module doc);
    ``arrangements`` as in [`pair_law`][stochgrad.estimators.carms.pair_law]."""
    K = p.shape[-1]
    u = dirichlet_copula(samples, p.shape[:-1], p, generator)            # (S, *batch, n)
    a, b, r = orderings(K, rotations, p.device) if arrangements is None else arrangements
    pick = (uniform(p.shape[:-1], p, generator) * a.numel()).long().clamp_max(a.numel() - 1)   # (*batch, n)
    a, b, r = a[pick].unsqueeze(-1), b[pick].unsqueeze(-1), r[pick].unsqueeze(-1)             # (*batch, n, 1)
    cls = torch.arange(K, device=p.device)
    # the order of this unit's classes: a, the ring from r (without a and b), b; by each class's sort key
    key = torch.where(cls == a, -1, torch.where(cls == b, K, (cls - r) % K))
    key = torch.where(p.gather(-1, a) > p.gather(-1, b), -key, key)     # the rarer end first
    order = key.argsort(-1)                                              # (*batch, n, K): class at position
    edges = p.gather(-1, order).cumsum(-1)[..., :-1]                      # upper edges of positions 0..K-2
    position = (edges.unsqueeze(0) <= u.unsqueeze(-1)).sum(-1, keepdim=True)
    return order.expand(samples, *order.shape).gather(-1, position).squeeze(-1)


class CARMS(Estimator):
    """``carms`` (Dimitriev & Zhou 2021): ``S`` samples coupled by the Dirichlet copula under a random
    ordering of the classes, leave-one-out differences importance-weighted by ``p p'/q`` (module
    docstring). Unbiased; ``samples >= 2``; invariant to a constant added to ``f``.

    Args:
        rotations: arrangements of the classes between the two ends per pair ([`orderings`][stochgrad.estimators.carms.orderings]); more lowers the
            variance at ``samples=2`` and costs proportionally in the pair law.
    """

    name = "carms"
    description = ("CARMS (Dimitriev & Zhou 2021): S Dirichlet-copula antithetic samples, pairwise "
                   "differences weighted by p p'/q(pair); samples >= 2")
    unbiased = True
    min_samples = 2
    distributions = ("bernoulli", "categorical")

    def __init__(self, rotations: int = 1):
        super().__init__()
        self.rotations = POSITIVE.check(rotations, "rotations")
        self.arrangements = {}   # (K, device) → the orderings' index tensors: constants, built once (not state)

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        if dist is BERNOULLI:
            f, logits = as_categorical(f, logits)
        # probabilities, coupling and pair law in float64: q is a sum of copula terms near 1 whose difference can be
        # ~1e-9 for a pair of rare classes, which float32 cancels to 0 or below (then w ~ 1e28: a VAE diverged so)
        wide_p = CATEGORICAL.probs(logits.detach().to(wide(logits.device)))   # (*batch, n, K)
        key = (wide_p.shape[-1], wide_p.device)
        arrangements = self.arrangements.get(key)
        if arrangements is None:
            arrangements = self.arrangements[key] = orderings(wide_p.shape[-1], self.rotations, wide_p.device)
        z = carms_sample(wide_p, samples, generator, self.rotations, arrangements)   # (S, *batch, n)
        S = samples
        p = wide_p.to(logits.dtype)
        h = one_hot(z, p.shape[-1], p)
        losses = f(h)                                                     # (S, *batch)
        pz = wide_p.expand(S, *wide_p.shape).gather(-1, z.unsqueeze(-1)).squeeze(-1)   # p_{z_s}: (S, *batch, n)
        i, j, q = pair_law(wide_p, z, S, self.rotations, arrangements)    # q > 0 for every pair that can occur
        w = (pz[i] * pz[j] / q.clamp_min(torch.finfo(q.dtype).tiny)).to(p.dtype)   # (M, *batch, n)
        L = losses.detach().unsqueeze(-1)                                 # (S, *batch, 1)
        wd = w * (L[i] - L[j])                                            # w_ij (f_i − f_j), pairs i < j
        signal = wd.new_zeros(pz.shape).index_add_(0, i, wd).index_add_(0, j, -wd)   # Σ_{j≠i} w_ij (f_i − f_j)
        grad = (signal.unsqueeze(-1) * (h - p)).sum(0) / (S * (S - 1))
        return attach_gradient(losses.mean(0), logits, grad, dist.masks)

    def extra_repr(self) -> str:
        return f"rotations={self.rotations}"
