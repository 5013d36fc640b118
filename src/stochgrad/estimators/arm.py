"""Antithetic estimators: ARM (Yin & Zhou 2019) and DisARM (Dong, Mnih & Tucker 2020). Unbiased.

Both draw one uniform vector ``u`` per sample and evaluate ``f`` at two points built from it; the
difference of the two losses replaces the score-function's ``L − c``. With ``samples = S`` they
average ``S`` independent pairs (2S evaluations of ``f``).
"""
from __future__ import annotations

import torch

from ..distributions import BERNOULLI
from ..gradient import attach_gradient
from ..sampling import bernoulli_from_uniform_, lead, over_samples, uniform
from .base import Estimator


class _Antithetic(Estimator):
    """Two evaluations of ``f`` per sample, at an antithetic pair built from one uniform vector."""

    unbiased = True
    cost = "2S"

    def evaluations(self, n, samples=1):
        return 2 * samples


class ARM(_Antithetic):
    """ARM (Yin & Zhou 2019, Thm 1): ``(f(b̃) − f(b))·(u − ½)`` per unit, ``b = 1[u < σ(a)]``,
    ``b̃ = 1[u > σ(−a)]``. Unbiased; 2 evaluations of ``f`` per sample.
    """

    name = "arm"
    description = "ARM (Yin & Zhou 2019, Thm 1): (f(1[u>σ(-a)]) - f(1[u<σ(a)]))·(u - 1/2)"

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        probs = dist.probs(logits.detach())
        u = uniform((*lead(samples), *logits.shape), logits, generator)
        # the antithetic pair 1[1 − u < σ(a)] = 1[u > σ(−a)] and 1[u < σ(a)], each ~ Bernoulli(σ(a))
        losses = f(bernoulli_from_uniform_(torch.stack([1 - u, u]), probs))
        grad = over_samples((losses[0] - losses[1]).unsqueeze(-1) * (u - 0.5), samples)  # detached by attach_gradient
        return attach_gradient(over_samples(losses.mean(0), samples), logits, grad, dist.masks)


class DisARM(_Antithetic):
    """DisARM (Dong, Mnih & Tucker 2020, Eq. 7): ``½(f(b) − f(b̃))·(−1)^b̃·1[b ≠ b̃]·σ(|a|)`` for the
    antithetic pair of [`ARM`][stochgrad.estimators.arm.ARM]. Unbiased, lower variance than ARM; 2 evaluations per sample.
    """

    name = "disarm"
    description = ("DisARM (Dong et al. 2020, Eq. 7): ½(f(b)-f(b~))·(-1)^b~·1[b≠b~]·σ(|a|), "
                   "b, b~ antithetic")

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        probs = dist.probs(logits.detach())
        u = uniform((*lead(samples), *logits.shape), logits, generator)
        pair = bernoulli_from_uniform_(torch.stack([u, 1 - u]), probs)  # b, b̃: both ~ Bernoulli(σ(a))
        b, b_anti = pair
        losses = f(pair)                                     # (2, *lead, *batch)
        weight = (1 - 2 * b_anti) * (b != b_anti).to(b.dtype) * torch.sigmoid(logits.detach().abs())
        grad = over_samples(0.5 * (losses[0] - losses[1]).unsqueeze(-1) * weight, samples)  # detached by attach_gradient
        return attach_gradient(over_samples(losses.mean(0), samples), logits, grad, dist.masks)
