"""Ground truth by enumeration: exact ``E[f(h)]`` and its gradient over every state of the units.

Bernoulli units: all ``2^n`` states (n ≤ 20); categorical units: all ``K^n`` (≤ 2^20). The states and
their probabilities come from the distribution (:mod:`stochgrad.distributions`).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .distributions import all_states, get_distribution, log_prob  # noqa: F401  (public here since the start)

MAX_UNITS = 20


def exact_expectation(f: Callable[[Tensor], Tensor], logits: Tensor, distribution: str | None = None) -> Tensor:
    """``E[f(h)] = Σ_h P(h) f(h)``, ``(*batch,)``, differentiable in ``logits`` and in f's parameters.

    ``f`` is called once on all states, ``(N, *batch, *event)``; ``distribution``: ``None``/``"bernoulli"``
    (logits ``(*batch, n)``) or ``"categorical"`` (logits ``(*batch, n, K)``).
    """
    dist = get_distribution(distribution)
    event = logits.shape[logits.dim() - dist.event_dims:]
    batch = logits.shape[:logits.dim() - dist.event_dims]
    states = dist.states(logits)
    states = states.reshape(states.shape[0], *([1] * len(batch)), *event).expand(states.shape[0], *batch, *event)
    return (dist.log_prob(states, logits).exp() * f(states)).sum(0)


def exact_gradient(f: Callable[[Tensor], Tensor], logits: Tensor, distribution: str | None = None) -> tuple[Tensor, Tensor]:
    """``(E[f], ∇_logits E[f])`` for every example: shapes ``(*batch,)`` and ``logits.shape``."""
    a = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        value = exact_expectation(f, a, distribution)
        (grad,) = torch.autograd.grad(value.sum(), a)
    return value.detach(), grad
