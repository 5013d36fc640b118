"""``carms``: CARMS, the Categorical-Antithetic-REINFORCE Multi-Sample estimator (Dimitriev & Zhou 2021).

Dimitriev & Zhou, NeurIPS 2021 (arXiv 2110.14002), official code alekdimi/carms (``vae.py``
``matrix_grad``, ``antithetic.py`` ``InverseCategorical``, ``copulas.py`` ``Dirichlet``), read to verify.

**Coupling** (paper §3, "CARMS-I"). Per unit, the ``S`` samples share one uniform from the Dirichlet
copula each (``d ~ Dir(1, …, 1)``, ``u_s = (1 − d_s)^{S−1}``: each ``u_s ~ U[0, 1)``, the set mutually
antithetic; the same copula as [`arms`][stochgrad.estimators.arms]) and one ordering ``π`` of the ``K`` classes, drawn
uniformly from the ``K(K−1)/2`` orderings that put one pair of classes at the two ends (the less
probable first, as ARMS puts the rarer value where the copula spreads the samples; the others between
in index order); class ``c`` is sample ``s`` iff ``u_s``
falls in ``c``'s interval ``[L_c(π), R_c(π))`` of the stacked probabilities. Every sample is exactly
``Cat(softmax(a))``. The law of a pair of samples is known: with the copula's bivariate CDF
``C(x, y) = max(x^{1/(S−1)} + y^{1/(S−1)} − 1, 0)^{S−1}``::

    q(c, c') = mean_π [C(R_c, R_c') − C(L_c, R_c') − C(R_c, L_c') + C(L_c, L_c')]

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

**Differences from the official code** (each would bias it): no clipping of ``w`` to [0.01, 10] and
no ``1e-3`` added to ``p p'`` and ``q``; one ordering per unit shared by its ``S`` samples (the code
draws one per sample while its pair law assumes a shared one). ``w`` can be large where ``q`` is
small; that is the price of exactness. Cost: ``S`` evaluations of ``f`` plus ``O(S² K²)`` copula terms
per unit (every ordering), so it is meant for moderate ``K``. Bernoulli units: the K = 2 case.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..distributions import BERNOULLI, CATEGORICAL, as_categorical, one_hot
from ..gradient import attach_gradient
from ..sampling import uniform
from .arms import dirichlet_copula
from .base import Estimator


def end_pairs(K: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """The ``P = K(K−1)/2`` orderings: ``a``, ``b`` ``(P,)`` (``a < b``, first and last) and ``order``
    ``(P, K)``, the class at each position (``a``, the others in index order, ``b``).
    """
    a, b = torch.triu_indices(K, K, 1, device=device)
    m = torch.arange(K - 2, device=device)
    middle = m + (m >= a.unsqueeze(-1)).long() + (m >= b.unsqueeze(-1) - 1).long()   # {0..K-1} \ {a, b}, sorted
    return a, b, torch.cat([a.unsqueeze(-1), middle, b.unsqueeze(-1)], -1)


def ends(p: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The first and last class of each ordering ``(a, b)`` for probabilities ``p`` ``(*batch, n, K)``: the
    less probable of the two goes first (where the copula spreads the samples, as ARMS does): ``(*batch, n, P)`` each.
    """
    swap = p[..., a] > p[..., b]
    return torch.where(swap, b, a), torch.where(swap, a, b)


