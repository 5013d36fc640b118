"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018): unbiased control variates built on the
Concrete relaxation, whose own parameters are tuned online to minimise the estimator's variance.

With ``z = a + logistic(u)``, ``b = 1[z ≥ 0]``, ``z̃ ~ p(z | b)`` (conditional reparameterisation) and a
control variate ``c(z)``::

    ĝ = [f(b) − c(z̃)]·(b − σ(a)) + ∂_a c(z) − ∂_a c(z̃)                  (Grathwohl et al., Eq. 6)

is unbiased for any ``c``. REBAR: ``c(z) = η·f(σ(z/λ))``; RELAX adds a small network ``r_ρ(σ(z/λ))``.
Because ``E[ĝ]`` does not depend on ``(η, λ, ρ)``, the gradient of ``E[ĝ²]`` is that of the variance:
every ``tune_every``-th training call takes one Adam step on it (``tune=True``; Grathwohl et al. Alg. 2
tune every step, which costs a second-order backward pass through ``f`` each time). The defaults tune as far
per call as one step per call at ``lr = 1e-2`` did, at a fraction of the second-order passes: REBAR every
8th call at ``8e-2``, RELAX every 4th at ``4e-2`` (its network needs more steps: every 8th left its variance
3–17% higher after 100 calls, depending on the seed; REBAR every 16th, 1–7%); tests/test_modern.py compares
the variance after tuning. Costs 3 evaluations of ``f`` per sample (at ``b``, ``σ(z/λ)``, ``σ(z̃/λ)``; the last
two stacked into one call) and one backward pass for ``∂_a c``: for Bernoulli units through ``f`` alone, to the
relaxed points, chained by hand (``∂z̃/∂a`` in closed form,
:meth:`~stochgrad.distributions.Bernoulli.conditional_and_slope`; RELAX's network differentiated by hand); for
categorical units through the conditional sample's graph. The pass is created with a graph only on tuning
calls, which add one more for ``∂E[ĝ²]/∂(η, λ, ρ)``.

The tuning is :class:`~stochgrad.estimators.base.Tuned`'s, shared with ``double_cv`` and ``rodeo``: the
tuned quantities are estimator *state*, not model parameters: one vector buffer ``theta`` =
``[η, log λ, ρ]`` and Adam's moments beside it, out of a user's ``model.parameters()``, resumed exactly by
``state_dict``, averaged over ranks under ``torch.distributed``, and guarded: a call with NaN/inf losses
changes nothing. RELAX's network ``r_ρ`` (``n → hidden → 1``, tanh; 10 hidden units by default, as the
authors' toy experiment, duvenaud/relax ``rebar_toy.py`` ``Q_func``: one tanh layer of 10 units on the relaxed
sample, added to ``f(σ(z/λ))``) is initialised from the call's generator (its last layer at zero: it starts as
REBAR), so runs with the same seed repeat exactly.

Categorical units (Tucker et al. 2017 §3.3 and appendix; Grathwohl et al. 2018 §3.3): ``z = a + Gumbel``,
``b = onehot(argmax z)``, ``z̃`` the conditional Gumbel given ``b``, ``softmax(·/λ)`` for ``σ(·/λ)`` and the
score ``onehot − softmax(a)``: the same formula through :mod:`stochgrad.distributions`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..distributions import BERNOULLI, conditional_logistic  # noqa: F401  (conditional_logistic: public here)
from ..expect import attach_gradient, lead, over_samples
from ..guard import LOSSES, report_finite
from ..sampling import logistic_from_uniform
from .base import Tuned, check_count, check_positive


_sigmoid_backward = torch.ops.aten.sigmoid_backward.default  # g·σ(1 − σ) from σ, in one op (differentiable)


