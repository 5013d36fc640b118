"""The functional view: ``expect(f, logits, estimator)``, one Monte-Carlo expectation over discrete units.

Shapes: ``logits`` is ``(*batch, n)``; unit ``i`` fires with probability ``sigmoid(logits[..., i])``.
``f`` maps samples ``(*lead, *batch, n)`` in {0, 1} to per-sample losses ``(*lead, *batch)``.
Categorical units (:mod:`stochgrad.distributions`): logits ``(*batch, n, K)``, one-hot samples
``(*lead, *batch, n, K)``, the same losses ``(*lead, *batch)``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Generator, Tensor
from torch._C import _are_functorch_transforms_active as _functorch_active

from .distributions import BERNOULLI
from .distributions import resolve as as_distribution
from .guard import _compiling
from .guard import check_logits  # noqa: F401  (expect's door; the layers import it from here)
from .sampling import Sharded

if TYPE_CHECKING:
    from .estimators.base import Estimator

LossFn = Callable[[Tensor], Tensor]
"""A loss: samples ``(*lead, *batch, n)`` in {0, 1} to per-sample losses ``(*lead, *batch)``."""


LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_samples(samples, minimum: int = 1, who: str = "") -> int:
    """``samples`` as a validated int ``>= minimum``; a clear error naming ``who`` otherwise."""
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise TypeError(f"samples must be an int >= {minimum}, got {samples!r}")
    if samples < minimum:
        extra = f" ({who} needs at least {minimum})" if who and minimum > 1 else ""
        raise ValueError(f"samples must be >= {minimum}{extra}, got {samples}")
    return samples


def CheckedLoss(f: LossFn, event_dims: int = 1, dim: int = 2, dtype: torch.dtype | None = None) -> LossFn:
    """Wraps the user's ``f`` in a function that checks every output has shape ``(*lead, *batch)`` = ``b.shape[:-1]``
    (``b.shape[:-2]`` for categorical samples ``(*lead, *batch, n, K)``: ``event_dims = 2``).

    One sample is drawn without a sample dimension (the fast path) and ``f`` sees ``(*batch, *event)``;
    only unbatched logits (``dim == event_dims``) get a leading ``(1,)``, so that ``f``'s output shape
    still tells a loss per sample from a reduction over everything. ``dtype``: for low-precision logits,
    the samples (computed in float32) are handed to ``f`` in the logits' dtype (0 and 1 are exact there)
    and its losses come back in float32.

    A closure, not an object with ``__call__``: CPython calls a plain function without a slot lookup, and the
    common case (batched Bernoulli logits in float32/float64) gets the one-comparison check alone.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, mapping (*lead, *batch, n) samples to (*lead, *batch) losses; got {type(f).__name__}")
    if event_dims == 1 and dim != 1 and dtype is None:  # the common case
        def loss(b: Tensor) -> Tensor:
            out = f(b)
            if not isinstance(out, Tensor) or out.shape != b.shape[:-1]:
                bad_losses(out, b, 1)
            return out
        return loss
    unbatched = dim == event_dims

    def loss(b: Tensor) -> Tensor:
        single = unbatched and b.dim() == event_dims
        x = b.unsqueeze(0) if single else b
        out = f(x if dtype is None else x.to(dtype))
        if not isinstance(out, Tensor) or out.shape != x.shape[:-event_dims]:
            bad_losses(out, x, event_dims)
        if dtype is not None:
            out = out.to(b.dtype)
        return out[0] if single else out
    return loss


def bad_losses(out, x: Tensor, event_dims: int):
    """Raises the error for ``f`` returning ``out`` (not losses of shape ``x.shape[:-event_dims]``) at samples ``x``."""
    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    units = "n" if event_dims == 1 else "n, K"
    raise ValueError(f"f must return per-sample losses of shape (*lead, *batch) = "
                     f"{tuple(x.shape[:-event_dims])} for samples (*lead, *batch, {units}) of "
                     f"shape {tuple(x.shape)}; got {got}")


