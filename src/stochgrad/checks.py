"""Statistical checks against exact enumeration: is an estimator unbiased, and how noisy is it?"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .distributions import get_distribution
from .estimators import Estimator, get_estimator, resolve
from .exact import exact_expectation, exact_gradient
from .guard import LOW_PRECISION, LossFn, check_logits
from .options import NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT, integer


MIN_ESTIMATES = 30  # fewer cannot estimate the variance the z-scores divide by (Student's t with < 29 dof)


@dataclass
class UnbiasedCheck:
    """Many estimates of ``∇ E[f]`` against the exact gradient, per coordinate (shapes of the logits).

    ``variance`` is that of a single estimate; ``z = bias / SE`` with ``SE = sqrt(variance / estimates)``,
    floored at the rounding error of the comparison itself ([`rounding`][stochgrad.checks.UnbiasedCheck.rounding]): an estimate with no noise
    (or only round-off, like ``exact``) is judged by whether it hits the exact value to rounding.
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
    loss_scale: float = 0.0   # max over examples of E|f|: the size of the terms the enumeration sums
    states: int = 0           # how many states the enumeration sums (0: 2^n of the last dimension)

    @property
    def bias(self) -> Tensor:
        return self.mean - self.exact

    @property
    def standard_error(self) -> Tensor:
        return (self.variance / self.estimates).sqrt()

    @property
    def rounding(self) -> float:
        """``eps · max(E|f|, max|exact|) · √N``: the round-off of the enumeration's sum of ``N`` terms of size
        up to ``|f|`` (random-walk accumulation), the smallest standard error a comparison in this dtype
        can resolve."""
        states = self.states or 2 ** self.exact.shape[-1]
        scale = max(self.exact.abs().max().item(), self.loss_scale) or 1.0
        return torch.finfo(self.exact.dtype).eps * scale * math.sqrt(states)

    @property
    def z(self) -> Tensor:
        return self.bias / self.standard_error.clamp_min(self.rounding)

    @property
    def critical(self) -> float:
        """The ``|z|`` that counts as bias: [`threshold`][stochgrad.checks.UnbiasedCheck.threshold] (a normal quantile) moved to Student's t with
        ``estimates − 1`` degrees of freedom, since the standard error is itself estimated (Cornish–Fisher
        expansion, Abramowitz & Stegun 26.7.5; at 30 estimates and threshold 4: 4.67)."""
        z, nu = self.threshold, max(self.estimates - 1, 1)
        terms = ((z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
                 (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384)
        return z + sum(t / nu ** (k + 1) for k, t in enumerate(terms))

    @property
    def max_abs_z(self) -> float:
        return self.z.abs().max().item()

    @property
    def relative_variance(self) -> float:
        """Total variance of one estimate over the squared norm of the exact gradient."""
        return (self.variance.sum() / self.exact.square().sum()).item()

    @property
    def bias_detected(self) -> bool:
        """``max |z| ≥`` [`critical`][stochgrad.checks.UnbiasedCheck.critical]; a NaN z-score (a NaN estimate) counts as bias, never as a pass."""
        return not self.max_abs_z < self.critical

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
    ``distribution``: as in [`stochgrad.expect`][stochgrad.expect] (``"categorical"``: logits ``(*batch, n, K)``).
    """
    POSITIVE.check(estimates, "estimates")
    batch = estimates if batch is None else POSITIVE.check(batch, "batch")
    NON_NEGATIVE.check(warmup, "warmup")
    calls = -(-estimates // batch)
    grads = []
    for call in range(warmup + calls):
        a = logits.detach().expand(batch, *logits.shape).clone().requires_grad_(True)
        value = resolve(estimator).forward(f, a, samples, generator, distribution)  # (a name: stateless, as in expect)
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
        f: the loss, as in [`stochgrad.expect`][stochgrad.expect].
        logits: ``(*batch, n)`` with ``n <= 20``, or ``(*batch, n, K)`` with ``distribution="categorical"``
            and ``K^n <= 2^20``, as in [`stochgrad.expect`][stochgrad.expect].
        estimates: how many estimates in all (>= 2: the test needs their variance).
        batch: how many estimates per call (default: all in one call); a stateful estimator updates once
            per call.
        samples: samples per estimate.
        generator: source of all noise.
        threshold: the largest ``|z|`` per coordinate allowed of an unbiased estimator (4 ≈ p < 6e-5 each);
            a finite number > 0.
        warmup: calls made and discarded first (baselines settle, tuned estimators tune).
        distribution: ``None``/``"bernoulli"`` or ``"categorical"``, as in [`stochgrad.expect`][stochgrad.expect].

    Returns:
        [`UnbiasedCheck`][stochgrad.checks.UnbiasedCheck]: per-coordinate mean, variance, bias, z-scores, and a verdict.
    """
    dist = get_distribution(distribution)
    check_logits(logits, masks=dist.masks)
    integer(MIN_ESTIMATES).check(estimates, "estimates")   # the kinds of `stochgrad check`'s flags (stochgrad.options)
    POSITIVE.check(samples, "samples")
    POSITIVE_FLOAT.check(threshold, "threshold")
    est = get_estimator(estimator) if isinstance(estimator, str) else estimator
    # the ground truth in float32 at least: the estimator samples and scores low-precision logits in float32 too
    work = logits.detach().float() if logits.dtype in LOW_PRECISION else logits.detach()
    truth = f if work.dtype == logits.dtype else (
        lambda b: f(b.to(logits.dtype) if b.is_floating_point() else b).to(work.dtype))   # (class indices stay int64)
    exact_value, exact = exact_gradient(truth, work, distribution)
    if not (torch.isfinite(exact_value).all() and torch.isfinite(exact).all()):
        raise ValueError("f is NaN or inf on some states, so E[f] and its gradient are undefined: no estimator can be "
                         "checked against them")
    with torch.no_grad():
        loss_scale = exact_expectation(lambda b: truth(b).abs(), work, distribution).abs().max().item()
    states = dist.states(work).shape[0]
    g = sample_gradients(est, f, logits, estimates, batch, samples, generator, warmup, distribution)
    g = g.to(exact.dtype)
    mean, var = g.mean(0), g.var(0)
    dims = tuple(range(1, g.dim()))
    mse = (g - exact).square().sum(dims).mean().item()
    spread = (g - mean).square().sum(dims)  # one term per estimate; its mean is the total variance
    variance_se = (spread.std() / g.shape[0] ** 0.5).item() if g.shape[0] > 1 else float("nan")
    return UnbiasedCheck(est.name, est.unbiased, exact, mean, var, g.shape[0], threshold, mse, variance_se, loss_scale,
                         states)
