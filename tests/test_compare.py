"""A tiny `stochgrad compare`, checked against figures computed independently here."""
import contextlib
import json
import math

import pytest
import torch

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


@contextlib.contextmanager
def one_thread():
    """The study as the command runs it: one intra-op thread (its tensors are tiny; two threads on two busy
    cores made it several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    cfg = compare.Config.make(quick=True, estimators=["reinforce", "reinforce_optimal", "straight_through"],
                              problem_estimates=600, scaling_D=(1, 4, 16, 64), scaling_estimates=3000,
                              race_steps=20)
    with one_thread():
        compare.run(cfg, str(out), progress=False)
    return out


def test_outputs_exist_and_are_keyed_by_estimator(tiny):
    results = json.loads((tiny / "results.json").read_text())
    timings = json.loads((tiny / "timings.json").read_text())
    assert set(results["estimators"]) == {"reinforce", "reinforce_optimal", "straight_through"}
    for name, e in results["estimators"].items():
        assert set(e["problems"]) == {"separable", "nonseparable", "decoder", "two_layer"}
        for p, r in e["problems"].items():
            for key in ("bias_norm", "variance", "mse", "evaluations"):
                assert math.isfinite(r[key]) and r[key] >= 0, (name, key)
            t = timings["estimators"][name]["problems"][p]
            for key in ("seconds_per_estimate", "efficiency"):
                assert math.isfinite(t[key]) and t[key] >= 0 and key not in r, (name, key)
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
        assert r["steps"][-1] == 20
    for e in json.loads((tiny / "timings.json").read_text())["estimators"].values():
        assert e["race"]["decoder"]["seconds"] == sorted(e["race"]["decoder"]["seconds"])


def test_results_record_environment_and_timing_spread(tiny):
    results = json.loads((tiny / "results.json").read_text())
    timings = json.loads((tiny / "timings.json").read_text())
    env = timings["environment"]
    assert env["torch"] and env["threads"] >= 1 and env["date"] and "python" in env and "commit" in env
    assert results["environment"] == {k: v for k, v in env.items() if k != "date"}   # the date: timings only
    assert timings["wall_seconds"] > 0 and "wall_seconds" not in results
    repeats = results["config"]["timing_repeats"]
    for name, e in timings["estimators"].items():
        for p, r in e["problems"].items():
            assert len(r["seconds_all"]) == repeats
            assert r["seconds_min"] <= r["seconds_per_estimate"] <= r["seconds_max"]
            lo, hi = r["efficiency_range"]
            assert lo <= r["efficiency"] <= hi
            assert results["estimators"][name]["problems"][p]["variance_se"] > 0
    report = (tiny / "report.md").read_text()
    assert "Environment: torch" in report and f"over {repeats} timings" in report


def test_same_seed_twice_writes_byte_identical_results(tmp_path, monkeypatch):
    """Issue 14.12: every number in results.json and results_categorical.json comes from generators seeded
    by the configuration's seed (RELAX's surrogate and auto included), never from the global generator (moved
    between the runs here) or the clock (timings.json). A study of the smallest sizes, so only the bytes count;
    the figures are not drawn (they take most of a tiny run's time and are not compared)."""
    from stochgrad.studies import compare_categorical

    monkeypatch.setattr(compare, "plot", lambda results, out: dict.fromkeys(("scaling", "bias_variance", "race"), "-"))
    monkeypatch.setattr(compare_categorical, "_plot", lambda res, path: None)
    names = ["relax", "rebar", "auto", "reinforce_loo", "gumbel"]   # tuned, learned, composite, categorical-capable
    for run, global_seed in (("a", 1), ("b", 2)):
        torch.manual_seed(global_seed)
        cfg = compare.Config.make(quick=True, estimators=names, seed=3, problem_estimates=40, scaling_D=(1, 4),
                                  scaling_estimates=20, scaling_warmup=3, race_steps=4, race_units=3,
                                  timing_repeats=1)
        with one_thread():
            compare.run(cfg, str(tmp_path / run), progress=False)
    for name in ("results.json", "results_categorical.json"):
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert a == b, name
    timings = json.loads((tmp_path / "a" / "timings.json").read_text())
    assert set(timings["categorical"]["problems"]) <= set(names) and timings["environment"]["date"]
    assert "relax" in json.loads((tmp_path / "a" / "results.json").read_text())["estimators"]


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
    tied = compare.timing_findings(_fake({"a": (1, 1.0, (9.0, 12.0)), "b": (1, 2.0, (8.0, 10.0))}))[0]
    assert "most efficient unbiased estimator per second is `a`" in tied and "`b` is within that noise of it" in tied
    clear = compare.timing_findings(_fake({"a": (1, 1.0, (9.0, 12.0)), "b": (1, 2.0, (2.0, 4.0))}))[0]
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
