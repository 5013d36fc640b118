"""Statistical checks against exact enumeration: is an estimator unbiased, and how noisy is it?"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .exact import exact_gradient
from .expect import LossFn, check_logits, expect

if TYPE_CHECKING:
    from .estimators.base import Estimator


@dataclass
class UnbiasedCheck:
    """Many estimates of ``∇ E[f]`` against the exact gradient, per coordinate (shapes of the logits).

    ``variance`` is that of a single estimate; ``z = bias / SE`` with ``SE = sqrt(variance / estimates)``.
    ``variance_se`` is the standard error of ``variance.sum()`` (the spread of ``‖ĝ − mean‖²`` over the
    estimates, divided by ``sqrt(estimates)``).
    """

    estimator: str
    declared_unbiased: bool
    exact: Tensor
    mean: Tensor
    variance: Tensor
    estimates: int
    threshold: float = 4.0
    mse: float = field(default=float("nan"))
    variance_se: float = field(default=float("nan"))

    @property
    def bias(self) -> Tensor:
        return self.mean - self.exact

    @property
    def standard_error(self) -> Tensor:
        return (self.variance / self.estimates).sqrt()

    @property
    def z(self) -> Tensor:
        se, bias = self.standard_error, self.bias
        scale = self.exact.abs().max().clamp_min(1e-12)
        # A coordinate estimated without any noise is biased iff it misses, beyond rounding.
        exact_hit = bias.abs() <= 1e-9 * scale
        noiseless = torch.where(exact_hit, torch.zeros_like(bias), torch.full_like(bias, float("inf")))
        return torch.where(se > 0, bias / se.clamp_min(1e-300), noiseless)

    @property
    def max_abs_z(self) -> float:
        return self.z.abs().max().item()

    @property
    def relative_variance(self) -> float:
        """Total variance of one estimate over the squared norm of the exact gradient."""
        return (self.variance.sum() / self.exact.square().sum()).item()

    @property
    def bias_detected(self) -> bool:
        return self.max_abs_z >= self.threshold

    @property
    def passed(self) -> bool:
        """False only for an estimator declared unbiased whose bias is detected."""
        return not (self.declared_unbiased and self.bias_detected)

    @property
    def verdict(self) -> str:
        if self.declared_unbiased:
            return "unbiased: ok" if not self.bias_detected else "FAIL: bias detected"
        return "biased, as declared" if self.bias_detected else "no bias detected"


def sample_gradients(estimator: Estimator, f: LossFn, logits: Tensor, estimates: int, batch: int | None = None,
                     samples: int = 1, generator: torch.Generator | None = None, warmup: int = 0,
                     distribution: str | None = None) -> Tensor:
    """``estimates`` independent gradient estimates, ``(estimates, *logits.shape)``.

    Each call estimates ``batch`` replicas of ``logits`` at once (stacked on a new leading dimension),
    so a stateful estimator updates its state ``estimates / batch`` times, using ``batch``-example
    means; ``batch=1`` is the sequential setting. ``warmup`` calls come first and are discarded.
    ``distribution``: as in :func:`stochgrad.expect` (``"categorical"``: logits ``(*batch, n, K)``).
    """
    batch = estimates if batch is None else batch
    if batch < 1 or estimates < 1:
        raise ValueError(f"estimates and batch must be >= 1, got {estimates} and {batch}")
    calls = -(-estimates // batch)
    grads = []
    for call in range(warmup + calls):
        a = logits.detach().expand(batch, *logits.shape).clone().requires_grad_(True)
        value = expect(f, a, estimator, samples, generator, distribution)
        (g,) = torch.autograd.grad(value.sum(), a)
        if call >= warmup:
            grads.append(g)
    return torch.cat(grads)[:estimates]


def check_unbiased(estimator: str | Estimator, f: LossFn, logits: Tensor, *, estimates: int = 4000, batch: int | None = None,
                   samples: int = 1, generator: torch.Generator | None = None, threshold: float = 4.0,
                   warmup: int = 0, distribution: str | None = None) -> UnbiasedCheck:
    """Compares ``estimates`` gradient estimates with the exact gradient of ``E[f]`` (enumeration).

    Args:
        estimator: a registered name or an estimator object (its state carries over between calls).
        f: the loss, as in :func:`stochgrad.expect`.
        logits: ``(*batch, n)`` with ``n <= 20``, or ``(*batch, n, K)`` with ``distribution="categorical"``
            and ``K^n <= 2^20``, as in :func:`stochgrad.expect`.
        estimates: how many estimates in all.
        batch: how many estimates per call (default: all in one call); a stateful estimator updates once
            per call.
        samples: samples per estimate.
        generator: source of all noise.
        threshold: the largest ``|z|`` per coordinate allowed of an unbiased estimator (4 ≈ p < 6e-5 each).
        warmup: calls made and discarded first (baselines settle, tuned estimators tune).
        distribution: ``None``/``"bernoulli"`` or ``"categorical"``, as in :func:`stochgrad.expect`.

    Returns:
        :class:`UnbiasedCheck`: per-coordinate mean, variance, bias, z-scores, and a verdict.
    """
    from .estimators import get_estimator

    check_logits(logits)
    est = get_estimator(estimator) if isinstance(estimator, str) else estimator
    exact = exact_gradient(f, logits, distribution)[1]
    g = sample_gradients(est, f, logits, estimates, batch, samples, generator, warmup, distribution)
    mean, var = g.mean(0), g.var(0)
    dims = tuple(range(1, g.dim()))
    mse = (g - exact).square().sum(dims).mean().item()
    spread = (g - mean).square().sum(dims)  # one term per estimate; its mean is the total variance
    variance_se = (spread.std() / g.shape[0] ** 0.5).item() if g.shape[0] > 1 else float("nan")
    return UnbiasedCheck(est.name, est.unbiased, exact, mean, var, g.shape[0], threshold, mse, variance_se)
