"""Misuse that used to pass silently or crash obscurely: checks that could call NaN unbiased, enumerations that
ignored K in their memory bound, empty batches in the broadcast, categorical layers that took units for examples."""
import pytest
import torch
from torch import nn

import stochgrad as sg
from stochgrad.checks import UnbiasedCheck, check_unbiased
from stochgrad.cli import main


def quadratic(b):
    return (b - 0.45).square().sum(-1)


def test_check_unbiased_refuses_an_f_that_is_nan_on_some_states():
    """E[f] is undefined when f is NaN on a state: an error, never "unbiased: ok" (NaN z-scores compare False)."""
    f = lambda b: torch.where(b[..., 0] * b[..., 1] > 0, float("nan"), quadratic(b))  # noqa: E731
    with pytest.raises(ValueError, match="NaN or inf on some states"):
        check_unbiased("reinforce", f, torch.zeros(3), estimates=100)


def test_a_nan_z_score_counts_as_bias():
    exact = torch.zeros(3)
    r = UnbiasedCheck("reinforce", True, exact, torch.tensor([0.0, float("nan"), 0.0]), torch.ones(3), 1000)
    assert r.bias_detected and not r.passed and r.verdict.startswith("FAIL")


def test_low_precision_logits_are_checked_against_a_float32_enumeration():
    """float16 logits: the estimator samples in float32, so the truth is enumerated in float32 too (a float16
    enumeration put DisARM, which is unbiased, at z = 4.4)."""
    logits = torch.tensor([0.3, -1.1, 2.0, 0.7]).half()
    r = check_unbiased("disarm", quadratic, logits, estimates=40000, batch=4000,
                       generator=torch.Generator().manual_seed(0))
    assert r.exact.dtype == torch.float32 and r.passed, r.max_abs_z


def test_the_z_test_allows_for_an_estimated_standard_error():
    """Student's t, not the normal: the critical |z| grows as the estimates fall (4.67 at 30 for a threshold of 4),
    fewer than 30 are refused, and `stochgrad check --estimates 2` is a usage error, not a verdict of bias."""
    r = UnbiasedCheck("reinforce", True, torch.zeros(2), torch.zeros(2), torch.ones(2), 30)
    assert 4.6 < r.critical < 4.75
    assert UnbiasedCheck("reinforce", True, torch.zeros(2), torch.zeros(2), torch.ones(2), 4000).critical < 4.01
    with pytest.raises(SystemExit) as stop:
        main(["check", "--estimates", "2"])
    assert stop.value.code == 2


@pytest.mark.parametrize("n, K", [(1, 65536), (1, 2 ** 20), (2, 1024)])
def test_exact_counts_the_classes_in_its_memory_bound(n, K):
    """Categorical enumeration builds (K^n, n, K) one-hot states: refused at once where that is gigabytes."""
    a = torch.zeros(1, n, K)
    with pytest.raises(ValueError, match="one-hot entries"):
        sg.expect(lambda h: h.sum((-2, -1)), a, "exact", distribution="categorical")


@pytest.mark.parametrize("name", ["reinforce", "reinforce_ma", "reinforce_optimal", "learned"])
def test_an_empty_batch_in_the_broadcast_learns_nothing_and_changes_nothing(name):
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), sg.StochasticBinary(name, generator=gen), nn.Linear(4, 1))
    with sg.broadcast() as graph:
        loss = model(torch.randn(3, 5, generator=gen)).squeeze(-1).square()
    graph.backward(loss)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad()
    with sg.broadcast() as graph:
        loss = model(torch.randn(0, 5)).squeeze(-1).square()
    graph.backward(loss)
    assert not graph.nodes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_a_categorical_layer_given_units_and_classes_keeps_the_units():
    """categories=K with (B, n, K) input: n units of K classes (the per-unit baseline has n·K coordinates), the
    same as (B, n·K) input, not n·B examples of one unit."""
    B, n, K = 6, 3, 4
    a = torch.randn(B, n, K, generator=torch.Generator().manual_seed(1))
    sizes = []
    for x in (a, a.flatten(-2)):
        layer = sg.StochasticCategorical("reinforce_optimal", categories=K, generator=torch.Generator().manual_seed(2))
        with sg.broadcast() as graph:
            h = layer(x)
        assert h.shape == x.shape
        graph.backward(h.flatten(1).sum(-1))
        sizes.append(layer.estimator.baseline.numerator.shape)
    assert sizes == [(n * K,), (n * K,)]


def _used(name, calls=3, samples=None, **options):
    from stochgrad import problems

    p = problems.decoder()
    est = sg.get_estimator(name, **options)
    g = torch.Generator().manual_seed(0)
    for _ in range(calls):
        a = p.logits.expand(8, -1).clone().requires_grad_(True)
        est(p.f, a, samples or max(2, est.min_samples), g).sum().backward()
    return est


def _same(before, est):
    after = est.state_dict()
    return before.keys() == after.keys() and all(
        torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k] for k, v in before.items())


def _copy(est):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in est.state_dict().items()}


