"""The seed's unbiased estimator and its centred forms: ``(h − σ(a))·(L − c)``, Theorem 1 and Corollary 1.

One formula (:meth:`ScoreFunction.score_gradient`), four baselines from :mod:`stochgrad.baselines`.
"""
from __future__ import annotations

from .. import baselines
from .base import ScoreFunction


class Reinforce(ScoreFunction):
    name = "reinforce"
    description = "unbiased (h - σ(a))·L, Theorem 1"

    def __init__(self):
        super().__init__(baselines.Baseline())


class ReinforceMA(ScoreFunction):
    name = "reinforce_ma"
    description = "(h - σ(a))·(L - moving average of past L), Corollary 1"

    def __init__(self, decay: float = 0.9):
        super().__init__(baselines.MovingAverage(decay))


class ReinforceOptimal(ScoreFunction):
    name = "reinforce_optimal"
    description = "(h - σ(a))·(L - c_i), c_i the per-unit optimal baseline of Eq. 7 (moving num/den)"

    def __init__(self, decay: float = 0.9):
        super().__init__(baselines.OptimalBaseline(decay))


class ReinforceLOO(ScoreFunction):
    name = "reinforce_loo"
    description = "(h - σ(a))·(L - mean of the other samples' L), samples >= 2"
    min_samples = 2

    def __init__(self):
        super().__init__(baselines.LeaveOneOut())
