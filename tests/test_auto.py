"""estimator="auto": it picks what the study says is best, stays unbiased, resumes, agrees across ranks."""
import copy
import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import stochgrad as sg
from stochgrad import problems
from stochgrad.checks import sample_gradients
from stochgrad.sampling import Sharded

CALLS, BATCH = 60, 64   # the stated number of calls (10 warm-up measurements, then one every 50)


def efficiency(est, samples, p, gen, estimates=4000, batch=200):
    """Independent measurement of a copy of ``est`` as it stands (no further tuning):
    (variance × f-evaluations of one estimate, its standard error)."""
    est = copy.deepcopy(est)
    est.tune = False
    g = sample_gradients(est, p.f, p.logits, estimates, batch, samples, gen, warmup=5)
    sq = (g - g.mean(0)).square().sum(-1)
    e = est.evaluations(p.n, samples)
    return sq.mean().item() * e, sq.std().item() / len(sq) ** 0.5 * e


def test_auto_picks_the_per_unit_optimal_baseline_on_the_separable_toy(gen):
    p = problems.separable()
    auto = sg.get_estimator("auto", cost="evaluations")
    sample_gradients(auto, p.f, p.logits, CALLS * BATCH, BATCH, 1, gen)
    assert auto.chosen == "reinforce_optimal(samples=1)", auto.extra_repr()
    assert set(auto.report()["candidates"]) == {"reinforce(samples=1)", "reinforce_ma(samples=1)",
                                                "reinforce_optimal(samples=1)"}


@pytest.mark.parametrize("problem", ["nonseparable"])
def test_auto_picks_disarm_or_better_on_non_separable_problems(problem, gen):
    """Budget 2, after CALLS calls: the chosen candidate is, by an independent measurement of the candidates as
    auto holds them, the most efficient within 4 standard errors, and no worse than DisARM."""
    p = getattr(problems, problem)()
    auto = sg.get_estimator("auto", cost="evaluations")
    sample_gradients(auto, p.f, p.logits, CALLS * BATCH, BATCH, 2, gen)
    measured = {auto._label(i): efficiency(c, s, p, gen) for i, (c, s) in enumerate(zip(auto.candidates, auto.sizes))}
    mine = measured[auto.chosen]

    def no_worse(other):
        return mine[0] <= other[0] + 4 * (mine[1] ** 2 + other[1] ** 2) ** 0.5

    assert no_worse(min(measured.values())), (auto.chosen, measured)
    assert no_worse(measured["disarm(samples=1)"]), (auto.chosen, measured)


@pytest.mark.parametrize("budget", [1, 3])
def test_auto_unbiased_while_it_measures_and_switches(budget, gen):
    p = problems.decoder()
    auto = sg.get_estimator("auto", every=5, warmup=3)   # measure often: the switching is exercised
    r = sg.check_unbiased(auto, p.f, p.logits, estimates=6000, batch=200, samples=budget, generator=gen)
    assert r.passed, f"max |z| {r.max_abs_z:.2f}"
    assert auto.report()["calls"] == 30 and len(auto.history) >= 1


def test_auto_resumes_from_state_dict(gen):
    p = problems.nonseparable()
    used = sg.get_estimator("auto", every=7, warmup=2)
    sample_gradients(used, p.f, p.logits, 20 * 32, 32, 2, gen)
    fresh = sg.get_estimator("auto", every=7, warmup=2)
    fresh.load_state_dict(used.state_dict())
    assert fresh.chosen == used.chosen and fresh.history == used.history
    g1 = sample_gradients(used, p.f, p.logits, 20 * 32, 32, 2, torch.Generator().manual_seed(9))
    g2 = sample_gradients(fresh, p.f, p.logits, 20 * 32, 32, 2, torch.Generator().manual_seed(9))
    assert torch.equal(g1, g2) and fresh.history == used.history
    assert fresh.measuring_fraction == used.measuring_fraction > 0
    # a state saved before the next measuring call was kept loads, measuring on the interval's next multiple
    state = used.state_dict()
    state["_extra_state"] = {k: v for k, v in state["_extra_state"].items() if k != "next_measure"}
    older = sg.get_estimator("auto", every=7, warmup=2)
    older.load_state_dict(state)
    r = older.report()
    assert r["next_measuring_call"] % older.interval() == 0 and r["next_measuring_call"] >= r["calls"]
    assert used.report()["next_measuring_call"] >= used.report()["calls"] and older.chosen == used.chosen


