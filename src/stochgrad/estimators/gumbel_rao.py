"""Gumbel-Rao (Paulus, Maddison & Krause 2021): straight-through Gumbel, Rao-Blackwellised over the noise.

The straight-through Gumbel gradient ``∂f/∂h · ∂ soften(a + G)/∂a`` (noise ``G`` held fixed) is averaged
over ``draws`` samples of the noise *conditioned on the sampled* ``h`` (Paulus et al. 2021, Eq. 9 and
Alg. 2; the conditional Gumbel/logistic of [`stochgrad.distributions`][stochgrad.distributions]). Its mean is that of
``gumbel_st`` exactly (``E[∇_GST | h]`` has the same mean by the tower rule) and its variance is no
larger (Rao-Blackwell). Biased like ``gumbel_st``; one evaluation of ``f`` per sample.

The backward pass is one ``autograd.Function``: with ``y_m = soften(a + G_m)`` (the relaxed samples, computed without
a graph), ``∂/∂a := mean_m J(y_m)ᵀ ∂f/∂h / τ``, ``J`` the distribution's
[`jacobian`][stochgrad.distributions.Distribution.jacobian] (σ's or softmax's): the gradient autograd would take
through ``soften(a + G).mean(0)``, with one ``(draws, …)`` product instead of the six that the graph of the addition,
the division, the softmax and the mean saves or makes.
"""
from __future__ import annotations

from torch import Tensor

from ..distributions import BERNOULLI
from ..gradient import Function, summed_to
from ..options import integer
from .gumbel import GumbelST


DRAWS = integer(1, 2 ** 14)   # noise draws per hard sample: each is a full-size tensor


class RaoBlackwell(Function):
    """``h`` forward; backward ``∂/∂a = mean_m J(y_m) g / τ`` (Paulus et al. 2021, Eq. 9), ``y`` the relaxed samples
    ``(draws, *h.shape)``, summed over the leading dimensions of ``h`` beyond ``a``'s."""

    @staticmethod
    def forward(h: Tensor, logits: Tensor, y: Tensor, temperature: float, dist) -> Tensor:
        return h.detach()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        h, logits, y, temperature, dist = inputs
        ctx.save_for_backward(y)
        ctx.temperature, ctx.dist, ctx.shape = temperature, dist, logits.shape

    @staticmethod
    def backward(ctx, g: Tensor):
        (y,) = ctx.saved_tensors
        grad = ctx.dist.jacobian(y, g).mean(0).div_(ctx.temperature)
        return None, summed_to(grad, ctx.shape), None, None, None


class GumbelRao(GumbelST):
    """``gumbel_rao`` (Paulus, Maddison & Krause 2021, Eq. 9): ``gumbel_st``'s gradient averaged over
    ``draws`` noise samples given the hard sample. Biased like ``gumbel_st``, lower variance.

    Args:
        temperature: ``τ > 0`` of the relaxation.
        draws: noise samples averaged per hard sample.
    """

    name = "gumbel_rao"
    description = ("Gumbel-Rao (Paulus et al. 2021, Eq. 9): gumbel_st's gradient averaged over `draws` noise "
                   "samples given h: same mean, lower variance")

    def __init__(self, temperature: float = 0.5, draws: int = 10):
        super().__init__(temperature)
        self.draws = DRAWS.check(draws, "draws")

    def sample(self, logits, lead=(), generator=None, dist=BERNOULLI):
        """The hard sample ``h ~ p``, back-propagating as ``mean_m soften(a + G_m)``, ``G_m ~ p(G | h)``."""
        a = logits.detach()
        p = dist.probs(a)
        h = dist.sample(p, lead, generator)
        if not logits.requires_grad:
            return h
        v = dist.uniform((self.draws, *lead, *a.shape), a, generator)
        z = dist.conditional_noise(v, h, a, p).add_(a)     # a + G_m ~ p(z | hard(z) = h), held fixed
        return RaoBlackwell.apply(h, logits, dist.soften(z, self.temperature), self.temperature, dist)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, draws={self.draws}"
