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
