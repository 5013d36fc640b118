"""Perturbation estimators of seed §1.2: SPSA (Spall 1992), finite differences, node perturbation
(Fiete & Seung 2006). Biased; the bias vanishes as the perturbation shrinks, while the variance grows.

What each estimates: ``f`` is evaluated at Bernoulli samples drawn with *common random numbers*
``h = 1[u < σ(a')]``, one ``u`` shared by the perturbed logits ``a'``. The difference of two such
losses is an unbiased estimate of ``E_{a'}[f] − E_{a''}[f]``, so each estimator's mean is a finite
difference of the exact expected loss ``E[f](a)`` (computed exactly in the tests): central
differences for SPSA and finite differences (bias ``O(c²)``), a one-sided Gaussian-smoothed
difference for node perturbation (bias ``O(s²)``).
"""
from __future__ import annotations

import torch

from ..distributions import BERNOULLI
from ..gradient import attach_gradient
from ..options import POSITIVE_FLOAT
from ..sampling import bernoulli_from_uniform, normal, uniform
from .base import Estimator


class _Perturbation(Estimator):
    """Two evaluations of ``f`` per sample (perturbed and reference) unless a subclass says otherwise."""

    unbiased = False
    cost = "2S"

    def __init__(self, step: float = 0.1):
        super().__init__()
        self.step = float(POSITIVE_FLOAT.check(step, "step"))

    def evaluations(self, n, samples=1):
        return 2 * samples

    def extra_repr(self) -> str:
        return f"step={self.step}"


class SPSA(_Perturbation):
    """``spsa`` (Spall 1992): ``(F(a + cΔ) − F(a − cΔ))/(2cΔ_i)``, Δ Rademacher, common random
    numbers. Biased, ``O(c²)``; 2 evaluations per sample.
    """

    name = "spsa"
    description = ("SPSA (Spall 1992): (F(a+cΔ) - F(a-cΔ))/(2cΔ_i), Δ Rademacher, common random numbers; "
                   "bias O(c²)")

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        a, c = logits.detach(), self.step
        shape = (samples, *a.shape)
        delta = 2 * (uniform(shape, a, generator) < 0.5).to(a.dtype) - 1          # Rademacher ±1
        u = uniform(shape, a, generator)
        losses = f(torch.stack([bernoulli_from_uniform(u, dist.probs(a + c * delta)),
                                bernoulli_from_uniform(u, dist.probs(a - c * delta))]))
        grad = ((losses[0] - losses[1]).detach().unsqueeze(-1) / (2 * c * delta)).mean(0)
        return attach_gradient(losses.mean((0, 1)), logits, grad, dist.masks)


class FiniteDifference(_Perturbation):
    """``finite_difference``: central differences one unit at a time, ``(F(a + c e_i) − F(a − c e_i))/2c``,
    common random numbers. Biased, ``O(c²)``; 2n evaluations per sample.
    """

    name = "finite_difference"
    description = ("central differences one unit at a time, (F(a+c e_i) - F(a-c e_i))/2c, common random numbers: "
                   "2n evaluations of n-unit f, O(n²); bias O(c²)")
    cost = "2nS"

    def evaluations(self, n, samples=1):
        return 2 * n * samples

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        a, c = logits.detach(), self.step
        *batch, n = a.shape
        eye = torch.eye(n, dtype=a.dtype, device=a.device).reshape(n, *([1] * len(batch)), n)
        u = uniform((samples, 1, *a.shape), a, generator)                   # shared by all 2n points
        plus = bernoulli_from_uniform(u, dist.probs(a + c * eye))        # (S, n, *batch, n)
        minus = bernoulli_from_uniform(u, dist.probs(a - c * eye))
        losses = f(torch.stack([plus, minus]))                              # (2, S, n, *batch)
        grad = ((losses[0] - losses[1]).detach() / (2 * c)).mean(0).movedim(0, -1)
        return attach_gradient(losses.mean((0, 1, 2)), logits, grad, dist.masks)


class NodePerturbation(_Perturbation):
    """``node_perturbation`` (Fiete & Seung 2006): ``(F(a + ξ) − F(a))·ξ/s²``, ``ξ ~ N(0, s²)``.
    Biased, ``O(s²)``; 2 evaluations per sample.
    """

    name = "node_perturbation"
    description = ("node perturbation (Fiete & Seung 2006): (F(a+ξ) - F(a))·ξ/s², ξ ~ N(0, s²), "
                   "common random numbers; bias O(s²)")

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        a, s = logits.detach(), self.step
        shape = (samples, *a.shape)
        xi = s * normal(shape, a, generator)
        u = uniform(shape, a, generator)
        losses = f(torch.stack([bernoulli_from_uniform(u, dist.probs(a)),
                                bernoulli_from_uniform(u, dist.probs(a + xi))]))
        grad = ((losses[1] - losses[0]).detach().unsqueeze(-1) * xi / s ** 2).mean(0)
        return attach_gradient(losses[0].mean(0), logits, grad, dist.masks)