def test_auto_reports_what_it_chose_and_why(gen):
    p = problems.decoder()
    auto = sg.get_estimator("auto", cost="evaluations")
    assert "not yet used" in auto.extra_repr()
    sample_gradients(auto, p.f, p.logits, 12 * 16, 16, 2, gen)
    r = auto.report()
    assert r["chosen"] == auto.chosen and r["chosen"] in r["candidates"]
    best = min(r["candidates"], key=lambda k: r["candidates"][k]["variance_x_evaluations"])
    assert best == r["chosen"] and "variance x evaluations" in auto.extra_repr()
    assert 0 < auto.measuring_fraction < 1
    # every unbiased estimator that fits a budget of 2 (ARM is left out: DisARM dominates it at the same cost;
    # RODEO: costly to measure at many units)
    fits = {n for n, info in sg.estimators().items() if info.unbiased and n not in ("exact", "auto", "arm", "rodeo")
            and info.min_samples <= 2 and sg.get_estimator(n).evaluations(p.n, info.min_samples) <= 2}
    assert {label.split("(")[0] for label in r["candidates"]} == fits and "disarm(samples=1)" in r["candidates"]


@pytest.mark.parametrize("overhead", [0.1, 0.5])
def test_auto_keeps_measuring_below_its_overhead(overhead, gen):
    """After the warm-up, measuring calls are spaced so that their extra f-evaluations stay below ``overhead`` of
    the run's: a measuring call reruns every candidate (16 evaluations for 8 candidates of budget 2) beyond the
    chosen's 2, so the interval is max(every, ceil(16 / (overhead * 2))); a larger overhead measures more often."""
    p = problems.decoder()
    auto = sg.get_estimator("auto", cost="evaluations", every=1, warmup=3, overhead=overhead)
    calls = 3 + 4 * 70
    sample_gradients(auto, p.f, p.logits, calls * 4, 4, 2, gen)
    r = auto.report()
    extra = sum(c["evaluations"] for c in r["candidates"].values())
    assert auto.interval() == max(1, math.ceil(extra / (overhead * r["candidates"][r["chosen"]]["evaluations"])))
    total, spent = r["evaluations_spent"], auto.measuring_fraction
    warm = 3 * extra   # the warm-up's own measuring, before the interval applies
    assert (spent * total - warm) / (total - warm) <= overhead
    assert r["interval"] == auto.interval() and f"overhead={overhead}" in auto.extra_repr()


def test_auto_bad_input_raises_before_any_state_changes():
    p = problems.decoder()
    with pytest.raises(ValueError, match="biased"):
        sg.get_estimator("auto", candidates=["straight_through"])(p.f, p.logits.clone().requires_grad_(True))
    with pytest.raises(ValueError, match="every"):
        sg.get_estimator("auto", every=0)
    for bad in [0, 1.5]:
        with pytest.raises(ValueError, match="overhead"):
            sg.get_estimator("auto", overhead=bad)
    auto = sg.get_estimator("auto")
    auto(p.f, p.logits.clone().requires_grad_(True), samples=2)
    before = {k: v.clone() for k, v in auto.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError, match="samples=2"):
        auto(p.f, p.logits.clone().requires_grad_(True), samples=3)
    assert all(torch.equal(v, auto.state_dict()[k]) for k, v in before.items())


def test_auto_by_time_leaves_a_slow_candidate_that_evaluations_would_choose(gen, monkeypatch):
    """cost="time": a candidate with the least variance per f-evaluation but 10x the seconds per step loses to one
    with 2.5x its variance; by f-evaluations it wins. The times are frozen after the warm-up, in the state and in the
    report, so a resumed run repeats the choices bit for bit."""
    import time

    from stochgrad.estimators.arm import DisARM

    real = DisARM.estimate

    def slow(self, *args, **kwargs):   # ~5 ms of CPU per call on top of ~0.3 ms
        start = time.process_time()
        while time.process_time() - start < 5e-3:
            torch.ones(64, 64).matmul(torch.ones(64, 64))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DisARM, "estimate", slow)
    p = problems.nonseparable()
    chosen = {}
    for cost in ("evaluations", "time"):
        auto = sg.get_estimator("auto", candidates=["reinforce_loo", "disarm"], cost=cost)
        sample_gradients(auto, p.f, p.logits, 20 * 64, 64, 2, gen)
        chosen[cost] = auto
    assert chosen["evaluations"].chosen == "disarm(samples=1)"
    timed = chosen["time"]
    assert timed.chosen == "reinforce_loo(samples=2)", timed.extra_repr()
    r = timed.report()
    assert r["criterion"] == "least variance x seconds per step" and r["timed_calls"] == 10
    rows = r["candidates"]
    assert rows["disarm(samples=1)"]["seconds_per_call"] > 5e-3 > 5 * rows["reinforce_loo(samples=2)"]["seconds_per_call"]
    for row in rows.values():
        assert row["efficiency"] == row["variance_x_seconds"] == pytest.approx(row["variance"] * row["seconds_per_step"])
    fresh = sg.get_estimator("auto", candidates=["reinforce_loo", "disarm"])
    fresh.load_state_dict(timed.state_dict())
    assert fresh.report()["candidates"] == rows and fresh.history == timed.history
    g1 = sample_gradients(timed, p.f, p.logits, 60 * 64, 64, 2, torch.Generator().manual_seed(9))
    g2 = sample_gradients(fresh, p.f, p.logits, 60 * 64, 64, 2, torch.Generator().manual_seed(9))
    assert torch.equal(g1, g2) and fresh.history == timed.history