def lower_edges(p: Tensor, c: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``L_c(π)``: the probability stacked below class ``c`` in ordering ``π = (a, b)``.

    ``p`` ``(*batch, n, K)``; ``c`` class indices ``(..., *batch, n, 1)``; ``a``, ``b`` ``(P,)`` →
    ``(..., *batch, n, P)``. [`ends`][stochgrad.estimators.carms.ends] are first and last, the others between in index order.
    """
    first, last = ends(p, a, b)
    pa, pb = p[..., a], p[..., b]                                         # (*batch, n, P)
    below = (p.cumsum(-1) - p).expand(*c.shape[:-1], p.shape[-1]).gather(-1, c)     # Σ_{c' < c} p_c'
    middle = p.gather(-1, first) + below - (a < c).to(p.dtype) * pa - (b < c).to(p.dtype) * pb
    return torch.where(c == first, torch.zeros_like(middle),
                       torch.where(c == last, 1 - p.gather(-1, last), middle)).clamp(0, 1)


def pair_law(p: Tensor, z: Tensor, samples: int) -> tuple[Tensor, Tensor, Tensor]:
    """``q(z_i, z_j)`` for every two ``i < j`` of the ``S`` samples' classes ``z`` ``(S, *batch, n)``.

    Returns ``(i, j, q)``: the pairs' indices ``(M,)`` and their probabilities ``(M, *batch, n)``,
    ``M = S(S−1)/2`` (the copula is exchangeable, so ``q(c, c') = q(c', c)``).
    """
    a, b, _ = end_pairs(p.shape[-1], p.device)
    c = z.unsqueeze(-1)
    lo = lower_edges(p, c, a, b)                                          # (S, *batch, n, P)
    hi = (lo + p.expand(*c.shape[:-1], p.shape[-1]).gather(-1, c)).clamp(0, 1)
    k = samples - 1
    lo, hi = lo.pow(1.0 / k), hi.pow(1.0 / k)
    i, j = torch.triu_indices(samples, samples, 1, device=p.device)

    def cdf(x, y):  # C(x_i, y_j) from the k-th roots, (M, *batch, n, P)
        return (x[i] + y[j] - 1).clamp_min(0).pow(k)

    return i, j, (cdf(hi, hi) - cdf(lo, hi) - cdf(hi, lo) + cdf(lo, lo)).mean(-1)


def carms_sample(p: Tensor, samples: int, generator=None) -> Tensor:
    """``S`` coupled class indices ``(S, *batch, n)`` for probabilities ``p`` ``(*batch, n, K)`` (module doc)."""
    K = p.shape[-1]
    u = dirichlet_copula(samples, p.shape[:-1], p, generator)            # (S, *batch, n)
    a, b, orders = end_pairs(K, p.device)
    pick = (uniform(p.shape[:-1], p, generator) * a.numel()).long().clamp_max(a.numel() - 1)   # (*batch, n)
    first, last = (e.gather(-1, pick.unsqueeze(-1)) for e in ends(p, a, b))
    order = torch.cat([first, orders[pick][..., 1:-1], last], -1)        # (*batch, n, K): class at position r
    edges = p.gather(-1, order).cumsum(-1)[..., :-1]                      # upper edges of positions 0..K-2
    position = (edges.unsqueeze(0) <= u.unsqueeze(-1)).sum(-1, keepdim=True)
    return order.expand(samples, *order.shape).gather(-1, position).squeeze(-1)


class CARMS(Estimator):
    """``carms`` (Dimitriev & Zhou 2021): ``S`` samples coupled by the Dirichlet copula under a random
    ordering of the classes, leave-one-out differences importance-weighted by ``p p'/q`` (module
    docstring). Unbiased; ``samples >= 2``; invariant to a constant added to ``f``.
    """

    name = "carms"
    description = ("CARMS (Dimitriev & Zhou 2021): S Dirichlet-copula antithetic samples, pairwise "
                   "differences weighted by p p'/q(pair); samples >= 2")
    unbiased = True
    min_samples = 2
    distributions = ("bernoulli", "categorical")

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        if dist is BERNOULLI:
            f, logits = as_categorical(f, logits)
        p = CATEGORICAL.probs(logits.detach())                            # (*batch, n, K)
        z = carms_sample(p, samples, generator)                           # (S, *batch, n)
        h = one_hot(z, p.shape[-1], p)
        losses = f(h)                                                     # (S, *batch)
        S = samples
        pz = h.mul(p).sum(-1)                                             # p_{z_s}: (S, *batch, n)
        i, j, q = pair_law(p, z, S)                                       # q > 0 for every pair that can occur
        w = pz[i] * pz[j] / q.clamp_min(torch.finfo(p.dtype).tiny)       # (M, *batch, n)
        L = losses.detach().unsqueeze(-1)                                 # (S, *batch, 1)
        wd = w * (L[i] - L[j])                                            # w_ij (f_i − f_j), pairs i < j
        signal = torch.zeros_like(pz).index_add_(0, i, wd).index_add_(0, j, -wd)   # Σ_{j≠i} w_ij (f_i − f_j)
        grad = (signal.unsqueeze(-1) * (h - p)).sum(0) / (S * (S - 1))
        return attach_gradient(losses.mean(0), logits, grad)
