"""Gumbel-Rao (Paulus, Maddison & Krause 2021): straight-through Gumbel, Rao-Blackwellised over the noise.

The straight-through Gumbel gradient ``∂f/∂h · ∂ soften(a + G)/∂a`` (noise ``G`` held fixed) is averaged
over ``draws`` samples of the noise *conditioned on the sampled* ``h`` (Paulus et al. 2021, Eq. 9 and
Alg. 2; the conditional Gumbel/logistic of [`stochgrad.distributions`][stochgrad.distributions]). Its mean is that of
``gumbel_st`` exactly (``E[∇_GST | h]`` has the same mean by the tower rule) and its variance is no
larger (Rao-Blackwell). Biased like ``gumbel_st``; one evaluation of ``f`` per sample.
"""
from __future__ import annotations

from ..distributions import BERNOULLI
from ..options import integer
from .gumbel import GumbelST
from .straight_through import straight_through


DRAWS = integer(1, 2 ** 14)   # noise draws per hard sample: each is a full-size tensor


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
        v = dist.uniform((self.draws, *lead, *a.shape), a, generator)
        noise = dist.conditional_noise(v, h, a, p)     # a + noise ~ p(z | hard(z) = h), held fixed
        return straight_through(h, dist.soften(logits + noise, self.temperature).mean(0))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, draws={self.draws}"
