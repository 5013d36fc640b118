"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018): unbiased control variates built on the
Concrete relaxation, whose own parameters are tuned online to minimise the estimator's variance.

With ``z = a + noise(u)`` (logistic for Bernoulli units, Gumbel per class for categorical ones), ``b = H(z)``
(``1[z > 0]``, ``onehot(argmax z)``), ``z̃ ~ p(z | b)`` (the conditional reparameterisation, Tucker et al. appendix)
and any control variate ``c``::

    ĝ = [f(b) − c(z̃)]·∇_a log p(b) + ∇_a c(z) − ∇_a c(z̃)                 (Grathwohl et al. 2018, Eq. 6)

is unbiased, ``∇_a log p(b) = b − σ(a)`` (``onehot − softmax(a)``). REBAR (Tucker et al. 2017, Eq. 6):
``c(z) = η·f(σ_λ(z))`` with the relaxation ``σ_λ(z) = σ(z/λ)`` (``softmax(z/λ)``); RELAX adds a small network,
``c(z) = η·f(σ_λ(z)) + r_ρ(σ_λ(z))`` (the authors' ``rebar_toy.py``: one tanh layer of 10 units on the relaxed
sample, its output layer starting at zero so that it starts as REBAR). Because ``E[ĝ]`` does not depend on
``(η, λ, ρ)``, the gradient of ``E‖ĝ‖²`` is that of the variance: every ``tune_every``-th training call takes one Adam
step on ``mean ‖ĝ‖²`` (Grathwohl et al. Alg. 2 tune every step). Three evaluations of ``f`` per sample: at ``b``, and
at ``σ_λ(z)``, ``σ_λ(z̃)`` stacked into one call.

