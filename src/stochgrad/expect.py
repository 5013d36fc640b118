"""The functional view: ``expect(f, logits, estimator)``, one Monte-Carlo expectation over discrete units.

Shapes: ``logits`` is ``(*batch, n)``; unit ``i`` fires with probability ``sigmoid(logits[..., i])``.
``f`` maps samples ``(*lead, *batch, n)`` in {0, 1} to per-sample losses ``(*lead, *batch)``.
Categorical units (:mod:`stochgrad.distributions`): logits ``(*batch, n, K)``, one-hot samples
``(*lead, *batch, n, K)``, the same losses ``(*lead, *batch)``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .distributions import BERNOULLI
from .distributions import resolve as as_distribution
from .sampling import Sharded

LossFn = Callable[[Tensor], Tensor]


def check_logits(logits, name: str = "logits") -> Tensor:
    """Raises a clear error unless ``logits`` is a finite floating tensor with a unit dimension."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (*batch, n), got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64), got dtype {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (*batch, n) with n >= 1 units, got {tuple(logits.shape)}")
    # one reduction: a NaN or inf anywhere makes the sum non-finite (confirmed element-wise before raising)
    if not torch.isfinite(logits.detach().sum()) and not torch.isfinite(logits).all():
        raise ValueError(f"{name} must be finite; got NaN or inf in a tensor of shape {tuple(logits.shape)}")
    return logits


def check_samples(samples, minimum: int = 1, who: str = "") -> int:
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise TypeError(f"samples must be an int >= {minimum}, got {samples!r}")
    if samples < minimum:
        extra = f" ({who} needs at least {minimum})" if who and minimum > 1 else ""
        raise ValueError(f"samples must be >= {minimum}{extra}, got {samples}")
    return samples


class CheckedLoss:
    """Wraps the user's ``f`` and checks that every output has shape ``(*lead, *batch)`` = ``b.shape[:-1]``
    (``b.shape[:-2]`` for categorical samples ``(*lead, *batch, n, K)``: ``event_dims = 2``)."""

    __slots__ = ("f", "event_dims")

    def __init__(self, f: LossFn, event_dims: int = 1):
        if not callable(f):
            raise TypeError(f"f must be callable, mapping (*lead, *batch, n) samples to (*lead, *batch) losses; got {type(f).__name__}")
        self.f, self.event_dims = f, event_dims

    def __call__(self, b: Tensor) -> Tensor:
        out = self.f(b)
        if not isinstance(out, Tensor) or out.shape != b.shape[:b.dim() - self.event_dims]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            units = "n" if self.event_dims == 1 else "n, K"
            raise ValueError(f"f must return per-sample losses of shape (*lead, *batch) = "
                             f"{tuple(b.shape[:b.dim() - self.event_dims])} for samples (*lead, *batch, {units}) of "
                             f"shape {tuple(b.shape)}; got {got}")
        return out


def sample_mean(x: Tensor) -> Tensor:
    """Mean over the leading sample dimension (a free view when there is one sample)."""
    return x[0] if x.shape[0] == 1 else x.mean(0)


def attach_gradient(value: Tensor, logits: Tensor, grad: Tensor) -> Tensor:
    """``value`` in the forward pass; in the backward pass ``d value[k] / d logits[k] := grad[k]``.

    The replace-gradient idiom: the surrogate ``Σ_i grad_i·logits_i`` minus its own detached copy adds
    zero to the value but carries ``grad`` to the logits. ``value``: ``batch``; ``grad``: ``(*batch, *event)``
    (``event`` = ``(n,)`` or ``(n, K)``). Gradients that ``value`` already carries (to parameters of f) are kept.
    """
    if not logits.requires_grad:
        return value
    surrogate = (grad.detach() * logits).flatten(value.dim()).sum(-1)
    return value + (surrogate - surrogate.detach())


def expect(f: LossFn, logits: Tensor, estimator="reinforce", samples: int = 1,
           generator: torch.Generator | None = None, distribution: str | None = None) -> Tensor:
    """Monte-Carlo estimate of ``E_{b ~ Bernoulli(σ(logits))}[f(b)]`` whose backward is an estimator's gradient.

    Categorical units: pass ``torch.distributions.OneHotCategorical(logits=a)`` as ``logits`` (or the
    tensor ``a`` with ``distribution="categorical"``): ``a`` is ``(*batch, n, K)``, ``f`` receives one-hot
    samples ``(*lead, *batch, n, K)`` and returns ``(*lead, *batch)``. A ``torch.distributions.Bernoulli``
    is the same as its logits.

    Args:
        f: maps samples ``(*lead, *batch, n)`` in {0, 1} to losses ``(*lead, *batch)``. It is called with a
            leading sample dimension (``samples``, antithetic pairs or relaxed points stacked on it) and
            may hold parameters of its own, which receive the ordinary pathwise gradient.
        logits: ``(*batch, n)``, float32 or float64, on any device.
        estimator: an estimator object, or a registered name (see :func:`stochgrad.estimators`).
            **A name is stateless**: it never carries state from one call to the next. Stateless
            estimators (``reinforce``, ``disarm``, ``straight_through``, ...) are built once and shared;
            a stateful one named by a string (``reinforce_ma``, ``reinforce_optimal``, ``learned``,
            ``rebar``, ``relax``) starts afresh on every call (no baseline yet, no tuning kept) and warns
            once. To keep its state, build it once per call site, ``est = sg.get_estimator(name)``, and
            pass ``est``: its state then lives in its buffers (``state_dict``, ``.to``, DDP).
        samples: Monte-Carlo samples per example (``>= 1``; ``reinforce_loo`` needs ``>= 2``).
        generator: source of all noise; pass one for exactly repeatable runs.
        distribution: ``None`` (from ``logits``: Bernoulli for a tensor), ``"bernoulli"`` or ``"categorical"``.

    Returns:
        ``(*batch,)``: the estimate of ``E[f(b)]`` per example. ``value.sum().backward()`` leaves in
        ``logits.grad[k]`` the estimator's gradient of example ``k``'s expected loss.
    """
    if isinstance(estimator, str) or not hasattr(estimator, "estimate"):
        from .estimators import resolve  # here: stochgrad.estimators imports this module

        estimator = resolve(estimator)
    est = estimator
    if type(logits) is not Tensor or distribution is not None:
        logits, dist = as_distribution(logits, distribution)
    else:
        dist = BERNOULLI
    check_logits(logits)
    if type(samples) is not int or samples != 1 or est.min_samples > 1:
        check_samples(samples, est.min_samples, est.name)
    if generator is not None and not isinstance(generator, (torch.Generator, Sharded)):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if dist is BERNOULLI:
        return est.estimate(CheckedLoss(f), logits, samples, generator)
    dist.check(logits)
    if dist.name not in getattr(est, "distributions", ("bernoulli",)):
        raise ValueError(unsupported(est, dist))
    return est.estimate(CheckedLoss(f, dist.event_dims), logits, samples, generator, dist=dist)


def unsupported(est, dist) -> str:
    """The error for an estimator asked for a distribution it does not declare, naming those that fit."""
    from .estimators import REGISTRY  # only on this error path: the registry imports this module

    fit = [name for name, cls in REGISTRY.items() if dist.name in getattr(cls, "distributions", ("bernoulli",))]
    return (f"estimator {est.name!r} does not support {dist.name} units (it supports "
            f"{', '.join(getattr(est, 'distributions', ('bernoulli',)))}); estimators for {dist.name} units: "
            f"{', '.join(fit)}")
