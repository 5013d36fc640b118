"""Scaling exponents of the last full ``stochgrad compare`` run, so that ``--quick`` can say where its
conclusions differ from the full study's.

Source: the full run (seed 0, D = 1 … 1024, 4000 estimates per point, 100 warm-up calls for estimators
with state) on 2 CPU cores, as tabled in the documentation's estimator study. To refresh it after a full run:
``compare_reference.from_results(json.load(open("runs/compare/results.json")))``.
"""
from __future__ import annotations

SOURCE = "full run, seed 0, 2 CPU cores"

# estimator -> loss -> fitted exponent of relative variance against D (D >= 4)
FULL_RUN_EXPONENTS: dict[str, dict[str, float]] = {
    "straight_through": {"separable": 0.00109, "coupled": -1.06},
    "straight_through_sigmoid": {"separable": 0.00109, "coupled": -1.06},
    "reinforce": {"separable": 2.01, "coupled": 1.83},
    "reinforce_ma": {"separable": 1.02, "coupled": 1.04},
    "reinforce_optimal": {"separable": 1.06, "coupled": 1.1},
    "reinforce_loo": {"separable": 0.986, "coupled": 0.977},
    "learned": {"separable": 1.98, "coupled": 0.212},
    "arm": {"separable": 1.01, "coupled": 1.02},
    "disarm": {"separable": 1.01, "coupled": 1.03},
    "gumbel": {"separable": 0.00167, "coupled": -0.125},
    "gumbel_st": {"separable": 0.00142, "coupled": -0.177},
    "rebar": {"separable": 0.801, "coupled": 0.799},
    "relax": {"separable": 1.17, "coupled": 0.837},
    "spsa": {"separable": 0.999, "coupled": 0.93},
    "finite_difference": {"separable": 0.00175, "coupled": -0.0869},
    "node_perturbation": {"separable": 0.968, "coupled": 0.89},
}


def from_results(results: dict) -> dict[str, dict[str, float]]:
    """The exponents of a full run's ``results.json``, in the shape of [`FULL_RUN_EXPONENTS`][stochgrad.studies.compare_reference.FULL_RUN_EXPONENTS]."""
    if results["config"]["quick"]:
        raise ValueError("results: a reference must come from a full run, not --quick")
    return {n: {loss: round(s["exponent"], 3) for loss, s in e["scaling"].items()}
            for n, e in results["estimators"].items()}
