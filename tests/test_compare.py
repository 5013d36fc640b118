"""A tiny `stochgrad compare`, checked against figures computed independently here."""
import json
import math

import pytest

from stochgrad.studies import compare

T = compare.TARGET


def reinforce_relative_variance(D, logit=1.0):
    """Exact relative variance of (h − p)·L on Σ (b − t)², all logits equal (derived in the test)."""
    p = 1 / (1 + math.exp(-logit))
    q = 1 - p
    l1, l0 = (1 - T) ** 2, T ** 2
    m, v = p * l1 + q * l0, p * q * (l1 - l0) ** 2          # mean and variance of one unit's loss
    mu, second = (D - 1) * m, (D - 1) * v + ((D - 1) * m) ** 2  # E R and E R² for the other D − 1 units
    e2 = lambda c: c * c + 2 * c * mu + second                  # E[(c + R)²]
    g = p * q * (l1 - l0)
    var = p * q * q * e2(l1) + q * p * p * e2(l0) - g * g
    return var / g ** 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    cfg = compare.Config.make(quick=True, estimators=["reinforce", "reinforce_optimal", "straight_through"],
                              problem_estimates=600, scaling_D=(1, 4, 16, 64), scaling_estimates=3000,
                              race_steps=20)
    compare.run(cfg, str(out), progress=False)
    return out


def test_outputs_exist_and_are_keyed_by_estimator(tiny):
    results = json.loads((tiny / "results.json").read_text())
    assert set(results["estimators"]) == {"reinforce", "reinforce_optimal", "straight_through"}
    for name, e in results["estimators"].items():
        assert set(e["problems"]) == {"separable", "nonseparable", "decoder", "two_layer"}
        for r in e["problems"].values():
            for key in ("bias_norm", "variance", "mse", "seconds_per_estimate", "evaluations", "efficiency"):
                assert math.isfinite(r[key]) and r[key] >= 0, (name, key)
        assert set(e["scaling"]) == {"separable", "coupled"}
        assert set(e["race"]) == {"separable", "decoder"}
    report = (tiny / "report.md").read_text()
    for name in results["estimators"]:
        assert name in report
    for png in ("variance_vs_units.png", "bias_vs_variance.png", "race.png"):
        assert (tiny / png).stat().st_size > 5000 and f"]({png})" in report


def test_reinforce_scaling_matches_the_closed_form(tiny):
    s = json.loads((tiny / "results.json").read_text())["estimators"]["reinforce"]["scaling"]["separable"]
    exact = [reinforce_relative_variance(D) for D in s["D"]]
    for got, want in zip(s["relative_variance"], exact):
        assert got == pytest.approx(want, rel=0.15)
    assert s["exponent"] == pytest.approx(compare.fit_exponent(s["D"], exact), abs=0.1)
    assert 1.8 < s["exponent"] < 2.1


def test_optimal_baseline_sits_on_the_floor(tiny):
    s = json.loads((tiny / "results.json").read_text())["estimators"]["reinforce_optimal"]["scaling"]["separable"]
    for D, got in zip(s["D"], s["relative_variance"]):
        if D > 1:
            assert got == pytest.approx(D - 1, rel=0.15)
        else:
            assert got < 0.1
    assert "reinforce_optimal" in (tiny / "report.md").read_text()


def test_biased_estimator_reported_as_biased(tiny):
    results = json.loads((tiny / "results.json").read_text())
    st = results["estimators"]["straight_through"]["problems"]["decoder"]
    assert not st["declared_unbiased"] and st["max_abs_z"] > 4 and st["verdict"] == "biased, as declared"
    assert any("passed |z| < 4" in line for line in results["findings"])


def test_race_improves_the_decoder_loss(tiny):
    for e in json.loads((tiny / "results.json").read_text())["estimators"].values():
        r = e["race"]["decoder"]   # (the separable toy's gradient is too weak to show in 20 steps)
        assert r["excess_loss"][-1] < r["excess_loss"][0] - 0.5
        assert r["seconds"] == sorted(r["seconds"]) and r["steps"][-1] == 20


