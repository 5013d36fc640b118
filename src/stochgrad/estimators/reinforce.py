"""The seed's unbiased estimator and its centred forms: ``(h − σ(a))·(L − c)``, Theorem 1 and Corollary 1.

One formula ([`ScoreFunction.score_gradient`][stochgrad.estimators.base.ScoreFunction.score_gradient]), four baselines from [`stochgrad.baselines`][stochgrad.baselines].
"""
from __future__ import annotations

from .. import baselines
from .base import ScoreFunction


class Reinforce(ScoreFunction):
    """``reinforce`` (seed Theorem 1): ``(h − σ(a))·L``, no baseline. Unbiased."""

    name = "reinforce"
    description = "unbiased (h - σ(a))·L, Theorem 1"

    def __init__(self):
        super().__init__(baselines.Baseline())


class ReinforceMA(ScoreFunction):
    """``reinforce_ma`` (seed Corollary 1): ``(h − σ(a))·(L − c)``, ``c`` a moving average of past
    losses (``decay``). Unbiased.
    """

    name = "reinforce_ma"
    description = "(h - σ(a))·(L - moving average of past L), Corollary 1"

    def __init__(self, decay: float = 0.9):
        super().__init__(baselines.MovingAverage(decay))


class ReinforceOptimal(ScoreFunction):
    """``reinforce_optimal`` (seed Eq. 7): ``(h − σ(a))·(L − c_i)``, ``c_i`` the per-unit
    variance-minimising baseline from moving numerator and denominator. Unbiased.
    """

    name = "reinforce_optimal"
    description = "(h - σ(a))·(L - c_i), c_i the per-unit optimal baseline of Eq. 7 (moving num/den)"

    def __init__(self, decay: float = 0.9):
        super().__init__(baselines.OptimalBaseline(decay))


class ReinforceLOO(ScoreFunction):
    """``reinforce_loo``: ``(h − σ(a))·(L − c)``, ``c`` the mean loss of the other samples of the same
    example (``samples >= 2``). Unbiased.
    """

    name = "reinforce_loo"
    description = "(h - σ(a))·(L - mean of the other samples' L), samples >= 2"
    min_samples = 2

    def __init__(self):
        super().__init__(baselines.LeaveOneOut())