class REBAR(Tuned):
    """``rebar`` (Tucker et al. 2017): the control variate ``c(z) = η·f(σ(z/λ))`` in Grathwohl et al.'s
    Eq. 6 (module docstring); ``η`` and ``λ`` tuned online to minimise the variance. Unbiased;
    3 evaluations per sample.
    """

    name = "rebar"
    description = "REBAR (Tucker 2017): [f(b) - η f(σ(z~/λ))]·(b - σ(a)) + η ∂f(σ(z/λ)) - η ∂f(σ(z~/λ)); η, λ tuned"
    unbiased = True
    cost = "3S"
    distributions = ("bernoulli", "categorical")

    def __init__(self, eta: float = 1.0, temperature: float = 0.5, tune: bool = True, lr: float = 8e-2,
                 tune_every: int = 8):
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
            raise ValueError(f"eta must be a finite number, got {eta!r}")
        temperature = check_positive(temperature, "temperature")
        super().__init__([eta, math.log(temperature)], tune, lr, tune_every)  # theta = [η, log λ, ρ...]

    @property
    def eta(self) -> torch.Tensor:
        return self.theta[0]

    @property
    def temperature(self) -> torch.Tensor:
        return self.theta[1].exp()

    def evaluations(self, n, samples=1):
        return 3 * samples

    def sizes(self) -> list[int]:
        """How ``theta`` splits into the pieces :meth:`constants` reads: ``[η, log λ]`` (RELAX adds its network)."""
        return [1, 1]

    def pieces(self, tuning: bool) -> tuple:
        """``theta`` split by :meth:`sizes` (views, detached); on a tuning call, leaves that require grad."""
        parts = self.theta.detach().split(self.sizes())
        return tuple(x.detach().requires_grad_(True) for x in parts) if tuning else parts

    def constants(self, parts: tuple) -> tuple:
        """What the formula reads of ``theta``'s :meth:`pieces`: ``(η, 1/λ, η/λ, 1, *network)`` (0-dim tensors in
        ``theta``'s dtype and device: no Python number enters an op); differentiable on a tuning call, else cached
        between tuning steps (:meth:`fixed`)."""
        eta, inv_lam = parts[0].view(()), parts[1].view(()).neg().exp()
        return eta, inv_lam, eta * inv_lam, eta.new_ones(())

    def fixed(self) -> tuple:
        """:meth:`constants` of the current ``theta``, recomputed only when ``theta`` changed (a tuning step, a
        load, a move: a new tensor or a new version), so a call that does not tune reads no slices of it."""
        theta = self.theta
        try:
            key = (theta, theta._version)
        except RuntimeError:  # an inference tensor keeps no version: no cache
            return self.constants(self.pieces(False))
        cache = self.__dict__.get("_fixed")
        if cache is None or cache[0][0] is not theta or cache[0][1] != key[1]:
            cache = self.__dict__["_fixed"] = (key, self.constants(self.pieces(False)))
        return cache[1]

    def network(self, soft: Tensor, k: tuple, slope: bool):
        """The part of the control variate beyond ``η·f``: ``(r(soft) (..., *batch), ∂r/∂soft (..., *batch, n) or
        None)``, or ``(None, None)`` for REBAR; ``soft`` ``(..., *batch, n)`` flattened by the distribution."""
        return None, None

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        a0 = logits.detach()
        lead_ = lead(samples)  # one sample: no sample dimension (the fast path)
        u, v = dist.uniform((2, *lead_, *logits.shape), logits, generator).unbind(0)
        if not logits.requires_grad or a0.numel() == 0:  # no gradient wanted, or an empty batch: no tuning
            value = over_samples(f(dist.hard(dist.perturb(a0, u))), samples)
            return attach_gradient(value, logits, torch.zeros_like(a0))
        tuning = self.begin(a0, dist.flat(a0).shape[-1], generator)
        if dist is BERNOULLI:
            grad, f_b, theta = self._bernoulli(f, a0, u, v, samples, tuning)
        else:
            grad, f_b, theta = self._by_autograd(f, a0, u, v, samples, tuning, dist)
        if tuning:
            self.tune_on(grad, theta, dist.event_dims)
        elif self.training:
            report_finite(self.verdict, f_b.detach(), LOSSES)
        self.end()
        return attach_gradient(over_samples(f_b, samples), logits, grad.detach())

    def _bernoulli(self, f, a0, u, v, samples, tuning):
        """Bernoulli units: ``∂_a c`` by one backward pass through ``f`` alone, to the relaxed points
        ``σ([z, z̃]/λ)``, chained by hand: ``∂z/∂a = 1``, ``∂z̃/∂a`` in closed form
        (:meth:`~stochgrad.distributions.Bernoulli.conditional_and_slope`), ``∂σ(x/λ)/∂x = σ(1 − σ)/λ``, and RELAX's
        network differentiated by hand (:meth:`network`). Returns ``(ĝ, f(b), theta)``."""
        p = torch.sigmoid(a0)
        z = a0 + logistic_from_uniform(u)
        theta = self.pieces(True) if tuning else None
        with torch.enable_grad():
            eta, inv_lam, eta_inv_lam, one, *_ = k = self.constants(theta) if tuning else self.fixed()
        b = torch.heaviside(z, one)                        # 1[z ≥ 0]: 1[z > 0] but for z = +0.0, the same law
        score = b - p
        zt, neg_slope = BERNOULLI.conditional_and_slope(v, z, score, one)
        with torch.enable_grad():
            soft = torch.sigmoid(torch.stack([z, zt]) * inv_lam)     # (2, *lead, *batch, n)
            if not tuning:
                soft.requires_grad_(True)
            c = f(soft)                                               # (2, *lead, *batch)
            (d_f,) = torch.autograd.grad(c.sum(), soft, create_graph=tuning)
            if not tuning:
                soft, c = soft.detach(), c.detach()
            r, d_r = self.network(soft, k, True)
            # ∂c/∂x for x = [z, z̃]: (η ∂f/∂σ + ∂r/∂σ)·σ(1 − σ)/λ (d_r comes scaled by 1/λ)
            d_c = _sigmoid_backward(d_f * eta_inv_lam if d_r is None else torch.addcmul(d_r, d_f, eta_inv_lam), soft)
            d_z, d_zt = d_c.unbind(0)
            d_c = torch.addcmul(d_z, d_zt, neg_slope)                 # ∂_a c(z) − ∂_a c(z̃)
            c_zt = c[1] * eta if r is None else torch.addcmul(r[1], c[1], eta)
            f_b = f(b)                                                # (*lead, *batch): the value
            grad = torch.addcmul(d_c, (f_b.detach() - c_zt).unsqueeze(-1), score)
            if samples > 1:
                grad = grad.mean(0)
        return grad, f_b, theta

    def _by_autograd(self, f, a0, u, v, samples, tuning, dist):
        """Any distribution (categorical units): ``∂_a c`` by autograd through the conditional sample's graph."""
        probs = dist.probs(a0)
        theta = self.pieces(tuning)
        with torch.enable_grad():
            eta, inv_lam, *_ = k = self.constants(theta)
            a = a0.requires_grad_(True)
            z = dist.perturb(a, u)
            b = dist.hard(z.detach())
            x = torch.stack([z, dist.conditional(v, b, a)])
            f_b = f(b)
            soft = dist.soften(x, 1 / inv_lam)
            c = eta * f(soft)
            r, _ = self.network(dist.flat(soft), k, False)
            if r is not None:
                c = c + r
            c_z, c_zt = c.unbind(0)
            (d_c,) = torch.autograd.grad((c_z - c_zt).sum(), a, create_graph=tuning)
            centred = (f_b.detach() - c_zt).reshape(*c_zt.shape, *([1] * dist.event_dims))
            grad = over_samples(centred * (b - probs), samples) + (d_c if samples == 1 else d_c / samples)
        return grad, f_b, theta