def test_results_record_environment_and_timing_spread(tiny):
    results = json.loads((tiny / "results.json").read_text())
    env = results["environment"]
    assert env["torch"] and env["threads"] >= 1 and env["date"] and "python" in env and "commit" in env
    repeats = results["config"]["timing_repeats"]
    for e in results["estimators"].values():
        for r in e["problems"].values():
            assert len(r["seconds_all"]) == repeats
            assert r["seconds_min"] <= r["seconds_per_estimate"] <= r["seconds_max"]
            lo, hi = r["efficiency_range"]
            assert lo <= r["efficiency"] <= hi
            assert r["variance_se"] > 0
    report = (tiny / "report.md").read_text()
    assert "Environment: torch" in report and f"over {repeats} timings" in report


def test_scaling_sentences_keep_the_losses_apart(tiny):
    results = json.loads((tiny / "results.json").read_text())
    for line in results["scaling_sentences"]:
        assert ("(separable)" in line) != ("(coupled)" in line), line
        assert ("floor" in line) == ("(separable)" in line), line   # the D − 1 floor is the separable loss's


def _fake(names_k, quick=True):
    """Results with only what the report's words read: exponents, variances, efficiencies."""
    est = {}
    for n, (k, var, eff_range) in names_k.items():
        r = {"declared_unbiased": True, "variance": var, "variance_se": var / 100, "mse": var,
             "efficiency": sum(eff_range) / 2, "efficiency_range": list(eff_range), "seconds_all": [1.0] * 5,
             "max_abs_z": 0.5}
        est[n] = {"declared_unbiased": True, "problems": {"p": r},
                  "scaling": {"separable": {"exponent": k, "D": [1, 1024], "relative_variance": [1.0, 1023.0]}}}
    return {"config": {"quick": quick}, "estimators": est}


def test_quick_run_says_where_it_differs_from_the_full_run():
    ref = compare.FULL_RUN_EXPONENTS
    results = _fake({"reinforce": (ref["reinforce"]["separable"], 1.0, (1, 2)),   # agrees
                     "rebar": (2.0, 1.0, (1, 2)),                                   # full run: about linear
                     "not_in_reference": (1.0, 1.0, (1, 2))})
    lines = compare.quick_vs_full(results)
    assert any(line.startswith("`rebar` (separable): about quadratic in D here") and "about linear" in line
               for line in lines)
    assert not any("`reinforce`" in line for line in lines)
    assert any("No full-run reference for `not_in_reference`" in line for line in lines)


def test_efficiency_verdict_says_when_it_is_within_noise():
    tied = compare.findings(_fake({"a": (1, 1.0, (9.0, 12.0)), "b": (1, 2.0, (8.0, 10.0))}))[0]
    assert "most efficient per second is `a`" in tied and "`b` is within that noise of it" in tied
    clear = compare.findings(_fake({"a": (1, 1.0, (9.0, 12.0)), "b": (1, 2.0, (2.0, 4.0))}))[0]
    assert "ahead of the next, `b`" in clear and "beyond the noise" in clear


def test_plot_styles_tell_every_estimator_apart():
    from stochgrad.estimators import REGISTRY

    names = {n: (1, 1.0, (1, 2)) for n in REGISTRY}
    results = _fake(names)
    for n, cls in REGISTRY.items():
        results["estimators"][n]["declared_unbiased"] = cls.unbiased
    st = compare.styles(results)
    keys = {(s["color"], s["linestyle"], s["marker"]) for s in st.values()}
    assert len(keys) == len(REGISTRY)                         # no two estimators drawn alike
    for n, cls in REGISTRY.items():
        assert st[n]["linestyle"] == ("-" if cls.unbiased else "--")
