"""ReinMax (Liu, Liu, Gao, Chen & Han 2023, Algorithm 2): straight-through made second-order accurate.

Straight-through approximates ``f(h) − f(h')`` by a first-order (Euler) step; ReinMax uses Heun's
method. With ``π0 = softmax(a)``, ``h ~ π0`` and ``π1 = (h + softmax(a/τ))/2``, the backward pass is

    ∂/∂a := (2·J(π1) − ½·J(π0))ᵀ ∂f/∂h,      J(p) = diag(p) − p pᵀ (the softmax Jacobian at p),

i.e. the paper's ``π2 = 2·softmax(sg(ln π1 − a) + a) − ½ π0``. For Bernoulli units the same with
``σ`` and ``J(p) = p(1 − p)`` (the K = 2 case). Biased (exact for f quadratic in h at τ = 1, where
straight-through is not); pathwise, one evaluation of ``f`` per sample. Written as the authors write it
(``microsoft/ReinMax``, ``reinmax.py``): one ``autograd.Function`` whose backward applies the two Jacobians to the
upstream gradient, with no surrogate graph.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..distributions import BERNOULLI
from ..gradient import Function, summed_to
from ..options import POSITIVE_FLOAT
from ..sampling import lead, over_samples
from .base import Estimator


class Heun(Function):
    """``h`` forward; backward ``∂/∂a = 2·J(π1) g − ½·J(π0) g`` summed over the leading (sample) dimensions of ``h``
    beyond ``a``'s, with ``J`` the distribution's ([`jacobian`][stochgrad.distributions.Distribution.jacobian])."""

    @staticmethod
    def forward(h: Tensor, logits: Tensor, p0: Tensor, p1: Tensor, dist) -> Tensor:
        return h.detach()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        h, logits, p0, p1, dist = inputs
        ctx.save_for_backward(p0, p1)
        ctx.dist, ctx.shape = dist, logits.shape

    @staticmethod
    def backward(ctx, g: Tensor):
        p0, p1 = ctx.saved_tensors
        grad = ctx.dist.jacobian(p1, g).mul_(2).sub_(ctx.dist.jacobian(p0, g), alpha=0.5)   # in place on fresh products
        return None, summed_to(grad, ctx.shape), None, None, None


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
        self.temperature = float(POSITIVE_FLOAT.check(temperature, "temperature"))

    def sample(self, logits, lead=(), generator=None, dist=BERNOULLI):
        """Hard samples ``(*lead, *logits.shape)`` whose backward pass is ReinMax's."""
        a = logits.detach()
        p0 = dist.probs(a)
        h = dist.sample(p0, lead, generator)
        p1 = torch.add(h, p0 if self.temperature == 1 else dist.probs(a / self.temperature)).mul_(0.5)
        return Heun.apply(h, logits, p0, p1, dist) if logits.requires_grad else h

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        return over_samples(f(self.sample(logits, lead(samples), generator, dist)), samples)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
