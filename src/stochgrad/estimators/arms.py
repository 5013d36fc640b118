"""ARMS (Dimitriev & Zhou 2021): ``K`` mutually antithetic samples from a Dirichlet copula. Unbiased.

Each unit draws its ``K`` uniforms jointly: ``d ~ Dirichlet(1, …, 1)`` over the samples and
``u_k = (1 − d_k)^{K−1}``, each ``U[0, 1]`` and negatively correlated with the others (ARMS, the
Dirichlet copula; checked against the official code, alekdimi/arms ``toy_problem.py``). Units with
``σ(a) < ½`` fire when ``u_k < σ(a)``, the others when ``1 − u_k < σ(a)`` (so the rarer value is the one
the copula spreads out). The leave-one-out estimator on correlated samples has mean ``(1 − ρ)·∇``,
``ρ = (C(q, q) − q²)/(q(1 − q))`` the samples' correlation; ARMS divides it out::

    ĝ_i = (1/K) Σ_k (f(b_k) − mean_{j≠k} f(b_j))·(b_ki − p_i) · p_i(1 − p_i) / (q_i − C(q_i, q_i))

with ``q = min(p, 1 − p)`` and ``C(x, y) = max(x^{1/(K−1)} + y^{1/(K−1)} − 1, 0)^{K−1}`` the copula's
bivariate CDF, so ``C(q, q) = P(b_ki = b_ji = [the rarer value])``. Special cases (tested): at ``K = 2``
the copula is the antithetic pair ``(u, 1 − u)`` and ARMS is DisARM draw for draw; with independent
uniforms (``C = q²``) it is ``reinforce_loo``. Costs ``K = samples`` evaluations of ``f``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..distributions import BERNOULLI
from ..gradient import attach_gradient
from ..sampling import uniform
from .base import Estimator


def dirichlet_copula(K: int, shape, like: Tensor, generator=None) -> Tensor:
    """``(K, *shape)`` uniforms, mutually antithetic along the first dimension (ARMS's Dirichlet copula)."""
    e = -torch.log1p(-uniform((K, *shape), like, generator))          # Exp(1), finite for u in [0, 1)
    d = e / e.sum(0, keepdim=True).clamp_min(torch.finfo(like.dtype).tiny)  # Dirichlet(1, …, 1)
    return (1 - d).pow(K - 1)


def copula_cdf(q: Tensor, K: int) -> Tensor:
    """``C(q, q) = P(u_k < q, u_j < q)`` for two of the ``K`` copula uniforms."""
    return (2 * q.pow(1.0 / (K - 1)) - 1).clamp_min(0).pow(K - 1)


def arms_gradient(u: Tensor, probs: Tensor, losses_of) -> tuple[Tensor, Tensor]:
    """ARMS from copula uniforms ``u`` ``(K, *batch, n)``: returns ``(losses (K, *batch), grad (*batch, n))``.

    ``losses_of`` maps the samples ``(K, *batch, n)`` to their losses ``(K, *batch)``.
    """
    K = u.shape[0]
    low = probs < 0.5
    b = (torch.where(low, u, 1 - u) < probs).to(probs.dtype)
    losses = losses_of(b)
    q = torch.where(low, probs, 1 - probs)
    joint = copula_cdf(q, K)
    # C = 0 (always when q <= 2^{1−K}) leaves p(1−p)/q = 1 − q, also where q underflows to 0
    debias = torch.where(joint > 0, probs * (1 - probs) / (q - joint).clamp_min(torch.finfo(q.dtype).tiny), 1 - q)
    centred = losses.detach() * K / (K - 1) - losses.detach().sum(0) / (K - 1)   # f_k − mean_{j≠k} f_j
    grad = (centred.unsqueeze(-1) * (b - probs)).mean(0) * debias
    return losses, grad


class ARMS(Estimator):
    """``arms`` (Dimitriev & Zhou 2021): leave-one-out over ``K = samples`` Dirichlet-copula antithetic
    samples, divided by ``1 − ρ`` (module docstring). Unbiased; ``samples >= 2``; K = 2 is DisARM.
    """

    name = "arms"
    description = ("ARMS (Dimitriev & Zhou 2021): leave-one-out over K = samples Dirichlet-copula "
                   "antithetic samples, debiased by p(1-p)/(q - C(q,q)); K=2 is DisARM")
    unbiased = True
    min_samples = 2

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        probs = dist.probs(logits.detach())
        u = dirichlet_copula(samples, logits.shape, logits, generator)
        losses, grad = arms_gradient(u, probs, f)
        return attach_gradient(losses.mean(0), logits, grad, dist.masks)
