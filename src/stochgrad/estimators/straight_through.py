"""Straight-through estimators (seed §1.2, §3.2.1; Hinton 2012, lecture 15b): biased, low variance, pathwise.

The forward pass uses the hard sample ``h``; the backward pass treats the threshold as the identity
(``∂h/∂a := 1``) or as the sigmoid (``∂h/∂a := σ'(a)``). Their mean is therefore
``E[∂f/∂b]`` (times ``σ'(a)``), not ``∇_a E[f]``: the tests assert exactly this bias.
"""
from __future__ import annotations

import torch

from ..distributions import BERNOULLI
from ..gradient import straight_through
from ..sampling import lead, over_samples
from .base import Estimator


class StraightThrough(Estimator):
    """``straight_through`` (seed §3.2.1): the hard sample forward, the identity backward through the
    threshold. Biased: its mean is ``E[∂f/∂b]``.
    """

    name = "straight_through"
    description = ("back-propagates through the threshold as if it were the identity (§3.2.1): mean = E[df/db]; "
                   "categorical: one-hot forward, softmax probabilities backward")
    pathwise = True
    distributions = ("bernoulli", "categorical")

    def relax(self, logits, dist=BERNOULLI):
        """What the threshold is replaced by in the backward pass: ``a`` (Bernoulli), ``softmax(a)`` (categorical)."""
        return logits if dist is BERNOULLI else dist.probs(logits)

    def sample(self, logits, lead=(), generator=None, dist=BERNOULLI):
        """Hard samples ``(*lead, *logits.shape)`` that back-propagate as ``self.relax(logits)``."""
        r = self.relax(logits, dist)
        fixed = r.detach()
        probs = dist.probs(fixed) if r is logits else fixed   # relaxed to the probabilities, or through the logits
        return straight_through(dist.sample(probs, lead, generator), r)

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        return over_samples(f(self.sample(logits, lead(samples), generator, dist)), samples)


class StraightThroughSigmoid(StraightThrough):
    """``straight_through_sigmoid``: as [`StraightThrough`][stochgrad.estimators.straight_through.StraightThrough], the backward pass scaled by ``σ′(a)``.
    Biased: its mean is ``E[∂f/∂b]·σ′(a)``.
    """

    name = "straight_through_sigmoid"
    description = "straight-through scaled by σ'(a) (§3.2.1): mean = σ(a)(1-σ(a))·E[df/db]"
    distributions = ("bernoulli",)  # categorical straight_through already goes through the probabilities

    def relax(self, logits, dist=BERNOULLI):
        return torch.sigmoid(logits)
