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
    assert results["environment"] == {k: v for k, v in env.items() if k not in ("date", "load")}   # timings only
    assert env["cpu"] and env["cores"] >= 1 and "load" in env
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
    from stochgrad.studies import compare_report

    monkeypatch.setattr(compare_report, "plot", lambda *args: dict.fromkeys(("scaling", "bias_variance", "race",
                                                                             "categorical"), "-"))
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
        assert ("(D − 1)" in line) == ("(separable)" in line), line   # D − 1 is the separable loss's reference
        if "(separable)" in line:
            assert "at equal f-evaluations" in line


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

    names = {n: (1, 1.0, (1, 2)) for n in REGISTRY if n != "exact"}
    results = _fake(names)
    for n in names:
        results["estimators"][n]["declared_unbiased"] = REGISTRY[n].unbiased
    st = compare.styles(results)
    assert len({(s["color"], s["marker"]) for s in st.values()}) == len(names)   # colour and marker: no two alike
    for n in names:
        assert st[n]["linestyle"] == ("-" if REGISTRY[n].unbiased else "--")
    assert compare.styles(_fake({"reinforce": (1, 1.0, (1, 2))}))["reinforce"] == st["reinforce"]   # every run alike


# ---- the run: parts written as they finish, resume, an earlier run's folder, cost-aware sizes, verdicts -------
def _small(**over):
    sizes = dict(estimators=["reinforce", "reinforce_loo", "gumbel"], seed=5, problem_estimates=40, scaling_D=(1, 4),
                 scaling_estimates=20, scaling_warmup=2, race_steps=4, race_units=3, timing_repeats=1,
                 categorical_units=(1, 2), categorical_classes=(2, 3), min_estimates=10)
    return compare.Config.make(quick=True, **{**sizes, **over})


@pytest.fixture
def no_plots(monkeypatch):
    """The figures are not drawn (they take most of a tiny run's time; the bytes of the JSON are what count)."""
    from stochgrad.studies import compare_report

    monkeypatch.setattr(compare_report, "plot", lambda *args: dict.fromkeys(("scaling", "bias_variance", "race",
                                                                             "categorical"), "-"))


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumed_writes_the_same_results(tmp_path, monkeypatch, no_plots):
    with one_thread():
        compare.run(_small(), str(tmp_path / "once"), progress=False)
        real, calls = compare.scaling_point, []

        def stop_halfway(*args):
            calls.append(args)
            if len(calls) == 7:   # in the middle of the scaling part
                raise Interrupt
            return real(*args)

        monkeypatch.setattr(compare, "scaling_point", stop_halfway)
        with pytest.raises(Interrupt):
            compare.run(_small(), str(tmp_path / "twice"), progress=False)
        report = (tmp_path / "twice" / "report.md").read_text()    # the finished part is already written
        assert "On **separable**, at equal f-evaluations" in report and "**Unfinished**" in report
        assert "scaling with D" in report.split("**Unfinished**")[1].splitlines()[0]
        monkeypatch.setattr(compare, "scaling_point", real)
        with pytest.raises(compare.RunError, match="holds an earlier run"):   # a fresh run would replace it
            compare.run(_small(), str(tmp_path / "twice"), progress=False)
        compare.run(_small(), str(tmp_path / "twice"), progress=False, resume=True)
    for name in ("results.json", "results_categorical.json"):
        assert (tmp_path / "once" / name).read_bytes() == (tmp_path / "twice" / name).read_bytes(), name
    assert "Unfinished" not in (tmp_path / "twice" / "report.md").read_text()
    assert compare.run(_small(), str(tmp_path / "twice"), progress=False, resume=True) == {"already_complete": True}


def test_resume_refuses_other_settings_and_a_fresh_run_needs_force(tmp_path, no_plots):
    with one_thread():
        compare.run(_small(), str(tmp_path), progress=False)
        with pytest.raises(compare.RunError, match="other settings .*seed"):
            compare.run(_small(seed=6),
                        str(tmp_path), progress=False, resume=True)
        with pytest.raises(compare.RunError, match="--resume to continue it, --force to replace it"):
            compare.run(_small(), str(tmp_path), progress=False)
        first = (tmp_path / "results.json").read_bytes()
        compare.run(_small(), str(tmp_path), progress=False, force=True)
    assert (tmp_path / "results.json").read_bytes() == first
    with pytest.raises(compare.RunError, match="nothing to resume"):
        compare.run(_small(), str(tmp_path / "new"), progress=False, resume=True)


def test_expensive_estimators_get_fewer_estimates_and_the_report_says_so(tmp_path, no_plots):
    w = compare.RELATIVE_COST["rodeo"]   # rodeo's cost per estimate and unit, relative to reinforce's (~100s)
    cfg = _small(estimators=["reinforce", "rodeo"], scaling_D=(1, 4, 16, 64), scaling_estimates=200,
                 budget=w * 16 * 125, min_estimates=100)
    # the budget buys rodeo 125 estimates at D = 16 and fewer than 100 at D = 64 (not measured); reinforce
    # (relative cost 1) is never limited
    assert compare.sizes(cfg, "rodeo", 16, 200, 100)[0] == 125 and compare.sizes(cfg, "rodeo", 64, 200, 100) is None
    assert compare.sizes(cfg, "reinforce", 64, 200, 100)[0] == 200
    with one_thread():
        results = compare.run(cfg, str(tmp_path), progress=False)
    s = results["estimators"]["rodeo"]["scaling"]["separable"]
    assert s["D"] == [1, 4, 16] and s["left_out"] == [64] and s["estimates"][-1] == 125
    assert results["estimators"]["reinforce"]["scaling"]["separable"]["D"] == [1, 4, 16, 64]
    report = (tmp_path / "report.md").read_text()
    assert "`rodeo` (separable): D = 64 not measured; fewer estimates at D = 16: 125" in report


def test_verdicts_compare_at_equal_f_evaluations():
    # "a" has the least variance of one estimate, but spends 2 evaluations (and 25% more measuring) per estimate
    results = _fake({"a": (1, 1.0, (1, 2)), "b": (1, 1.5, (1, 2))})
    results["estimators"]["a"]["problems"]["p"].update(evaluations=2, measuring_fraction=0.2, auto_choice="x")
    results["estimators"]["b"]["problems"]["p"].update(evaluations=1)
    lines = compare.report.findings(results)
    assert lines[0].startswith("On **p**, at equal f-evaluations the lowest-variance unbiased estimator is `b`")
    assert "`a`'s (1, 2 f-evaluations per estimate, plus 25% more for its measuring)" in lines[1]


def test_the_command_says_what_it_did_in_a_few_lines(tmp_path, capsys, monkeypatch, no_plots):
    from stochgrad.cli import main

    small = _small()
    monkeypatch.setattr(compare.Config, "make", classmethod(lambda cls, **kw: small))
    assert main(["compare", "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(f"wrote {tmp_path}/report.md") and len(out) <= 10
    assert main(["compare", "--quick", "--out", str(tmp_path), "--quiet", "--resume"]) == 0
    assert "already complete" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["compare", "--quick", "--out", str(tmp_path), "--quiet"])
    assert "holds an earlier run" in capsys.readouterr().err


def test_help_states_the_time():
    from stochgrad.cli import COMPARE_MINUTES, build_parser

    text = build_parser()._subparsers._group_actions[0].choices["compare"].format_help()
    assert "--resume" in text and "--force" in text
    assert COMPARE_MINUTES in build_parser().format_help()
