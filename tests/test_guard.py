"""The call path's checks (stochgrad.guard): a bad call leaves no trace, no value is read on the host per call,
low precision is sampled in float32, and options are validated where they are given."""
import copy
import math

import pytest
import torch
from torch import nn

import stochgrad as sg
from stochgrad import guard


def quad(b):
    return (b - 0.3).square().sum(-1)


def nan_for_first(b):
    out = quad(b)
    return torch.cat([out[..., :1] * float("nan"), out[..., 1:]], -1)


def snapshot(module):
    return {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
                                        for k in a)


def used(name, **options):
    est = sg.get_estimator(name, **options)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        sg.expect(quad, torch.randn(6, 4, requires_grad=True), est, generator=g).sum().backward()
    return est


@pytest.mark.parametrize("name", ["reinforce_ma", "reinforce_optimal", "learned", "rebar", "relax"])
def test_a_nonfinite_loss_raises_and_leaves_the_state_as_it_was(name):
    est = used(name)
    before = snapshot(est)
    for bad in (nan_for_first, lambda b: quad(b) + float("inf")):
        with pytest.raises(ValueError, match="NaN or inf"):
            sg.expect(bad, torch.randn(6, 4, requires_grad=True), est)
        assert same(before, snapshot(est))
    # an empty batch changes nothing either
    sg.expect(quad, torch.zeros(0, 4, requires_grad=True), est).sum().backward()
    assert same(before, snapshot(est))
    # and the estimator goes on working
    a = torch.randn(6, 4, requires_grad=True)
    sg.expect(quad, a, est).sum().backward()
    assert torch.isfinite(a.grad).all() and not same(before, snapshot(est))


def test_skip_nonfinite_drops_the_call_silently():
    est = used("reinforce_optimal")
    est.skip_nonfinite = True
    before = snapshot(est)
    sg.expect(nan_for_first, torch.randn(6, 4, requires_grad=True), est)
    assert same(before, snapshot(est))


def test_a_nonfinite_broadcast_loss_leaves_the_layers_state():
    model = nn.Sequential(nn.Linear(3, 4), sg.FiringRateControl(sg.StochasticBinary("reinforce_optimal")),
                          nn.Linear(4, 1))
    x = torch.randn(8, 3)
    for _ in range(2):
        with sg.broadcast() as graph:
            loss = model(x).squeeze(-1).square()
        graph.backward(loss)
    before = snapshot(model)
    with sg.broadcast() as graph:
        loss = model(x).squeeze(-1).square()
    with pytest.raises(ValueError, match="NaN or inf"):
        graph.backward(loss * float("nan"))
    # the firing rates moved in the forward pass (they do not depend on the loss); the baseline did not
    after = snapshot(model)
    baseline = [k for k in before if "numerator" in k or "denominator" in k]
    assert baseline and all(torch.equal(before[k], after[k]) for k in baseline)
    # an empty batch changes no firing-rate statistic
    rate = sg.FiringRateControl(sg.StochasticBinary("straight_through"))
    rate(torch.randn(5, 4))
    before = snapshot(rate)
    rate(torch.zeros(0, 4))
    assert same(before, snapshot(rate))


def test_firing_rate_control_options():
    neuron = sg.StochasticBinary()
    for bad in ({"decay": 1.0}, {"gain": float("nan")}, {"gain": -1.0}, {"target": 1.0}, {"decay": float("nan")}):
        with pytest.raises(ValueError):
            sg.FiringRateControl(neuron, **bad)


