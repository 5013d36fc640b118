"""Double control variates (Titsias & Shi 2022): leave-one-out plus a first-order Taylor control variate.

With ``K = samples`` draws ``b_k``, their losses ``f_k``, the slopes ``g_k = ∂f/∂b`` at ``b_k`` (``f``
read as a function of real-valued ``b``) and ``ḡ_{−k}`` the mean slope of the other samples, the
second control variate of sample ``k`` is the linear term of the Taylor expansion of ``f`` about the
other samples, ``c_k = α·ḡ_{−k}·(b_k − p)``. It enters the leave-one-out estimator on both sides and its
expectation is added back in closed form (``E[(b − p)(b − p)ᵀ] = diag p(1 − p)``)::

    ĝ = (1/K) Σ_k (f_k + c_k − mean_{j≠k}(f_j + c_j))·(b_k − p) − α·mean_k g_k ⊙ p(1 − p)

(Titsias & Shi 2022, the double control variate for REINFORCE leave-one-out; checked against the
official code, thjashin/double-cv). Every term added has mean zero: ``c_j``'s factor ``b_j − p`` is
independent of the other samples, and ``c_k``'s mean is ``α·E[ḡ] ⊙ p(1 − p)``. So the estimate is
unbiased for every ``α``; ``α`` starts at 0 (plain ``reinforce_loo``) and is tuned online to minimise
the variance ([`Tuned`][stochgrad.estimators.base.Tuned]). Costs ``K`` evaluations of ``f`` and one
backward pass through ``f`` to the samples (for the slopes; an ``f`` not differentiable in ``b``
gives zero slopes, and the estimator is then ``reinforce_loo``).
"""
from __future__ import annotations

import abc

import torch
from torch import Tensor

from ..baselines import leave_one_out_mean
from ..distributions import BERNOULLI
from ..gradient import attach_gradient
from ..options import FINITE
from .base import Tuned


def loss_and_slope(f, b: Tensor) -> tuple[Tensor, Tensor]:
    """``f(b)`` ``(K, *batch)``, keeping its graph to f's parameters, and ``∂f(b_k)/∂b_k`` ``(K, *batch, n)``: one
    vector-Jacobian product (``torch.func.vjp``: ``b`` itself never requires grad, so the model's backward pass
    computes and keeps no gradient for it, and ``torch.compile`` traces it)."""
    with torch.enable_grad():
        losses, pull = torch.func.vjp(f, b.detach())
        (slope,) = pull(torch.ones_like(losses))
    return losses, slope.detach()


def double_cv_gradient(b: Tensor, probs: Tensor, losses: Tensor, slopes: Tensor, alpha: Tensor) -> Tensor:
    """The estimate above from samples ``b`` ``(K, *batch, n)``, ``losses`` ``(K, *batch)``, slopes like ``b``."""
    score = b - probs
    c = alpha * (leave_one_out_mean(slopes) * score).sum(-1)        # (K, *batch)
    centred = losses + c - leave_one_out_mean(losses + c)
    return (centred.unsqueeze(-1) * score).mean(0) - alpha * slopes.mean(0) * probs * (1 - probs)


class SlopeControlVariate(Tuned):
    """Shared by ``double_cv`` and ``rodeo``: ``K`` Bernoulli samples, their losses and slopes
    ([`loss_and_slope`][stochgrad.estimators.double_cv.loss_and_slope]), a control-variate gradient built on leave-one-out ([`gradient`][stochgrad.estimators.double_cv.SlopeControlVariate.gradient], the only
    part that differs) from the tuned values ``theta``, and the tuning step on its variance
    ([`Tuned`][stochgrad.estimators.base.Tuned])."""

    min_samples = 2
    cost = "S + backward"

    @abc.abstractmethod
    def gradient(self, b: Tensor, probs: Tensor, losses: Tensor, slopes: Tensor, theta: Tensor) -> Tensor:
        """``(K, *batch, n)`` samples, ``(K, *batch)`` losses, slopes like ``b``, the tuned values → ``(*batch, n)``."""

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        probs = dist.probs(logits.detach())
        b = dist.sample(probs, (samples,), generator)
        if not logits.requires_grad or probs.numel() == 0:  # no gradient wanted, or an empty batch: no state touched
            if logits.requires_grad:
                self.join(probs, probs.shape[-1], generator)   # (under torch.distributed: the ranks' collectives)
            return attach_gradient(f(b).mean(0), logits, torch.zeros_like(probs), dist.masks)
        losses, slopes = loss_and_slope(f, b)
        tuning = self.begin(probs, probs.shape[-1], generator)
        with torch.set_grad_enabled(tuning):
            theta = self.values(tuning)
            grad = self.gradient(b, probs, losses.detach(), slopes, theta)
            self.check_losses(losses)
            if tuning:
                self.tune_on(grad, theta)
        self.end()
        return attach_gradient(losses.mean(0), logits, grad.detach(), dist.masks)


class DoubleCV(SlopeControlVariate):
    """``double_cv`` (Titsias & Shi 2022): ``reinforce_loo`` plus ``α`` times a first-order Taylor control
    variate from the other samples' slopes, its mean added back (module docstring). Unbiased;
    ``samples >= 2`` and a backward pass to ``b``.

    Args:
        alpha: the Taylor term's initial weight (``theta = [α]``).
        tune: tune ``α`` online to minimise the variance.
        lr: the tuner's learning rate; ``tune_every``: training calls per tuning step (2: at equal steps, the variance
            after tuning every second call was that of tuning every call within 0.3 % on the linear VAE, 3 seeds × 4
            checkpoints, ``benchmarks/tune_every.py``, and a step costs 5 % less; RODEO's lost 1–3 %, so it tunes
            every call).
    """

    name = "double_cv"
    description = ("double CV (Titsias & Shi 2022): reinforce_loo + α·(Taylor term from the other samples' "
                   "∂f/∂b), its mean added back; α tuned")

    def __init__(self, alpha: float = 0.0, tune: bool = True, lr: float = 1e-2, tune_every: int = 2):
        FINITE.check(alpha, "alpha")
        super().__init__([alpha], tune, lr, tune_every)

    @property
    def alpha(self) -> Tensor:
        return self.theta[0]

    def gradient(self, b, probs, losses, slopes, theta):
        return double_cv_gradient(b, probs, losses, slopes, theta[0])
