"""The estimator registry: names (docs: "Design") to classes, and what each declares about itself."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from ..options import OptionError, suggestion
from .arm import ARM, DisARM
from .arms import ARMS
from .auto import Auto
from .base import REGISTRY, Estimator, ScoreFunction
from .carms import CARMS
from .double_cv import DoubleCV
from .exact import Exact
from .gumbel import Gumbel, GumbelST
from .gumbel_rao import GumbelRao
from .learned import Learned
from .perturbation import SPSA, FiniteDifference, NodePerturbation
from .rebar import REBAR, RELAX
from .rodeo import RODEO
from .reinforce import Reinforce, ReinforceLOO, ReinforceMA, ReinforceOptimal
from .reinmax import ReinMax
from .straight_through import StraightThrough, StraightThroughSigmoid

_CLASSES = (Exact, StraightThrough, StraightThroughSigmoid, Reinforce, ReinforceMA, ReinforceOptimal,
            ReinforceLOO, Learned, ARM, DisARM, Gumbel, GumbelST, REBAR, RELAX, SPSA, FiniteDifference, NodePerturbation)
_CLASSES += (GumbelRao, ReinMax, CARMS)  # made for categorical units; Bernoulli as their K = 2 case
_CLASSES += (ARMS, DoubleCV, RODEO, Auto)  # multi-sample Bernoulli estimators since DisARM, and auto
REGISTRY.update({cls.name: cls for cls in _CLASSES})  # (the dict lives in .base, which reads it for errors)


@dataclass(frozen=True)
class EstimatorInfo:
    """What an estimator declares: printed as one line."""

    name: str
    description: str
    unbiased: bool
    pathwise: bool
    cost: str
    min_samples: int
    broadcast: bool
    distributions: tuple = ("bernoulli",)

    def __str__(self) -> str:
        """One line: unbiased?, how it works as a layer (pathwise / needs the broadcast L / expect only), cost."""
        kind = "unbiased" if self.unbiased else "biased"
        route = "pathwise" if self.pathwise else "needs L" if self.broadcast else "expect"
        units = "+categorical" if "categorical" in self.distributions else ""
        return f"{kind:8s} | {route:8s} | f evals: {self.cost:6s} | {self.description}{' [' + units + ']' if units else ''}"


def estimators() -> dict[str, EstimatorInfo]:
    """Every registered estimator: name → [`EstimatorInfo`][stochgrad.estimators.EstimatorInfo] (one line when printed)."""
    return {name: EstimatorInfo(name, cls.description, cls.unbiased, cls.pathwise, cls.cost, cls.min_samples,
                                cls.broadcast, tuple(cls.distributions))
            for name, cls in REGISTRY.items()}


def get_estimator(name: str, **options) -> Estimator:
    """Builds the estimator registered as ``name`` with its options (e.g. ``decay=0.9``)."""
    if not isinstance(name, str):
        raise TypeError(f"estimator name must be a str, got {type(name).__name__}")
    if name not in REGISTRY:
        raise ValueError(f"unknown estimator {name!r}{suggestion(name, REGISTRY)}; known estimators: "
                         f"{', '.join(REGISTRY)}")
    try:
        return REGISTRY[name](**options)
    except OptionError:   # a bad value for a known option: its own message (a TypeError for a wrong type)
        raise
    except TypeError as err:
        raise TypeError(f"bad options for estimator {name!r}: {err}") from None


def _stateless() -> dict[str, Estimator]:
    """One instance per stateless name, built here once: they hold nothing, so sharing is exact, and a name used
    inside ``torch.compile`` finds its estimator built (a module built while tracing would break the graph)."""
    built = {name: cls() for name, cls in REGISTRY.items()}
    return {name: est for name, est in built.items() if not est.stateful}


_SHARED: dict[str, Estimator] = _stateless()


def resolve(estimator) -> Estimator:
    """What ``expect(f, logits, estimator)`` calls: an estimator object as it is; a name, statelessly.

    A name is resolved to an estimator *without state carried between calls*: a stateless one (no
    buffers or parameters: ``reinforce``, ``disarm``, ``straight_through``, ...) is built once and shared;
    a stateful one (``reinforce_ma``, ``reinforce_optimal``, ``learned``, ``rebar``, ``relax``) is built
    fresh on every call (so its baseline or tuning starts over each time) with a warning, once per name:
    keep state by building the object once, ``est = sg.get_estimator(name)``, and passing ``est``.
    """
    if not isinstance(estimator, str):
        if not isinstance(estimator, Estimator):
            raise TypeError(f"estimator must be a registered name or a stochgrad Estimator, got "
                            f"{type(estimator).__name__}")
        return estimator
    shared = _SHARED.get(estimator)
    if shared is not None:
        return shared
    est = get_estimator(estimator)   # a stateful one (the stateless are all in _SHARED), or an unknown name's error
    warnings.warn(f"expect(..., {estimator!r}): a name keeps no state between calls, so this {estimator} "
                  "starts afresh on every call; build it once with sg.get_estimator and pass the object",
                  stacklevel=3)
    return est


__all__ = ["Estimator", "ScoreFunction", "EstimatorInfo", "REGISTRY", "estimators", "get_estimator", "resolve"]
