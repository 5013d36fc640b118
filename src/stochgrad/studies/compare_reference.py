"""Scaling exponents of the last full ``stochgrad compare`` run, so that ``--quick`` can say where its
conclusions differ from the full study's.

Source: the full run at the default sizes (seed 0, D = 1 … 1024, up to 2000 estimates per point, 100 warm-up calls
of up to 100 replicas for estimators with state, the cost-aware limits of ``report.md``) on 2 CPU cores, as tabled
in the documentation's estimator study. To refresh it after a full run:
``compare_reference.from_results(json.load(open("runs/compare/results.json")))``.
"""
from __future__ import annotations

SOURCE = "full run at the default sizes, seed 0, 2 CPU cores"

# estimator -> loss -> fitted exponent of relative variance against D (D >= 4)
FULL_RUN_EXPONENTS: dict[str, dict[str, float]] = {
    "straight_through": {"separable": 0.002, "coupled": -1.062},
    "straight_through_sigmoid": {"separable": 0.002, "coupled": -1.062},
    "reinforce": {"separable": 2.013, "coupled": 1.83},
    "reinforce_ma": {"separable": 0.99, "coupled": 1.028},
    "reinforce_optimal": {"separable": 1.036, "coupled": 1.088},
    "reinforce_loo": {"separable": 0.985, "coupled": 0.973},
    "learned": {"separable": 1.948, "coupled": 0.295},
    "arm": {"separable": 1.012, "coupled": 1.024},
    "disarm": {"separable": 1.009, "coupled": 1.035},
    "gumbel": {"separable": 0.002, "coupled": -0.126},
    "gumbel_st": {"separable": 0.002, "coupled": -0.178},
    "rebar": {"separable": 1.203, "coupled": 0.973},
    "relax": {"separable": 1.327, "coupled": 0.868},
    "spsa": {"separable": 1.002, "coupled": 0.917},
    "finite_difference": {"separable": 0.009, "coupled": -0.112},
    "node_perturbation": {"separable": 0.969, "coupled": 0.887},
    "gumbel_rao": {"separable": -0.002, "coupled": -0.326},
    "reinmax": {"separable": 0.002, "coupled": -0.186},
    "carms": {"separable": 1.015, "coupled": 1.029},
    "arms": {"separable": 1.011, "coupled": 1.029},
    "double_cv": {"separable": 0.095, "coupled": 0.537},
    "rodeo": {"separable": 1.011, "coupled": 0.785},
    "auto": {"separable": 0.094, "coupled": 1.109},
}


def from_results(results: dict) -> dict[str, dict[str, float]]:
    """The exponents of a full run's ``results.json``, in the shape of [`FULL_RUN_EXPONENTS`][stochgrad.studies.compare_reference.FULL_RUN_EXPONENTS]."""
    if results["config"]["quick"]:
        raise ValueError("results: a reference must come from a full run, not --quick")
    return {n: {loss: round(s["exponent"], 3) for loss, s in e["scaling"].items()}
            for n, e in results["estimators"].items()}
