"""Ground truth by enumeration: exact ``E[f(b)]`` and its gradient over all ``2^n`` states (n ≤ 20)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_UNITS = 20


def all_states(n: int, like: Tensor) -> Tensor:
    """All ``2^n`` binary vectors, ``(2^n, n)``, dtype and device of ``like``; row ``k`` is ``k`` in binary."""
    if n > MAX_UNITS:
        raise ValueError(f"exact enumeration needs n <= {MAX_UNITS} units (2^n states); got n = {n}")
    bits = torch.arange(n - 1, -1, -1, device=like.device)
    return ((torch.arange(2 ** n, device=like.device).unsqueeze(-1) >> bits) & 1).to(like.dtype)


def log_prob(b: Tensor, logits: Tensor) -> Tensor:
    """``log P(b)`` under independent Bernoulli(σ(logits)) units, summed over the last dimension."""
    return (b * F.logsigmoid(logits) + (1 - b) * F.logsigmoid(-logits)).sum(-1)


def exact_expectation(f, logits: Tensor) -> Tensor:
    """``E[f(b)] = Σ_b P(b) f(b)``, ``(*batch,)``, differentiable in ``logits`` and in f's parameters.

    ``f`` is called once on all states, ``(2^n, *batch, n)``.
    """
    *batch, n = logits.shape
    states = all_states(n, logits).reshape(2 ** n, *([1] * len(batch)), n).expand(2 ** n, *batch, n)
    return (log_prob(states, logits).exp() * f(states)).sum(0)


def exact_gradient(f, logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(E[f], ∇_logits E[f])`` for every example: shapes ``(*batch,)`` and ``(*batch, n)``."""
    a = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        value = exact_expectation(f, a)
        (grad,) = torch.autograd.grad(value.sum(), a)
    return value.detach(), grad
