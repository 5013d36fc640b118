"""ReinMax (Liu, Liu, Gao, Chen & Han 2023, Algorithm 2): straight-through made second-order accurate.

Straight-through approximates ``f(h) − f(h')`` by a first-order (Euler) step; ReinMax uses Heun's
method. With ``π0 = softmax(a)``, ``h ~ π0`` and ``π1 = (h + softmax(a/τ))/2``, the backward pass is

    ∂/∂a := (2·J(π1) − ½·J(π0))ᵀ ∂f/∂h,      J(p) = diag(p) − p pᵀ (the softmax Jacobian at p),

i.e. the paper's ``π2 = 2·softmax(sg(ln π1 − a) + a) − ½ π0``. For Bernoulli units the same with
``σ`` and ``J(p) = p(1 − p)`` (the K = 2 case). Biased (exact for f quadratic in h at τ = 1, where
straight-through is not); pathwise, one evaluation of ``f`` per sample.
"""
from __future__ import annotations

from ..distributions import BERNOULLI
from ..sampling import sample_mean
from .base import Estimator
from .straight_through import straight_through


class ReinMax(Estimator):
    """``reinmax`` (Liu et al. 2023, Alg. 2): the hard sample forward, Heun's second-order step backward
    (module docstring). Biased, pathwise.

    Args:
        temperature: ``τ > 0``.
    """

    name = "reinmax"
    description = "ReinMax (Liu et al. 2023, Alg. 2): h forward, (2 J(π1) - J(π0)/2)ᵀ ∂f/∂h backward, π1 = (h + softmax(a/τ))/2"
    pathwise = True
    distributions = ("bernoulli", "categorical")

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def sample(self, logits, lead=(), generator=None, dist=BERNOULLI):
        """Hard samples ``(*lead, *logits.shape)`` whose backward pass is ReinMax's."""
        a = logits.detach()
        p0 = dist.probs(a)
        h = dist.sample(p0, lead, generator)
        p1 = 0.5 * (h + dist.probs(a / self.temperature))
        return straight_through(h, 2 * dist.jacobian(p1, logits) - 0.5 * dist.jacobian(p0, logits))

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        return sample_mean(f(self.sample(logits, (samples,), generator, dist)))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
