"""Concrete / Gumbel-softmax relaxation (Maddison et al. 2017; Jang et al. 2017): biased, pathwise.

``z = a + noise`` (logistic for Bernoulli units, Gumbel per class for categorical ones); the relaxed
sample ``σ(z/τ)`` / ``softmax(z/τ)`` tends to the hard sample ``1[z > 0]`` / ``onehot(argmax z)`` as the
temperature ``τ → 0``. ``gumbel`` evaluates ``f`` at the relaxed sample (its value and gradient are both
those of the relaxed problem: bias falls with ``τ``, variance grows); ``gumbel_st`` evaluates ``f`` at
the hard sample and back-propagates through the relaxed one.
"""
from __future__ import annotations

from ..distributions import BERNOULLI
from ..options import POSITIVE_FLOAT
from ..sampling import lead, over_samples
from .base import Estimator
from .straight_through import straight_through


class Gumbel(Estimator):
    """``gumbel``: the Concrete relaxation ``f(σ((a + logistic)/τ))``, pathwise (Maddison et al. 2017;
    Jang et al. 2017). Biased; the bias falls and the variance grows as the temperature ``τ`` falls.

    Args:
        temperature: ``τ > 0``.
    """

    name = "gumbel"
    description = "Concrete relaxation: f(σ((a + logistic)/τ)) or f(softmax((a + Gumbel)/τ)), pathwise; bias -> 0 as τ -> 0"
    pathwise = True
    distributions = ("bernoulli", "categorical")

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = float(POSITIVE_FLOAT.check(temperature, "temperature"))

    def relaxed(self, logits, lead=(), generator=None, dist=BERNOULLI):
        """``(z, soft)``: ``z = a + noise`` and its relaxation, ``(*lead, *logits.shape)``, differentiable in ``logits``."""
        z = dist.perturb(logits, dist.uniform((*lead, *logits.shape), logits, generator))
        return z, dist.soften(z, self.temperature)

    def sample(self, logits, lead=(), generator=None, dist=BERNOULLI):
        """The relaxed sample, ``(*lead, *logits.shape)``."""
        return self.relaxed(logits, lead, generator, dist)[1]

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        return over_samples(f(self.sample(logits, lead(samples), generator, dist)), samples)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class GumbelST(Gumbel):
    """``gumbel_st``: ``f`` at the hard sample ``1[a + logistic > 0]``, gradient through the relaxed one
    (straight-through Gumbel). Biased.
    """

    name = "gumbel_st"
    description = "straight-through Gumbel: f at the hard sample 1[z > 0] / onehot(argmax z), gradient of the relaxed one"

    def sample(self, logits, lead=(), generator=None, dist=BERNOULLI):
        """The hard sample, back-propagating as the relaxed one."""
        z, soft = self.relaxed(logits, lead, generator, dist)
        return straight_through(dist.hard(z), soft)  # hard() carries no gradient
