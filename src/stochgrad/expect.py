"""The functional view: ``expect(f, logits, estimator)``, one Monte-Carlo expectation over Bernoulli units.

Shapes: ``logits`` is ``(*batch, n)``; unit ``i`` fires with probability ``sigmoid(logits[..., i])``.
``f`` maps samples ``(*lead, *batch, n)`` in {0, 1} to per-sample losses ``(*lead, *batch)``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

LossFn = Callable[[Tensor], Tensor]


def check_logits(logits, name: str = "logits") -> Tensor:
    """Raises a clear error unless ``logits`` is a finite floating tensor with a unit dimension."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (*batch, n), got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64), got dtype {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{name} must have shape (*batch, n) with n >= 1 units, got {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
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
    """Wraps the user's ``f``: checks every output's shape and counts the points it was evaluated at.

    ``evaluations`` counts points per example: a call on ``(*lead, *batch, n)`` adds ``prod(lead)``.
    """

    def __init__(self, f: LossFn, batch: torch.Size):
        if not callable(f):
            raise TypeError(f"f must be callable, mapping (*lead, *batch, n) samples to (*lead, *batch) losses; got {type(f).__name__}")
        self.f, self.batch, self.evaluations = f, tuple(batch), 0

    def __call__(self, b: Tensor) -> Tensor:
        lead = tuple(b.shape[: b.dim() - len(self.batch) - 1])
        out = self.f(b)
        if not isinstance(out, Tensor) or out.shape != (*lead, *self.batch):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"f must return per-sample losses of shape (*lead, *batch) = {(*lead, *self.batch)} "
                             f"for samples of shape {tuple(b.shape)}; got {got}")
        self.evaluations += int(torch.Size(lead).numel())
        return out


def attach_gradient(value: Tensor, logits: Tensor, grad: Tensor) -> Tensor:
    """``value`` in the forward pass; in the backward pass ``d value[k] / d logits[k] := grad[k]``.

    The replace-gradient idiom: the surrogate ``Σ_i grad_i·logits_i`` minus its own detached copy adds
    zero to the value but carries ``grad`` to the logits. ``value``: ``batch``; ``grad``: ``(*batch, n)``.
    Gradients that ``value`` already carries (to parameters of f) are kept.
    """
    if not logits.requires_grad:
        return value
    surrogate = (grad.detach() * logits).sum(-1)
    return value + (surrogate - surrogate.detach())


def expect(f: LossFn, logits: Tensor, estimator="reinforce", samples: int = 1,
           generator: torch.Generator | None = None) -> Tensor:
    """Monte-Carlo estimate of ``E_{b ~ Bernoulli(σ(logits))}[f(b)]`` whose backward is an estimator's gradient.

    Args:
        f: maps samples ``(*lead, *batch, n)`` in {0, 1} to losses ``(*lead, *batch)``. It is called with a
            leading sample dimension (``samples``, antithetic pairs or relaxed points stacked on it) and
            may hold parameters of its own, which receive the ordinary pathwise gradient.
        logits: ``(*batch, n)``, float32 or float64, on any device.
        estimator: a registered name (see :func:`stochgrad.estimators`) or an estimator object. Keep one
            object per site for stateful estimators (baselines, learned corrections).
        samples: Monte-Carlo samples per example (``>= 1``; ``reinforce_loo`` needs ``>= 2``).
        generator: source of all noise; pass one for exactly repeatable runs.

    Returns:
        ``(*batch,)``: the estimate of ``E[f(b)]`` per example. ``value.sum().backward()`` leaves in
        ``logits.grad[k]`` the estimator's gradient of example ``k``'s expected loss.
    """
    from .estimators import Estimator, get_estimator

    est = get_estimator(estimator) if isinstance(estimator, str) else estimator
    if not isinstance(est, Estimator):
        raise TypeError(f"estimator must be a registered name or a stochgrad Estimator, got {type(estimator).__name__}")
    check_logits(logits)
    check_samples(samples, est.min_samples, est.name)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return est.estimate(CheckedLoss(f, logits.shape[:-1]), logits, samples, generator)
