"""Ground truth by enumeration: exact ``E[f(h)]`` and its gradient over every state of the units.

Bernoulli units: all ``2^n`` states (n ≤ 20); categorical units: all ``K^n`` (≤ 2^20). The states and
their probabilities come from the distribution ([`stochgrad.distributions`][stochgrad.distributions]).

Memory is bounded: ``f`` sees the states in chunks of at most [`CHUNK_ELEMENTS`][stochgrad.exact.CHUNK_ELEMENTS] sample entries
(``states × batch × event``), and under autograd each chunk is recomputed in the backward pass
(``torch.utils.checkpoint``), so n = 20 with a batch of 64 needs some hundred megabytes, not the
``2^n × batch × n`` (5 GiB in float32) of a single call.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .distributions import CATEGORICAL, all_states, get_distribution, log_prob  # noqa: F401  (public here since the start)

MAX_UNITS = 20
CHUNK_ELEMENTS = 1 << 23   # sample entries per call of f (32 MiB of float32 samples)


def _log_prob_affine(logits: Tensor, dist) -> tuple[Tensor, Tensor]:
    """``(θ, c)`` with ``log P(h) = h·θ + c`` per example: ``θ`` ``(m, B)``, ``c`` ``(B,)`` for ``m`` event entries.

    ``log P`` is affine in ``h`` for Bernoulli and categorical units (exponential families whose sufficient
    statistic is ``h``), so ``c = log P(0)`` and ``θ_j = log P(e_j) − c`` (for Bernoulli units ``θ = a``),
    from ``m + 1`` evaluations of the distribution's own ``log_prob``.
    """
    event = logits.shape[logits.dim() - dist.event_dims:]
    batch = logits.shape[:logits.dim() - dist.event_dims]
    m = math.prod(event)
    basis = torch.cat([logits.new_zeros(1, m), torch.eye(m, dtype=logits.dtype, device=logits.device)])
    lp = dist.log_prob(basis.reshape(m + 1, *([1] * len(batch)), *event).expand(m + 1, *batch, *event), logits)
    lp = lp.reshape(m + 1, -1)
    # a masked class (log P = −inf) as the lowest finite number: its states get probability 0, not 0·inf = NaN
    return (lp[1:] - lp[:1]).clamp_min(torch.finfo(lp.dtype).min), lp[0]


def _partial_sum(f, logits: Tensor, states: Tensor, dist) -> Tensor:
    """``Σ_h P(h) f(h)`` over the given ``states`` ``(c, *event)``: ``(*batch,)``."""
    c, event = states.shape[0], states.shape[1:]
    batch = logits.shape[:logits.dim() - dist.event_dims]
    theta, const = _log_prob_affine(logits, dist)
    log_p = (states.reshape(c, -1) @ theta + const).reshape(c, *batch)   # one matrix product, no (c, *batch, *event) temporary
    h = states.reshape(c, *([1] * len(batch)), *event).expand(c, *batch, *event)
    return (log_p.exp() * f(h)).sum(0)


def exact_expectation(f: Callable[[Tensor], Tensor], logits: Tensor, distribution: str | None = None) -> Tensor:
    """``E[f(h)] = Σ_h P(h) f(h)``, ``(*batch,)``, differentiable in ``logits`` and in f's parameters.

    ``f`` is called on the states, ``(N, *batch, *event)``, all at once when ``N × batch × event`` is at
    most [`CHUNK_ELEMENTS`][stochgrad.exact.CHUNK_ELEMENTS], else on consecutive chunks of them; ``distribution``:
    ``None``/``"bernoulli"`` (logits ``(*batch, n)``) or ``"categorical"`` (logits ``(*batch, n, K)``; ``f`` of class
    indices with ``"categorical_index"``).
    """
    dist = get_distribution(distribution)
    if dist.sample_dims < dist.event_dims:   # f of class indices: the one-hot law's sum, f reading each state's indices
        f, dist = (lambda h, f=f: f(h.argmax(-1))), CATEGORICAL
    states = dist.states(logits)
    per_state = math.prod(logits.shape)   # batch × event entries of one state across the batch
    per = max(1, CHUNK_ELEMENTS // max(1, per_state))
    if per >= states.shape[0]:
        return _partial_sum(f, logits, states, dist)
    value = None
    for chunk in states.split(per):
        if torch.is_grad_enabled():  # keep only the inputs; recompute the chunk in the backward pass
            part = checkpoint(_partial_sum, f, logits, chunk, dist, use_reentrant=False)
        else:
            part = _partial_sum(f, logits, chunk, dist)
        value = part if value is None else value + part
    return value


def exact_gradient(f: Callable[[Tensor], Tensor], logits: Tensor, distribution: str | None = None) -> tuple[Tensor, Tensor]:
    """``(E[f], ∇_logits E[f])`` for every example: shapes ``(*batch,)`` and ``logits.shape``."""
    a = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        value = exact_expectation(f, a, distribution)
        (grad,) = torch.autograd.grad(value.sum(), a)
    return value.detach(), grad
