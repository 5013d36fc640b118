"""stochgrad: gradients through stochastic and hard neurons (Bengio 2013, and the estimators that followed)."""
from .checks import UnbiasedCheck, check_unbiased
from .estimators import Estimator, estimators, get_estimator
from .exact import exact_expectation, exact_gradient
from .expect import expect
from .graph import DelayedBroadcast, broadcast
from .neurons import FiringRateControl, NoisyRectifier, StochasticBinary, StochasticCategorical, StochasticTimesSmooth

__version__ = "0.1.0"
__all__ = ["expect", "broadcast", "DelayedBroadcast", "StochasticBinary", "StochasticCategorical", "NoisyRectifier", "StochasticTimesSmooth",
           "FiringRateControl", "estimators", "get_estimator", "Estimator", "check_unbiased", "UnbiasedCheck",
           "exact_expectation", "exact_gradient"]
