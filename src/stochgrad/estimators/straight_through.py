"""Straight-through estimators (seed §1.2, §3.2.1; Hinton 2012, lecture 15b): biased, low variance, pathwise.

The forward pass uses the hard sample ``h``; the backward pass treats the threshold as the identity
(``∂h/∂a := 1``) or as the sigmoid (``∂h/∂a := σ'(a)``). Their mean is therefore
``E[∂f/∂b]`` (times ``σ'(a)``), not ``∇_a E[f]``: the tests assert exactly this bias.
"""
from __future__ import annotations

import torch

from ..expect import sample_mean
from ..sampling import bernoulli
from .base import Estimator


def straight_through(h, surrogate):
    """``h`` forward, gradient of ``surrogate`` backward: ``h + (s − s.detach())``."""
    return h + (surrogate - surrogate.detach())


class StraightThrough(Estimator):
    name = "straight_through"
    description = "back-propagates through the threshold as if it were the identity (§3.2.1): mean = E[df/db]"
    pathwise = True

    def relax(self, logits):
        """What the threshold is replaced by in the backward pass."""
        return logits

    def sample(self, logits, lead=(), generator=None):
        """Hard samples ``(*lead, *logits.shape)`` that back-propagate as ``self.relax(logits)``."""
        h = bernoulli(torch.sigmoid(logits.detach()), lead, generator)
        return straight_through(h, self.relax(logits))

    def estimate(self, f, logits, samples, generator):
        return sample_mean(f(self.sample(logits, (samples,), generator)))


class StraightThroughSigmoid(StraightThrough):
    name = "straight_through_sigmoid"
    description = "straight-through scaled by σ'(a) (§3.2.1): mean = σ(a)(1-σ(a))·E[df/db]"

    def relax(self, logits):
        return torch.sigmoid(logits)