def test_auto_on_categorical_units_chooses_among_the_categorical_candidates(gen):
    """Categorical units: the candidates are the unbiased estimators for them (CARMS and the score-function family
    at a budget of 2); auto picks the most efficient by an independent measurement, within noise."""
    p = problems.categorical_nonseparable()
    auto = sg.get_estimator("auto", cost="evaluations")
    sample_gradients(auto, p.f, p.logits, CALLS * BATCH, BATCH, 2, gen, distribution="categorical")
    r = auto.report()
    assert r["distribution"] == "categorical"
    assert {k.split("(")[0] for k in r["candidates"]} == {"reinforce", "reinforce_ma", "reinforce_optimal",
                                                         "reinforce_loo", "carms"}
    measured = {}
    for i, (c, s) in enumerate(zip(auto.candidates, auto.sizes)):
        c = copy.deepcopy(c)
        g = sample_gradients(c, p.f, p.logits, 4000, 200, s, gen, warmup=5, distribution="categorical").flatten(1)
        sq = (g - g.mean(0)).square().sum(-1)
        measured[auto._label(i)] = (sq.mean().item(), sq.std().item() / len(sq) ** 0.5)
    mine, best = measured[auto.chosen], min(measured.values())
    assert mine[0] <= best[0] + 4 * (mine[1] ** 2 + best[1] ** 2) ** 0.5, (auto.chosen, measured)
    with pytest.raises(ValueError, match="units of categorical"):
        auto(p.f, p.logits.flatten().clone().requires_grad_(True), samples=2)


def test_auto_as_a_layer_chooses_among_single_sample_estimators(gen):
    """The network view: StochasticBinary("auto") learns from the broadcast loss and chooses as it goes."""
    torch.manual_seed(0)
    layer = sg.StochasticBinary("auto", generator=gen)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), layer).double()
    x = torch.randn(64, 3, dtype=torch.float64, generator=gen)
    for _ in range(30):
        with sg.broadcast() as graph:
            loss = (net(x) - 0.45).square().sum(-1)
        graph.backward(loss)
    auto = layer.estimator
    assert auto.chosen == "reinforce_optimal(samples=1)", auto.extra_repr()
    assert net[0].weight.grad is not None and torch.isfinite(net[0].weight.grad).all()
    # resumed from its state, it ranks and spaces its measuring calls as the live one (nothing was timed here)
    resumed = sg.StochasticBinary("auto").double()
    resumed.load_state_dict(layer.state_dict())
    again = resumed.estimator
    assert again.interval() == auto.interval() and torch.equal(again.efficiency(), auto.efficiency())


# ---- two ranks under gloo make the choices one process makes with the whole batch --------------------------
def _run_auto(rank=None, world=1):
    p = problems.two_layer()
    auto = sg.get_estimator("auto", candidates=["reinforce_optimal", "reinforce_loo", "disarm", "rodeo"],
                            every=4, warmup=3, cost="evaluations")   # times differ between processes
    B = 32 // world
    noise = Sharded(torch.Generator().manual_seed(4), rank or 0, world)
    for _ in range(12):
        a = p.logits.expand(B, -1).clone().requires_grad_(True)
        auto(p.f, a, samples=2, generator=noise).sum().backward()
    return {"history": auto.history, "state": {k: v for k, v in auto.state_dict().items() if isinstance(v, torch.Tensor)}}


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.save(_run_auto(rank, 2), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_make_the_choices_of_one_process():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]
    single = _run_auto()
    assert len(single["history"]) > 1   # it did switch
    for key, value in ranks[0]["state"].items():   # every rank holds the same state, bit for bit
        assert torch.equal(ranks[1]["state"][key], value), key
    for r in ranks:
        assert r["history"] == single["history"]
        for key, value in single["state"].items():
            assert torch.allclose(r["state"][key].to(value.dtype), value, atol=1e-9, rtol=1e-6), key


def test_compare_reports_autos_choice_beside_the_measured_best():
    from stochgrad.studies import compare

    cfg = compare.Config.make(quick=True, estimators=["disarm", "auto"], problem_estimates=200)
    problems_ = {n: {p.name: compare.problem_stats(cfg, n, p, k) for k, p in enumerate(compare.suite(cfg, "bernoulli"))}
                 for n in cfg.estimators}
    for r in problems_["auto"].values():
        assert "(samples=" in r["auto_choice"] and r["max_abs_z"] < 4 and 0 < r["measuring_fraction"] < 1
    lines = compare.report.findings({"estimators": {n: {"problems": e} for n, e in problems_.items()}})
    # its budget is in the sentence: 2 f-evaluations per estimate, and what measuring cost on top
    assert sum("`auto` (2 f-evaluations per estimate, plus" in line and "more for its measuring) chose" in line
               for line in lines) == 4
