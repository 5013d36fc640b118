"""Concrete / Gumbel-sigmoid relaxation (Maddison et al. 2017; Jang et al. 2017): biased, pathwise.

``z = (a + logistic noise) / τ``; the relaxed sample ``σ(z)`` tends to the hard sample
``1[a + logistic > 0] ~ Bernoulli(σ(a))`` as the temperature ``τ → 0``. ``gumbel`` evaluates ``f`` at the
relaxed sample (its value and gradient are both those of the relaxed problem: bias falls with ``τ``,
variance grows); ``gumbel_st`` evaluates ``f`` at the hard sample and back-propagates through the
relaxed one.
"""
from __future__ import annotations

import torch

from ..expect import sample_mean
from ..sampling import logistic_from_uniform, uniform
from .base import Estimator
from .straight_through import straight_through


class Gumbel(Estimator):
    name = "gumbel"
    description = "Concrete relaxation: f(σ((a + logistic)/τ)), pathwise; bias -> 0 as τ -> 0"
    pathwise = True

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def relaxed(self, logits, lead=(), generator=None):
        """``(z, σ(z))`` for ``z = (a + logistic)/τ``, ``(*lead, *batch, n)``, differentiable in ``logits``."""
        noise = logistic_from_uniform(uniform((*lead, *logits.shape), logits, generator))
        z = (logits + noise) / self.temperature
        return z, torch.sigmoid(z)

    def sample(self, logits, lead=(), generator=None):
        """The relaxed sample ``σ((a + logistic)/τ)``, ``(*lead, *logits.shape)``."""
        return self.relaxed(logits, lead, generator)[1]

    def estimate(self, f, logits, samples, generator):
        return sample_mean(f(self.sample(logits, (samples,), generator)))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class GumbelST(Gumbel):
    name = "gumbel_st"
    description = "straight-through Gumbel: f at the hard sample 1[a + logistic > 0], gradient of σ((a + logistic)/τ)"

    def sample(self, logits, lead=(), generator=None):
        """The hard sample ``1[a + logistic > 0]``, back-propagating as the relaxed one."""
        z, soft = self.relaxed(logits, lead, generator)
        return straight_through((z > 0).to(soft.dtype), soft)
