"""The functional view: ``expect(f, logits, estimator)``, one Monte-Carlo expectation over discrete units.

Shapes: ``logits`` is ``(*batch, n)``; unit ``i`` fires with probability ``sigmoid(logits[..., i])``.
``f`` maps samples ``(*lead, *batch, n)`` in {0, 1} to per-sample losses ``(*lead, *batch)``.
Categorical units ([`stochgrad.distributions`][stochgrad.distributions]): logits ``(*batch, n, K)``, one-hot samples
``(*lead, *batch, n, K)`` (or, with ``distribution="categorical_index"``, class indices ``(*lead, *batch, n)``), the
same losses ``(*lead, *batch)``.

This module is the door only: it resolves the estimator through the registry and calls it
([`stochgrad.estimators.base.Estimator.forward`][stochgrad.estimators.base.Estimator.forward] checks the input and runs the estimate); nothing in the
package imports it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .estimators import Estimator, resolve
from .guard import LossFn


#: The estimator ``expect`` uses when none is named, per kind of unit: unbiased, stateless (a name keeps no state),
#: one sample per example. Bernoulli: DisARM, one antithetic pair, the least variance per f-evaluation of the
#: stateless unbiased estimators on the problems of ``stochgrad compare`` (REINFORCE without a baseline, the former
#: default, is the noisiest there: its variance grows like D² with the units). Categorical: REINFORCE, the one
#: stateless unbiased estimator that takes a single sample (with ``samples >= 2``, name ``reinforce_loo`` or
#: ``carms``: less variance).
DEFAULT_ESTIMATOR = {"bernoulli": "disarm", "categorical": "reinforce"}


def expect(f: LossFn, logits: Tensor, estimator: str | Estimator | None = None, samples: int = 1,
           generator: torch.Generator | None = None, distribution: str | None = None) -> Tensor:
    """Monte-Carlo estimate of ``E_{b ~ Bernoulli(σ(logits))}[f(b)]`` whose backward is an estimator's gradient.

    Categorical units: pass ``torch.distributions.OneHotCategorical(logits=a)`` as ``logits`` (or the
    tensor ``a`` with ``distribution="categorical"``): ``a`` is ``(*batch, n, K)``, ``f`` receives one-hot
    samples ``(*lead, *batch, n, K)`` and returns ``(*lead, *batch)``; with ``distribution="categorical_index"``
    ``f`` receives the class indices ``(*lead, *batch, n)`` (int64) instead and may return integer losses (the
    score-function estimators: ``reinforce``, ``reinforce_ma``, ``reinforce_loo`` make no one-hot at all;
    ``reinforce_optimal`` builds the one its per-class baseline reads). A ``torch.distributions.Bernoulli`` is the
    same as its logits.

    Args:
        f: maps samples ``(*lead, *batch, n)`` in {0, 1} to losses ``(*lead, *batch)``, for any leading
            dimensions: ``samples``, antithetic pairs or relaxed points are stacked on them; one sample of
            batched logits comes with none (the fast path). It may hold parameters of its own, which
            receive the ordinary pathwise gradient.
        logits: ``(*batch, n)``, float32 or float64, on any device. float16 and bfloat16 logits are
            sampled and scored in float32 (their own grid would bias ``P(h = 1)``: at logit −7 bfloat16
            fires ~4× too often); ``f`` gets its samples, and the result comes back, in their dtype.
        estimator: an estimator object, or a registered name (see [`stochgrad.estimators`][stochgrad.estimators]); ``None``:
            [`DEFAULT_ESTIMATOR`][stochgrad.expect.DEFAULT_ESTIMATOR] (``disarm`` for Bernoulli units, ``reinforce`` for categorical ones).
            **A name is stateless**: it never carries state from one call to the next. Stateless
            estimators (``reinforce``, ``disarm``, ``straight_through``, ...) are built once and shared;
            a stateful one named by a string (``reinforce_ma``, ``reinforce_optimal``, ``learned``,
            ``rebar``, ``relax``) starts afresh on every call (no baseline yet, no tuning kept) and warns
            once. To keep its state, build it once per call site, ``est = sg.get_estimator(name)``, and
            pass ``est``: its state then lives in its buffers (``state_dict``, ``.to``, DDP).
        samples: Monte-Carlo samples per example (``>= 1``; ``reinforce_loo`` needs ``>= 2``).
        generator: source of all noise; pass one for exactly repeatable runs.
        distribution: ``None`` (from ``logits``: Bernoulli for a tensor), ``"bernoulli"``, ``"categorical"`` or
            ``"categorical_index"``.

    Checks: types, shapes and options raise before anything runs. Values never cost a host-device
    synchronisation ([`stochgrad.guard`][stochgrad.guard]): NaN/inf logits raise at once on the CPU and from a later
    call of the same estimator on an accelerator; losses of NaN/inf never enter an estimator's state
    (baselines, tuned control variates, learned moments) and raise the same way, or are skipped when
    ``estimator.skip_nonfinite = True``.

    Returns:
        ``(*batch,)``: the estimate of ``E[f(b)]`` per example. ``value.sum().backward()`` leaves in
        ``logits.grad[k]`` the estimator's gradient of example ``k``'s expected loss.
    """
    if estimator is None:
        categorical = (getattr(distribution, "name", distribution) in ("categorical", "categorical_index")
                       or isinstance(logits, torch.distributions.OneHotCategorical))
        estimator = DEFAULT_ESTIMATOR["categorical" if categorical else "bernoulli"]
    est = estimator if isinstance(estimator, Estimator) else resolve(estimator)
    return est.forward(f, logits, samples, generator, distribution)
