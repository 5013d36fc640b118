"""``exact``: enumeration of all 2^n states, the ground truth the checks compare against."""
from __future__ import annotations

from ..distributions import BERNOULLI
from ..exact import MAX_UNITS, exact_expectation
from .base import Estimator


class Exact(Estimator):
    """``exact``: ``E[f]`` by enumeration of all 2^n states (n ≤ 20) and its gradient by autograd.
    The ground truth of every check.
    """

    name = "exact"
    description = f"enumerates all 2^n states (n <= {MAX_UNITS}; K^n <= 2^20 categorical): exact E[f] and gradient"
    unbiased = True
    pathwise = True  # autograd through the enumeration
    cost = "2^n"
    distributions = ("bernoulli", "categorical")

    def estimate(self, f, logits, samples, generator, dist=BERNOULLI):
        return exact_expectation(f, logits, dist)

    def evaluations(self, n, samples=1):
        return 2 ** n