[`REBAR.estimate`][stochgrad.estimators.rebar.REBAR.estimate] is this formula, for both distributions, by autograd. For Bernoulli units a faster form of the
same computation lives beside it ([`stochgrad.estimators.rebar_hand`][stochgrad.estimators.rebar_hand]: ``∂z̃/∂a`` in closed form and the chain
rule written out, one backward pass through ``f`` instead of autograd through the conditional sample's graph); it is
tested equal to this one (same estimate, same tuning step) and taken when ``hand=True`` (the default).

Only the temperature's gradient needs a second-order pass through ``f`` (the relaxed points move with ``λ``);
``temperature_every`` takes it on every that-many-th tuning step and leaves it 0 on the others (Adam's decaying
moments carry ``log λ`` on). The defaults tune as far per call as one step per call at ``lr = 1e-2``: REBAR every 8th
call at ``8e-2``, RELAX every 4th at ``4e-2`` with the temperature every 2nd step (tests/test_modern.py compares the
variance after tuning with every-call tuning).

The tuned values are estimator state ([`Tuned`][stochgrad.estimators.base.Tuned]): one buffer ``theta`` =
``[η, log λ, ρ]`` with Adam's moments, out of a user's ``model.parameters()``, resumed exactly by ``state_dict``,
averaged over ranks, guarded against NaN/inf.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..distributions import BERNOULLI, conditional_logistic  # noqa: F401  (conditional_logistic: public here)
from ..gradient import attach_gradient
from ..options import FINITE, FLAG, POSITIVE, POSITIVE_FLOAT, WIDTH
from ..sampling import lead, over_samples
from . import rebar_hand
from .base import Tuned

MASKED = -1e4  # a masked class's perturbed logit in the relaxation: softmax weight exp(−1e4/λ), 0 in float32 for λ < 90


class REBAR(Tuned):
    """``rebar`` (Tucker et al. 2017): the control variate ``c(z) = η·f(σ(z/λ))`` in Grathwohl et al.'s
    Eq. 6 (module docstring); ``η`` and ``λ`` tuned online to minimise the variance. Unbiased;
    3 evaluations per sample.

    Args:
        eta: the initial ``η``.
        temperature: the initial ``λ > 0``.
        tune: tune ``(η, λ)`` online (Adam on ``mean ‖ĝ‖²``).
        lr: Adam's learning rate.
        tune_every: training calls per tuning step.
        temperature_every: the temperature's (second-order) gradient on every that-many-th tuning step.
        hand: Bernoulli units by the hand-chained form ([`rebar_hand`][stochgrad.estimators.rebar_hand]), the same numbers.
    """

    name = "rebar"
    description = "REBAR (Tucker 2017): [f(b) - η f(σ(z~/λ))]·(b - σ(a)) + η ∂f(σ(z/λ)) - η ∂f(σ(z~/λ)); η, λ tuned"
    unbiased = True
    cost = "3S"
    distributions = ("bernoulli", "categorical")

    def __init__(self, eta: float = 1.0, temperature: float = 0.5, tune: bool = True, lr: float = 8e-2,
                 tune_every: int = 8, temperature_every: int = 1, hand: bool = True):
        FINITE.check(eta, "eta")
        POSITIVE_FLOAT.check(temperature, "temperature")
        super().__init__([eta, math.log(temperature)], tune, lr, tune_every)  # theta = [η, log λ, ρ...]
        self.temperature_every = POSITIVE.check(temperature_every, "temperature_every")
        self.hand = FLAG.check(hand, "hand")

    @property
    def eta(self) -> Tensor:
        return self.theta[0]

    @property
    def temperature(self) -> Tensor:
        return self.theta[1].exp()

    def evaluations(self, n, samples=1):
        return 3 * samples

    def sizes(self) -> list[int]:
        """How ``theta`` splits: ``[η, log λ]`` (RELAX adds its network's pieces)."""
        return [1, 1]

    def pieces(self, tuning: bool, temperature: bool = True) -> tuple[Tensor, ...]:
        """``theta`` split by [`sizes`][stochgrad.estimators.rebar.REBAR.sizes] (detached); on a tuning call, leaves that require grad (``log λ`` only if
        ``temperature``: a step that leaves its gradient 0)."""
        parts = self.theta.detach().split(self.sizes())
        if not tuning:
            return parts
        return tuple(x.detach().requires_grad_(temperature or i != 1) for i, x in enumerate(parts))

    def tunes_temperature(self) -> bool:
        """Whether this call's tuning step (if it tunes) takes the temperature's gradient: every
        ``temperature_every``-th tuning step, counted by the calls (so it resumes from ``state_dict``)."""
        return self._calls // self.tune_every % self.temperature_every == 0

    def network(self, soft: Tensor, parts: tuple[Tensor, ...]) -> Tensor | None:
        """``r_ρ(soft)`` for RELAX, ``(..., units)`` → ``(...)``; ``None`` for REBAR."""
        return None

    def control(self, f, soft: Tensor, parts: tuple[Tensor, ...], dist) -> Tensor:
        """``c = η·f(soft) + r_ρ(soft)`` at relaxed samples ``soft`` ``(..., *batch, *event)`` → ``(..., *batch)``."""
        c = parts[0] * f(soft)
        r = self.network(dist.flat(soft), parts)
        return c if r is None else c + r

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        a0 = logits.detach()
        u, v = dist.uniform((2, *lead(samples), *logits.shape), logits, generator).unbind(0)
        if not logits.requires_grad or a0.numel() == 0:  # no gradient wanted, or an empty batch: no tuning
            if logits.requires_grad:
                self.join(a0, dist.flat(a0).shape[-1], generator)   # (under torch.distributed: the ranks' collectives)
            value = over_samples(f(dist.hard(dist.perturb(a0, u))), samples)
            return attach_gradient(value, logits, torch.zeros_like(a0), dist.masks)
        tuning = self.begin(a0, dist.flat(a0).shape[-1], generator)
        temperature = tuning and self.tunes_temperature()
        if dist is BERNOULLI and self.hand:
            grad, f_b, step = rebar_hand.estimate(self, f, a0, u, v, samples, tuning, temperature)
            self.check_losses(f_b)
            if tuning:
                self._step(step, grad.numel() // grad.shape[-1])
        else:
            grad, f_b, parts = self.formula(f, a0, u, v, samples, tuning, dist, temperature)
            self.check_losses(f_b)
            if tuning:
                self.tune_on(grad, parts, dist.event_dims)
        self.end()
        return attach_gradient(over_samples(f_b, samples), logits, grad.detach(), dist.masks)

    def formula(self, f, a0: Tensor, u: Tensor, v: Tensor, samples: int, tuning: bool, dist, temperature: bool = True):
        """Eq. 6 by autograd, for any distribution: ``(ĝ (*batch, *event), f(b) (*lead, *batch), theta's pieces)``;
        ``u``, ``v``: the noise of ``z`` and ``z̃``; on a tuning call ``ĝ`` is differentiable in the pieces."""
        parts = self.pieces(tuning, temperature)
        with torch.enable_grad():
            a = a0.requires_grad_(True)
            z = dist.perturb(a, u)                                     # z = a + noise(u), reparameterised
            b = dist.hard(z.detach())                                  # b = H(z)
            zt = dist.conditional(v, b, a)                             # z̃ ~ p(z | b), reparameterised
            # a masked class (a = −inf) enters the relaxation at MASKED, not −inf: the temperature's gradient multiplies
            # x by 0 there, and 0·inf is NaN. c stays one function of z, so the estimate stays unbiased.
            x = torch.stack([z, zt]).clamp_min(MASKED)
            c_z, c_zt = self.control(f, dist.soften(x, parts[1].exp()), parts, dist).unbind(0)
            (d_c,) = torch.autograd.grad((c_z - c_zt).sum(), a, create_graph=tuning)   # ∇_a c(z) − ∇_a c(z̃)
            f_b = f(b)
            centred = (f_b.detach() - c_zt).reshape(*c_zt.shape, *([1] * dist.event_dims))
            grad = over_samples(centred * (b - dist.probs(a0)), samples) + d_c / samples
        return grad, f_b, parts

    def extra_repr(self) -> str:
        return super().extra_repr() + f", temperature_every={self.temperature_every}"


class RELAX(REBAR):
    """``relax`` (Grathwohl et al. 2018): REBAR's control variate plus a small network ``r_ρ(σ(z/λ))``,
    all tuned online. Unbiased; 3 evaluations per sample.

    Args:
        hidden: the network's width (``units → hidden → 1``, tanh); the rest as [`REBAR`][stochgrad.estimators.rebar.REBAR].
    """

    name = "relax"
    description = "RELAX (Grathwohl 2018): REBAR's control variate plus a learned network r(σ(z/λ)), all tuned"

    def __init__(self, eta: float = 1.0, temperature: float = 0.5, hidden: int = 10, tune: bool = True,
                 lr: float = 4e-2, tune_every: int = 4, temperature_every: int = 2, hand: bool = True):
        super().__init__(eta, temperature, tune, lr, tune_every, temperature_every, hand)
        self.hidden = WIDTH.check(hidden, "hidden")

    def state_meaning(self) -> dict:
        return {**super().state_meaning(), "hidden": self.hidden}   # how theta's network part is cut

    def units(self) -> int:
        """The units the network takes (0 before first use): ``theta`` = [η, log λ, W1 (h·n), b1 (h), w2 (h), b2]."""
        return max(0, (self.theta.numel() - 3 - 2 * self.hidden) // self.hidden)

    def prepare(self, n, like, generator):
        if self.theta.numel() > 2:
            if self.units() != n:
                raise ValueError(f"relax's surrogate takes {self.units()} units but got {n}: keep one estimator "
                                 "object per stochastic site")
            return
        h = self.hidden
        first = self.draw(h * n + h, 1 / math.sqrt(n), like, generator)   # nn.Linear's initialisation of W1, b1
        self.grow(torch.cat([first, first.new_zeros(h + 1)]))  # last layer 0: starts as REBAR

    def sizes(self):
        h = self.hidden
        return [1, 1, h * self.units(), h, h, 1]

    def network(self, soft, parts):
        w1, b1, w2, b2 = parts[2:]
        return F.linear(torch.tanh(F.linear(soft, w1.view(self.hidden, -1), b1)), w2.view(1, -1), b2).squeeze(-1)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, units={self.units()}, " + super().extra_repr()