@pytest.mark.parametrize("make, words", [
    (lambda: sg.get_estimator("gumbel", temperature=float("inf")), "temperature"),
    (lambda: sg.get_estimator("gumbel_st", temperature=0.0), "temperature"),
    (lambda: sg.get_estimator("spsa", step=float("inf")), "step"),
    (lambda: sg.get_estimator("node_perturbation", step=float("nan")), "step"),
    (lambda: sg.get_estimator("learned", ridge=float("inf")), "ridge"),
    (lambda: sg.get_estimator("reinforce_ma", decay=float("nan")), "decay"),
    (lambda: sg.get_estimator("rebar", eta=float("nan")), "eta"),
    (lambda: sg.get_estimator("rebar", temperature=float("inf")), "temperature"),
    (lambda: sg.get_estimator("rebar", tune_every=0), "tune_every"),
    (lambda: sg.get_estimator("relax", temperature_every=0), "temperature_every"),
    (lambda: sg.get_estimator("rebar", temperature_every=True), "temperature_every"),
    (lambda: sg.get_estimator("relax", hidden=0), "hidden"),
    (lambda: sg.get_estimator("relax", lr=float("nan")), "lr"),
    (lambda: sg.NoisyRectifier(float("inf")), "sigma"),
    (lambda: sg.StochasticBinary(threshold=float("nan")), "threshold"),
    (lambda: sg.StochasticTimesSmooth(threshold=2.0), "threshold"),
])
def test_options_are_validated_where_given(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_happy_path_reads_no_value_on_the_host(monkeypatch):
    """What an accelerator needs (no host-device synchronisation), shown on the CPU: with the CPU treated
    as a device whose values cost a synchronisation to read, no call reads a tensor value on the host.
    The real check, torch.cuda.set_sync_debug_mode('error'), runs in benchmarks/device/gpu_check.sh."""
    monkeypatch.setattr(guard, "HOST_READS", frozenset())
    reads = []

    def counting(method):
        original = getattr(torch.Tensor, method)

        def wrapper(self, *args, **kwargs):
            if not getattr(self, "stochgrad_host_copy", False):
                reads.append(method)
            return original(self, *args, **kwargs)
        return wrapper

    for method in ("item", "__bool__", "tolist", "__float__", "__int__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, counting(method))
    gen = torch.Generator().manual_seed(0)
    ests = {n: sg.get_estimator(n) for n in ["straight_through", "reinforce", "reinforce_ma", "reinforce_optimal",
                                               "reinforce_loo", "disarm", "arm", "gumbel_st", "learned"]}
    model = nn.Sequential(nn.Linear(3, 4), sg.FiringRateControl(sg.StochasticBinary("reinforce_optimal")),
                          nn.Linear(4, 4), sg.StochasticBinary("straight_through"), nn.Linear(4, 1))
    x = torch.randn(8, 3)
    for _ in range(5):
        for name, est in ests.items():
            a = torch.randn(8, 5, requires_grad=True)
            sg.expect(quad, a, est, 2 if name == "reinforce_loo" else 1, gen).sum().backward()
        with sg.broadcast() as graph:
            loss = model(x).squeeze(-1).square()
        graph.backward(loss)
    assert reads == [], f"host reads on the happy path: {sorted(set(reads))}"
    # a bad call is not raised by itself (that would need a read), but by the next call of that site,
    # and it never entered the state
    est = ests["reinforce_optimal"]
    before = snapshot(est)
    sg.expect(nan_for_first, torch.randn(8, 5, requires_grad=True), est)
    assert same(before, snapshot(est))
    with pytest.raises(ValueError, match="NaN or inf.*reported by a later call"):
        sg.expect(quad, torch.randn(8, 5, requires_grad=True), est)
    sg.expect(quad, torch.randn(8, 5, requires_grad=True), est)  # reported once, then it works on
    with pytest.raises(ValueError, match="logits must be finite.*later call"):
        for _ in range(3):
            sg.expect(quad, torch.full((8, 5), float("nan"), requires_grad=True), est)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_logits_are_sampled_in_float32(dtype):
    """At logit −7, P(h = 1) = σ(−7) ≈ 9.1e-4; bfloat16's grid alone would give about 4 times that."""
    B = 400000
    p = torch.sigmoid(torch.tensor(-7.0)).item()
    se = math.sqrt(p * (1 - p) / B)
    logits = torch.full((B, 1), -7.0, dtype=dtype, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    value = sg.expect(lambda b: b.sum(-1), logits, "reinforce", generator=gen)
    assert value.dtype == dtype
    assert abs(value.float().mean().item() - p) < 5 * se
    value.sum().backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad.float()).all()
    layer = sg.StochasticBinary("straight_through", generator=gen)
    out = layer(torch.full((B, 1), -7.0, dtype=dtype))
    assert out.dtype == dtype and abs(out.float().mean().item() - p) < 5 * se


@pytest.mark.parametrize("name", ["reinforce_ma", "reinforce_optimal", "learned"])
def test_host_and_device_paths_keep_the_same_state(name, monkeypatch):
    """The CPU refuses a bad call by reading it on the host (a few in-place ops on the happy path); a device
    guards it with device-side flags. Both fold in the same statistics: same gradients, same state."""
    def run():
        est, gen, grads = sg.get_estimator(name), torch.Generator().manual_seed(0), []
        for _ in range(6):
            a = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
            sg.expect(quad, a, est, generator=gen).sum().backward()
            grads.append(a.grad)
        return torch.stack(grads), est.state_dict()

    host_grads, host_state = run()
    monkeypatch.setattr(guard, "HOST_READS", frozenset())
    device_grads, device_state = run()
    assert torch.allclose(host_grads, device_grads, rtol=1e-12, atol=1e-12)
    assert host_state.keys() == device_state.keys()
    assert all(torch.allclose(host_state[k], device_state[k], rtol=1e-12, atol=1e-12) for k in host_state)


def test_a_moving_average_saved_before_version_2_loads_as_the_same_baseline():
    """Version 1 stored the raw average (c = mean / weight); version 2 stores c itself."""
    est = used("reinforce_ma")
    state = est.state_dict()
    c, weight = state["baseline.mean"].clone(), state["baseline.weight"]
    old = {"baseline.mean": c * weight, "baseline.weight": weight.clone()}
    old = type(state)(old)
    old._metadata = {"": {"version": 1}, "baseline": {"version": 1}}
    fresh = sg.get_estimator("reinforce_ma")
    fresh.load_state_dict(old)
    assert torch.allclose(fresh.baseline.mean, c) and torch.equal(fresh.baseline.weight, weight)
    again = sg.get_estimator("reinforce_ma")
    again.load_state_dict(state)  # a version-2 state loads as it is
    assert torch.equal(again.baseline.mean, c)
