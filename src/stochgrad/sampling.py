"""Noise for stochastic neurons, drawn from a ``torch.Generator`` when one is given.

Every random number in stochgrad comes through [`uniform`][stochgrad.sampling.uniform], so a run that passes a generator
repeats exactly, and estimators that must share noise (antithetic pairs, common random numbers)
share it explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Sharded:
    """A generator shared by ``world`` ranks that each hold one contiguous slice of the batch.

    Every draw is made for the whole batch (``world`` times the local one, along the batch dimension,
    the one before the units) and this ``rank`` keeps its rows: ranks with the same seed see exactly
    the noise one process with the whole batch would see, and their streams stay aligned.
    """

    generator: torch.Generator
    rank: int
    world: int

    def draw(self, fn, shape, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        shape, dtype = tuple(shape), dtype or like.dtype
        if len(shape) < 2:
            return fn(shape, generator=self.generator, dtype=dtype, device=like.device)
        full = fn((*shape[:-2], shape[-2] * self.world, shape[-1]), generator=self.generator, dtype=dtype,
                  device=like.device)
        return full.narrow(-2, self.rank * shape[-2], shape[-2])


def uniform(shape, like: Tensor, generator: "torch.Generator | Sharded | None" = None,
            dtype: torch.dtype | None = None) -> Tensor:
    """U[0, 1) noise of ``shape`` on the device of ``like``, in its dtype or ``dtype``."""
    dtype = dtype or like.dtype
    if generator is None:  # no generator=None keyword: torch.compile's dynamic shapes reject it
        return torch.rand(shape, dtype=dtype, device=like.device)
    if isinstance(generator, Sharded):
        return generator.draw(torch.rand, shape, like, dtype)
    return torch.rand(shape, generator=generator, dtype=dtype, device=like.device)


def normal(shape, like: Tensor, generator: "torch.Generator | Sharded | None" = None) -> Tensor:
    """N(0, 1) noise of ``shape`` with the dtype and device of ``like``."""
    if isinstance(generator, Sharded):
        return generator.draw(torch.randn, shape, like)
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def bernoulli_from_uniform(u: Tensor, probs: Tensor) -> Tensor:
    """Seed Eq. 2, corrected (docs: "The paper, with corrections"): ``h = 1[u < σ(a)]``, so P(h = 1) = σ(a).

    ``u``: ``(*lead, *batch, n)``; ``probs``: ``(*batch, n)``. Returns ``h`` in {0, 1}, dtype of ``probs``.
    """
    return (u < probs).to(probs.dtype)


def bernoulli_from_uniform_(u: Tensor, probs: Tensor) -> Tensor:
    """[`bernoulli_from_uniform`][stochgrad.sampling.bernoulli_from_uniform] written over ``u`` (a buffer of the caller's own, in ``probs``' dtype, of the
    result's shape): the same values in one pass, no boolean buffer and no conversion pass (a ``(128, 1024)``
    float32 threshold ~20 µs instead of ~190 µs on the CPU). Under a transform that refuses the in-place write
    (``torch.func.vmap``), the same values in a buffer of their own."""
    try:
        return u.lt_(probs.detach() if probs.requires_grad else probs)  # (h carries no gradient, as the comparison)
    except RuntimeError:
        return bernoulli_from_uniform(u, probs)


def bernoulli(probs: Tensor, lead: tuple[int, ...] = (), generator: torch.Generator | None = None) -> Tensor:
    """Samples ``h ~ Bernoulli(probs)`` of shape ``(*lead, *probs.shape)``: ``1[u < probs]`` written over the fresh
    noise ``u`` ([`bernoulli_from_uniform_`][stochgrad.sampling.bernoulli_from_uniform_]); a [`Sharded`][stochgrad.sampling.Sharded] draw's ``u`` is a view into every rank's draw,
    so its ``h`` gets a buffer of its own (the whole draw is not kept alive).

    Resolution: ``u`` is drawn in ``probs``' dtype, on float32's grid of 2⁻²⁴, so a float32 unit with
    ``σ(a) < 2⁻²⁴`` (``a < −16.6``) fires with probability 2⁻²⁴ (once in 16.7 million draws) instead of ``σ(a)``
    (σ(−30) = 9·10⁻¹⁴); float64 logits resolve down to 2⁻⁵³ (``a > −36.7``). float64 noise for float32 logits would
    cost about 45% more sampling at 10⁶ units on every call: pass float64 logits where such rare firing matters."""
    u = uniform((*lead, *probs.shape), probs, generator)
    if isinstance(generator, Sharded):
        return bernoulli_from_uniform(u, probs)
    return bernoulli_from_uniform_(u, probs)


def logistic_from_uniform(u: Tensor) -> Tensor:
    """Logistic noise ``log u − log(1 − u)``; ``1[a + logistic > 0]`` fires with probability σ(a)."""
    return torch.logit(u, eps=torch.finfo(u.dtype).eps)


def gumbel_from_uniform(u: Tensor) -> Tensor:
    """Gumbel noise ``−log(−log u)``; ``argmax(a + Gumbel)`` is class ``k`` with probability softmax(a)_k. ``u = 0``
    (probability 2⁻²⁴ per draw in float32) gives ``−inf``: that class is not chosen, the limit of the law."""
    return -torch.log(-torch.log(u))


# The leading sample dimension of an estimator's draw: none for one sample (the fast path), ``(S,)`` for ``S``.

def sample_mean(x: Tensor) -> Tensor:
    """Mean over the leading sample dimension (a free view when there is one sample)."""
    return x[0] if x.shape[0] == 1 else x.mean(0)


def lead(samples: int) -> tuple[int, ...]:
    """The leading sample shape of an estimator's draw: none for one sample (the fast path: no sample
    dimension to select from or average over), ``(samples,)`` otherwise."""
    return () if samples == 1 else (samples,)


def over_samples(x: Tensor, samples: int) -> Tensor:
    """Mean over the leading sample dimension that [`lead`][stochgrad.sampling.lead] gave ``x`` (none for one sample)."""
    return x if samples == 1 else x.mean(0)