def sample_mean(x: Tensor) -> Tensor:
    """Mean over the leading sample dimension (a free view when there is one sample)."""
    return x[0] if x.shape[0] == 1 else x.mean(0)


def lead(samples: int) -> tuple[int, ...]:
    """The leading sample shape of an estimator's draw: none for one sample (the fast path: no sample
    dimension to select from or average over), ``(samples,)`` otherwise."""
    return () if samples == 1 else (samples,)


def over_samples(x: Tensor, samples: int) -> Tensor:
    """Mean over the leading sample dimension that :func:`lead` gave ``x`` (none for one sample)."""
    return x if samples == 1 else x.mean(0)


class _ReplaceGradient(torch.autograd.Function):
    """``value`` forward; backward: ``value``'s own gradient passes through, and ``logits`` receive
    ``∂L/∂value[k] · grad[k]``. One autograd node where the idiom ``value + (s − s.detach())`` with ``s = Σ grad·logits``
    builds four: no full-size product in the forward pass and none of the idiom's passes in the backward (at 1024 x
    1000 the core estimators went from 0.92–1.03 to 0.75–0.96 of the idiom's cost); at a few units, about the same
    time (``benchmarks/overhead.py``).
    """

    @staticmethod
    def forward(ctx, value: Tensor, logits: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return value.detach()  # a new tensor on value's storage; this node links it to value and logits

    @staticmethod
    def backward(ctx, d_value: Tensor):
        (grad,) = ctx.saved_tensors
        extra = grad.dim() - d_value.dim()  # the event dimensions: (n,) or (n, K)
        d = d_value.unsqueeze(-1) if extra == 1 else d_value.reshape(*d_value.shape, *([1] * extra))
        return d_value, d * grad, None


try:  # autograd.Function.apply's own C entry, past its Python wrapper (issue 13: ~3–6 µs a call at a few units)
    from torch._C._functorch import unwrap_if_dead as _unwrap_if_dead

    _replace_gradient = super(torch.autograd.Function, _ReplaceGradient).apply
except (ImportError, AttributeError):  # a torch without them: the public route, the same node
    _replace_gradient = None


def attach_gradient(value: Tensor, logits: Tensor, grad: Tensor) -> Tensor:
    """``value`` in the forward pass; in the backward pass ``d value[k] / d logits[k] := grad[k]``.

    The replace-gradient idiom: as if the surrogate ``Σ_i grad_i·logits_i`` minus its own detached copy were added
    to the value (zero), carrying ``grad`` to the logits; built as one autograd node (:class:`_ReplaceGradient`).
    ``value``: ``batch``; ``grad``: ``(*batch, *event)`` (``event`` = ``(n,)`` or ``(n, K)``), treated as a constant.
    Gradients that ``value`` already carries (to parameters of f) are kept. Under ``torch.func`` transforms
    (``grad``, ``vjp``, ...), which take only autograd.Functions with a ``setup_context`` (a slower call), the idiom
    itself is built. Otherwise the node is applied through autograd.Function's C entry, doing what the public
    ``_ReplaceGradient.apply`` does outside transforms (unwrap tensors that outlived a transform, then apply), without
    its Python frames; ``torch.compile`` traces the public ``apply``.
    """
    if not logits.requires_grad:
        return value
    if grad.requires_grad:
        grad = grad.detach()
    if _functorch_active():
        weighted = grad * logits
        surrogate = (weighted if weighted.dim() == value.dim() + 1 else weighted.flatten(value.dim())).sum(-1)
        return value + (surrogate - surrogate.detach())
    if _replace_gradient is None or _compiling():
        return _ReplaceGradient.apply(value, logits, grad)
    return _replace_gradient(_unwrap_if_dead(value), _unwrap_if_dead(logits), _unwrap_if_dead(grad))


def expect(f: LossFn, logits: Tensor, estimator: str | Estimator = "reinforce", samples: int = 1,
           generator: torch.Generator | None = None, distribution: str | None = None) -> Tensor:
    """Monte-Carlo estimate of ``E_{b ~ Bernoulli(σ(logits))}[f(b)]`` whose backward is an estimator's gradient.

    Categorical units: pass ``torch.distributions.OneHotCategorical(logits=a)`` as ``logits`` (or the
    tensor ``a`` with ``distribution="categorical"``): ``a`` is ``(*batch, n, K)``, ``f`` receives one-hot
    samples ``(*lead, *batch, n, K)`` and returns ``(*lead, *batch)``. A ``torch.distributions.Bernoulli``
    is the same as its logits.

    Args:
        f: maps samples ``(*lead, *batch, n)`` in {0, 1} to losses ``(*lead, *batch)``, for any leading
            dimensions: ``samples``, antithetic pairs or relaxed points are stacked on them; one sample of
            batched logits comes with none (the fast path). It may hold parameters of its own, which
            receive the ordinary pathwise gradient.
        logits: ``(*batch, n)``, float32 or float64, on any device. float16 and bfloat16 logits are
            sampled and scored in float32 (their own grid would bias ``P(h = 1)``: at logit −7 bfloat16
            fires ~4× too often); ``f`` gets its samples, and the result comes back, in their dtype.
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

    Checks: types, shapes and options raise before anything runs. Values never cost a host-device
    synchronisation (:mod:`stochgrad.guard`): NaN/inf logits raise at once on the CPU and from a later
    call of the same estimator on an accelerator; losses of NaN/inf never enter an estimator's state
    (baselines, tuned control variates, learned moments) and raise the same way, or are skipped when
    ``estimator.skip_nonfinite = True``.

    Returns:
        ``(*batch,)``: the estimate of ``E[f(b)]`` per example. ``value.sum().backward()`` leaves in
        ``logits.grad[k]`` the estimator's gradient of example ``k``'s expected loss.
    """
    est = estimator
    if isinstance(est, str) or not hasattr(est, "estimate"):
        from .estimators import resolve  # here: stochgrad.estimators imports this module

        est = resolve(est)
    if logits.__class__ is Tensor and distribution is None:
        dist = BERNOULLI
    else:
        logits, dist = as_distribution(logits, distribution)
    check_logits(logits, "logits", est)  # (est: its verdict is looked up only where a device needs it)
    if samples.__class__ is not int or samples != 1 or est.min_samples > 1:
        check_samples(samples, est.min_samples, est.name)
    if generator is not None and not isinstance(generator, (Generator, Sharded)):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if dist is BERNOULLI and logits.dtype not in LOW_PRECISION:  # the common case
        return est.estimate(CheckedLoss(f, 1, logits.ndim), logits, samples, generator)
    if dist is not BERNOULLI:
        dist.check(logits)
        if dist.name not in getattr(est, "distributions", ("bernoulli",)):
            raise ValueError(unsupported(est, dist))
    if logits.dtype in LOW_PRECISION:  # sample and score in float32: the low-precision grid biases P(h = 1)
        loss = CheckedLoss(f, dist.event_dims, logits.dim(), logits.dtype)
        work = logits.float()
        value = est.estimate(loss, work, samples, generator) if dist is BERNOULLI else \
            est.estimate(loss, work, samples, generator, dist=dist)
        return value.to(logits.dtype)
    return est.estimate(CheckedLoss(f, dist.event_dims, logits.dim()), logits, samples, generator, dist=dist)


def unsupported(est, dist) -> str:
    """The error for an estimator asked for a distribution it does not declare, naming those that fit."""
    from .estimators import REGISTRY  # only on this error path: the registry imports this module

    fit = [name for name, cls in REGISTRY.items() if dist.name in getattr(cls, "distributions", ("bernoulli",))]
    return (f"estimator {est.name!r} does not support {dist.name} units (it supports "
            f"{', '.join(getattr(est, 'distributions', ('bernoulli',)))}); estimators for {dist.name} units: "
            f"{', '.join(fit)}")
