"""Noise for stochastic neurons, drawn from a ``torch.Generator`` when one is given.

Every random number in stochgrad comes through :func:`uniform`, so a run that passes a generator
repeats exactly, and estimators that must share noise (antithetic pairs, common random numbers)
share it explicitly.
"""
from __future__ import annotations

import torch
from torch import Tensor


def uniform(shape, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """U[0, 1) noise of ``shape`` with the dtype and device of ``like``."""
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def bernoulli_from_uniform(u: Tensor, probs: Tensor) -> Tensor:
    """Seed Eq. 2, corrected (see NOTES.md): ``h = 1[u < σ(a)]``, so P(h = 1) = σ(a).

    ``u``: ``(*lead, *batch, n)``; ``probs``: ``(*batch, n)``. Returns ``h`` in {0, 1}, dtype of ``probs``.
    """
    return (u < probs).to(probs.dtype)


def bernoulli(probs: Tensor, lead: tuple[int, ...] = (), generator: torch.Generator | None = None) -> Tensor:
    """Samples ``h ~ Bernoulli(probs)`` of shape ``(*lead, *probs.shape)``."""
    return bernoulli_from_uniform(uniform((*lead, *probs.shape), probs, generator), probs)


def logistic_from_uniform(u: Tensor) -> Tensor:
    """Logistic noise ``log u − log(1 − u)``; ``1[a + logistic > 0]`` fires with probability σ(a)."""
    return torch.logit(u, eps=torch.finfo(u.dtype).eps)