class RELAX(REBAR):
    """``relax`` (Grathwohl et al. 2018): REBAR's control variate plus a small network ``r_ρ(σ(z/λ))``,
    all tuned online. Unbiased; 3 evaluations per sample.
    """

    name = "relax"
    description = "RELAX (Grathwohl 2018): REBAR's control variate plus a learned network r(σ(z/λ)), all tuned"

    def __init__(self, eta: float = 1.0, temperature: float = 0.5, hidden: int = 10, tune: bool = True,
                 lr: float = 4e-2, tune_every: int = 4):
        super().__init__(eta, temperature, tune, lr, tune_every)
        self.hidden = check_count(hidden, "hidden")

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
        first = self.draw(h * n + h, 1 / math.sqrt(n), like, generator)
        self.grow(torch.cat([first, first.new_zeros(h + 1)]))  # last layer 0: starts as REBAR

    def sizes(self):
        h = self.hidden
        return [1, 1, h * self.units(), h, h, 1]

    def constants(self, parts):
        w1, b1, w2, b2 = parts[2:]
        eta, inv_lam, eta_inv_lam, one = super().constants(parts)
        w1 = w1.view(self.hidden, -1)
        return eta, inv_lam, eta_inv_lam, one, w1.t(), w1 * inv_lam, b1, w2, b2

    def network(self, soft, k, slope):
        """``r(σ) = w2·tanh(W1 σ + b1) + b2`` and, if ``slope``, ``∂r/∂σ / λ = (W1/λ)ᵀ (w2 ⊙ (1 − tanh²))``, by hand."""
        w1t, w1_lam, b1, w2, b2 = k[4:]
        hid = torch.tanh(torch.addmm(b1, soft.reshape(-1, soft.shape[-1]), w1t))     # (m, hidden)
        r = torch.addmv(b2, hid, w2).view(soft.shape[:-1])
        if not slope:
            return r, None
        return r, (torch.addcmul(w2, hid.square(), w2, value=-1) @ w1_lam).view(soft.shape)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, units={self.units()}, " + super().extra_repr()
