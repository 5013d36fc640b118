"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018): unbiased control variates built on the
Concrete relaxation, whose own parameters are tuned online to minimise the estimator's variance.

With ``z = a + logistic(u)``, ``b = 1[z > 0]``, ``z̃ ~ p(z | b)`` (conditional reparameterisation) and a
control variate ``c(z)``::

    ĝ = [f(b) − c(z̃)]·(b − σ(a)) + ∂_a c(z) − ∂_a c(z̃)                  (Grathwohl et al., Eq. 6)

is unbiased for any ``c``. REBAR: ``c(z) = η·f(σ(z/λ))``; RELAX adds a small network ``r_ρ(σ(z/λ))``.
Because ``E[ĝ]`` does not depend on ``(η, λ, ρ)``, the gradient of ``E[ĝ²]`` is that of the variance:
each training call takes one Adam step on it (``tune=True``), a step the estimator object owns
(:class:`~stochgrad.estimators.base.Tuned`, shared with ``double_cv`` and ``rodeo``).
Costs 3 evaluations of ``f`` per sample (at ``b``, ``σ(z/λ)``, ``σ(z̃/λ)``).

Categorical units (Tucker et al. 2017 §3.3 and appendix; Grathwohl et al. 2018 §3.3): ``z = a + Gumbel``,
``b = onehot(argmax z)``, ``z̃`` the conditional Gumbel given ``b``, ``softmax(·/λ)`` for ``σ(·/λ)`` and the
score ``onehot − softmax(a)``: the same formula through :mod:`stochgrad.distributions`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..distributions import BERNOULLI, conditional_logistic  # noqa: F401  (conditional_logistic: public here)
from ..expect import attach_gradient
from .base import Tuned


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

    def __init__(self, eta: float = 1.0, temperature: float = 0.5, tune: bool = True, lr: float = 1e-2):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.eta = nn.Parameter(torch.tensor(float(eta)))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.tune, self.lr = tune, lr

    def evaluations(self, n, samples=1):
        return 3 * samples

    def extra(self, soft):
        """The part of the control variate beyond ``η·f``: none for REBAR."""
        return 0.0

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        probs = dist.probs(logits.detach())
        shape = (samples, *logits.shape)
        u, v = dist.uniform(shape, logits, generator), dist.uniform(shape, logits, generator)
        b = dist.hard(dist.perturb(logits.detach(), u))
        if not logits.requires_grad:
            return f(b).mean(0)
        with torch.enable_grad():
            a = logits.detach().requires_grad_(True)
            lam = self.log_temperature.exp().to(a.dtype)
            soft_z = dist.soften(dist.perturb(a, u), lam)
            soft_zt = dist.soften(dist.conditional(v, b, a), lam)
            f_b = f(b)                                   # (S, *batch): the value, and f's own gradient
            f_z, f_zt = f(torch.stack([soft_z, soft_zt]))  # the control variate's graph, kept apart
            eta = self.eta.to(a.dtype)
            c_z = eta * f_z + self.extra(dist.flat(soft_z))
            c_zt = eta * f_zt + self.extra(dist.flat(soft_zt))
            tuning = self.tune and self.training
            (d_c,) = torch.autograd.grad((c_z - c_zt).sum(), a, create_graph=tuning)
            centred = (f_b.detach() - c_zt).reshape(*c_zt.shape, *([1] * dist.event_dims))
            grad = (centred * (b - probs)).mean(0) + d_c / samples
            if tuning:
                self._tune_step(grad, dist.event_dims)
        return attach_gradient(f_b.mean(0), logits, grad.detach())

    def extra_repr(self) -> str:
        return f"tune={self.tune}, lr={self.lr}"


class RELAX(REBAR):
    """``relax`` (Grathwohl et al. 2018): REBAR's control variate plus a small network ``r_ρ(σ(z/λ))``,
    all tuned online. Unbiased; 3 evaluations per sample.
    """

    name = "relax"
    description = "RELAX (Grathwohl 2018): REBAR's control variate plus a learned network r(σ(z/λ)), all tuned"

    def __init__(self, eta: float = 1.0, temperature: float = 0.5, hidden: int = 16, tune: bool = True,
                 lr: float = 1e-2):
        super().__init__(eta, temperature, tune, lr)
        self.hidden = hidden
        self.surrogate = None  # n -> hidden -> 1, built at first use (or from a loaded state_dict)

    def _build(self, n, dtype=None, device=None):
        self.surrogate = nn.Sequential(nn.Linear(n, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1)).to(
            dtype=dtype, device=device)
        nn.init.zeros_(self.surrogate[2].weight)  # starts as REBAR: r = 0
        nn.init.zeros_(self.surrogate[2].bias)
        self._optimizer = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "surrogate.0.weight")
        if weight is not None and self.surrogate is None:
            self._build(weight.shape[1], weight.dtype, weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra(self, soft):
        if self.surrogate is None:
            self._build(soft.shape[-1], soft.dtype, soft.device)
        elif self.surrogate[0].in_features != soft.shape[-1]:
            raise ValueError(f"relax's surrogate takes {self.surrogate[0].in_features} units but got "
                             f"{soft.shape[-1]}: keep one estimator object per stochastic site")
        return self.surrogate(soft.to(self.surrogate[0].weight.dtype)).squeeze(-1).to(soft.dtype)