def test_a_state_loads_only_into_the_estimator_it_means():
    """One rule, checked before anything changes: the same estimator and options (the tuned family shares its buffer
    names; auto's choice is an index into its candidates), and finite values; an older tuned state without its meaning
    still loads."""
    auto = _used("auto", calls=12, candidates=["disarm", "reinforce_loo"])
    other = sg.get_estimator("auto", candidates=["reinforce_loo", "disarm"])
    before = _copy(other)
    with pytest.raises(ValueError, match="belongs to another estimator"):
        other.load_state_dict(auto.state_dict())
    assert _same(before, other) and len(other.candidates) == 0
    sg.get_estimator("auto", candidates=["disarm", "reinforce_loo"]).load_state_dict(auto.state_dict())
    rebar = _used("rebar", samples=1)
    for target in (sg.get_estimator("double_cv"), sg.get_estimator("relax")):
        with pytest.raises(ValueError, match="belongs to another estimator"):
            target.load_state_dict(rebar.state_dict())
    with pytest.raises(ValueError, match="hidden"):
        sg.get_estimator("relax", hidden=20).load_state_dict(_used("relax", samples=1, hidden=10).state_dict())
    for name in ("rebar", "reinforce_optimal"):
        used = _used(name, samples=1)
        bad = _copy(used)
        key = "theta" if name == "rebar" else "baseline.numerator"
        bad[key][0] = float("inf")
        fresh = _used(name, samples=1, calls=1)
        before = _copy(fresh)
        with pytest.raises(ValueError, match="NaN or inf"):
            fresh.load_state_dict(bad)
        assert _same(before, fresh)
    old = _copy(rebar)
    old["_extra_state"] = {"calls": old["_extra_state"]["calls"]}   # saved before states carried their meaning
    sg.get_estimator("rebar").load_state_dict(old)


@pytest.mark.parametrize("case", ["huge losses", "huge lr"])
def test_a_tuning_step_that_would_overflow_changes_nothing_and_says_so(case):
    """The guard checks the step's result, not only its gradient: Adam's second moment overflowing (losses ~1e12 in
    float32) or a learning rate that sends the tuned values to inf leaves the state bitwise as it was, with an error
    (or silently with skip_nonfinite)."""
    from stochgrad import problems

    p = problems.decoder()
    scale, lr = (1e12, 8e-2) if case == "huge losses" else (1.0, 1e38)
    f = lambda b: quadratic(b) * scale  # noqa: E731
    for skip in (False, True):
        est = sg.get_estimator("rebar", tune_every=1, lr=lr)
        est.skip_nonfinite = skip
        a = p.logits.float().expand(8, -1)
        before = _copy(est)
        call = lambda: est(f, a.clone().requires_grad_(True), 1, torch.Generator().manual_seed(1))  # noqa: E731
        if skip:
            call()
        else:
            with pytest.raises(ValueError, match="tuning step came out NaN or inf"):
                call()
        after = est.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items() if k != "_extra_state" and v.numel())
        assert torch.isfinite(est.theta).all()


def test_a_rejected_call_leaves_a_tuned_estimator_as_it_was():
    """A first call that fails after sizing the state (RELAX's network drawn on first use) leaves it unsized; a call
    skipped for NaN losses (skip_nonfinite, on the host) is not counted."""
    from stochgrad import problems

    p = problems.decoder()
    relax = sg.get_estimator("relax")
    a = p.logits.expand(4, -1).clone().requires_grad_(True)
    with pytest.raises(ValueError, match="per-sample losses"):
        relax(lambda b: b.sum(), a, 1, torch.Generator().manual_seed(0))
    assert relax.theta.numel() == 2 and relax.adam_m.numel() == 2
    rebar = _used("rebar", samples=1, calls=2)
    rebar.skip_nonfinite = True
    calls, theta = rebar.get_extra_state()["calls"], rebar.theta.clone()
    rebar(lambda b: p.f(b) * float("nan"), a, 1, torch.Generator().manual_seed(2)).sum().backward()
    assert rebar.get_extra_state()["calls"] == calls and torch.equal(rebar.theta, theta)


@pytest.mark.parametrize("make, error, words", [
    (lambda: sg.get_estimator("relax", hidden=10 ** 9), ValueError, "hidden must be at most"),
    (lambda: sg.get_estimator("rodeo", hidden=10 ** 9), ValueError, "hidden must be at most"),
    (lambda: sg.get_estimator("relax", hidden=0), ValueError, "hidden"),
    (lambda: sg.get_estimator("gumbel_rao", draws=10 ** 9), ValueError, "draws must be at most"),
    (lambda: sg.get_estimator("learned", ridge=1e300), ValueError, "ridge"),
    (lambda: sg.get_estimator("reinmax", temperature=True), TypeError, "temperature"),
    (lambda: sg.get_estimator("reinmax", temperature=float("inf")), ValueError, "temperature"),
    (lambda: sg.get_estimator("auto", decay=False), TypeError, "decay"),
    (lambda: sg.get_estimator("auto", candidates=["disarmm"]), ValueError, "did you mean 'disarm'"),
    (lambda: sg.get_estimator("auto", candidates=["straight_through"]), ValueError, "biased"),
    (lambda: sg.get_estimator("rebar", tune="yes"), TypeError, "tune"),
    (lambda: sg.StochasticBinary(123), TypeError, "estimator must be"),
    (lambda: sg.FiringRateControl(neuron=3), TypeError, "neuron"),
    (lambda: sg.DelayedBroadcast(2, local="yes"), TypeError, "local"),
    (lambda: sg.broadcast(local="yes").__enter__(), TypeError, "local"),
])
def test_every_option_is_checked_by_its_kind_where_it_is_given(make, error, words):
    """One mechanism (stochgrad.options' kinds) for every option of every estimator and layer: sizes that would
    allocate until killed, numbers that are inf in float32, booleans where numbers go and the reverse, unknown
    candidates (with a suggestion) are refused when the object is built, not at its first call."""
    with pytest.raises(error, match=words):
        make()
