"""RODEO (Shi, Zhou, Hwang, Titsias & Mackey 2022): discrete Stein control variates on leave-one-out.

A Stein operator ``A`` for ``q = Π_i Bernoulli(p_i)`` maps any function ``h`` to one with ``E_q[A h] = 0``.
RODEO uses the Gibbs operator (one coordinate resampled from ``q``, chosen uniformly)::

    (A h)(x) = (1/n) Σ_i q_i(¬x_i)·(h(x^{(i)}) − h(x)),      x^{(i)} = x with unit i flipped

(zero mean: the terms for ``x`` and ``x^{(i)}`` cancel in pairs). For sample ``k`` of ``K = samples``,
``h`` is a learned surrogate of ``f`` built from the *other* samples only: a small network of the
first-order Taylor expansion of ``f`` about them, ``t_k(y) = ḡ_{−k}·y − mean_{j≠k} g_j·b_j``
(``g_j = ∂f/∂b`` at ``b_j``), and of their mean loss ``f̄_{−k}``, with two outputs ``(h⁰, h¹)``::

    ĝ = (1/K) Σ_k [ (f_k − mean_{j≠k}(f_j + α·(A h⁰_j)(b_j)))·(b_k − p) + β·(A [h¹_k·(· − p)])(b_k) ]

The first control variate sits in the leave-one-out baseline, the second is the Stein operator
applied to ``h¹(y)·∇_a log q(y) = h¹(y)(y − p)``. Each has mean zero given the other samples, since
the surrogate of sample ``j`` does not depend on ``b_j``: the estimate is unbiased for every
``(α, β, network)``, starts as ``reinforce_loo`` (``α = β = 0``) and is tuned online to minimise its
variance ([`Tuned`][stochgrad.estimators.base.Tuned]), as the paper does (checked against the official
code, thjashin/rodeo, its ``discrete_stein_avg`` estimator; the network is the paper's: two affine
maps of the inputs summed, LeakyReLU(0.3), affine to 2 outputs). Costs ``K`` evaluations of ``f``, one
backward pass through ``f`` for the slopes, and ``K(n + 1)`` evaluations of the small network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..baselines import leave_one_out_mean
from ..options import WIDTH
from .double_cv import SlopeControlVariate


def surrogate_size(hidden: int) -> int:
    """Values of the surrogate network of width ``hidden``: two affine maps ``1 → hidden`` and one ``hidden → 2``."""
    return 6 * hidden + 2


def stein_surrogate(weights: Tensor, t: Tensor, level: Tensor) -> Tensor:
    """``(t, f̄) ↦ (h⁰, h¹)``: ``t``, ``f̄`` of any shape ``s`` (broadcastable) to ``(*s, 2)``; ``weights``: the
    network's [`surrogate_size`][stochgrad.estimators.rodeo.surrogate_size] values, ``[w_t, b_t, w_f, b_f]`` (``hidden`` each), ``W_out`` (``2·hidden``),
    ``b_out`` (2) — the paper's: two affine maps of the inputs summed, LeakyReLU(0.3), affine to 2 outputs."""
    h = (weights.numel() - 2) // 6
    w_t, b_t, w_f, b_f = weights[:4 * h].view(4, h)
    w_out, b_out = weights[4 * h:6 * h].view(2, h), weights[6 * h:]
    t, level = t.to(weights.dtype).unsqueeze(-1), level.to(weights.dtype).unsqueeze(-1)
    z = t * w_t + b_t + level * w_f + b_f
    return F.leaky_relu(z, 0.3) @ w_out.T + b_out


def rodeo_gradient(b, probs, losses, slopes, surrogate, alpha, beta) -> Tensor:
    """The estimate above: ``b`` ``(K, *batch, n)``, ``losses`` ``(K, *batch)``, ``slopes`` like ``b`` → ``(*batch, n)``."""
    n = b.shape[-1]
    score, flip = b - probs, 1 - 2 * b                    # x^{(i)} − x = flip_i e_i
    g_other = leave_one_out_mean(slopes)                    # ḡ_{−k}
    t_x = (g_other * b).sum(-1) - leave_one_out_mean((slopes * b).sum(-1))   # t_k(b_k), (K, *batch)
    t_flip = t_x.unsqueeze(-1) + g_other * flip             # t_k(b_k^{(i)}), (K, *batch, n)
    level = leave_one_out_mean(losses)                      # f̄_{−k}
    h_x = surrogate(t_x, level)                             # (K, *batch, 2)
    h_flip = surrogate(t_flip, level.unsqueeze(-1))         # (K, *batch, n, 2)
    w = probs * (1 - b) + (1 - probs) * b                   # q_i(¬x_i): the Gibbs kernel's flip probability
    d0 = h_flip[..., 0] - h_x[..., 0].unsqueeze(-1)
    d1 = h_flip[..., 1] - h_x[..., 1].unsqueeze(-1)
    stein_scalar = (w * d0).sum(-1) / n                                                        # (A h⁰)(b_k)
    stein_score = (score * (w * d1).sum(-1, keepdim=True) + w * h_flip[..., 1] * flip) / n     # A[h¹(y)(y − p)](b_k)
    centred = losses - leave_one_out_mean(losses + alpha * stein_scalar)
    return (centred.unsqueeze(-1) * score + beta * stein_score).mean(0)


class RODEO(SlopeControlVariate):
    """``rodeo`` (Shi et al. 2022): ``reinforce_loo`` plus discrete (Gibbs) Stein control variates of a
    learned surrogate of ``f`` built from the other samples (module docstring). Unbiased;
    ``samples >= 2`` and a backward pass to ``b``.

    Tuned values ([`Tuned`][stochgrad.estimators.base.Tuned]): ``theta = [α, β, network]``, ``α = β = 0`` at
    first (``reinforce_loo``); the network ([`stein_surrogate`][stochgrad.estimators.rodeo.stein_surrogate]) is initialised like PyTorch's
    ``nn.Linear`` from the first call's generator.

    Args:
        hidden: the surrogate network's width.
        tune: train the surrogate online to minimise the variance.
        lr: the tuner's learning rate; ``tune_every``: training calls per tuning step.
    """

    name = "rodeo"
    description = ("RODEO (Shi et al. 2022): reinforce_loo + discrete (Gibbs) Stein control variates of a "
                   "learned Taylor surrogate; tuned")

    def __init__(self, hidden: int = 100, tune: bool = True, lr: float = 1e-2, tune_every: int = 1):
        self.hidden = WIDTH.check(hidden, "hidden")
        super().__init__([0.0, 0.0], tune, lr, tune_every)

    def state_meaning(self) -> dict:
        return {**super().state_meaning(), "hidden": self.hidden}   # how theta's surrogate network is cut

    def prepare(self, n, like, generator):
        if self.theta.numel() == 2:   # first use: the network, nn.Linear's initialisation (bound 1/√fan_in)
            h = self.hidden
            self.grow(torch.cat([self.draw(4 * h, 1.0, like, generator),
                                 self.draw(2 * h + 2, h ** -0.5, like, generator)]))
        elif self.theta.numel() != 2 + surrogate_size(self.hidden):
            raise ValueError(f"rodeo: a state of {self.theta.numel()} values does not fit hidden={self.hidden}")

    def gradient(self, b, probs, losses, slopes, theta):
        weights = theta[2:]
        return rodeo_gradient(b, probs, losses, slopes, lambda t, level: stein_surrogate(weights, t, level),
                              theta[0], theta[1])

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, " + super().extra_repr()
