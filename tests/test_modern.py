"""Estimators beyond the paper (issue 4): known variance relations, tuning, temperatures, perturbations."""
import math

import pytest
import torch

import stochgrad as sg
from stochgrad import problems
from stochgrad.checks import sample_gradients
from stochgrad.estimators import rebar_hand
from stochgrad.exact import all_states, exact_expectation, exact_gradient

HARD = {"nonseparable": problems.nonseparable, "decoder": problems.decoder, "two_layer": problems.two_layer}


@pytest.mark.parametrize("problem", HARD)
def test_disarm_variance_at_most_arm(problem, gen):
    """DisARM is ARM Rao-Blackwellised over u given the pair (b, b~): never more variance."""
    p = HARD[problem]()
    arm = sg.check_unbiased("arm", p.f, p.logits, estimates=30000, generator=gen)
    disarm = sg.check_unbiased("disarm", p.f, p.logits, estimates=30000, generator=gen)
    assert arm.passed and disarm.passed
    assert disarm.variance.sum() < arm.variance.sum()


@pytest.mark.parametrize("name", ["rebar", "relax"])
@pytest.mark.parametrize("problem", ["decoder", "two_layer", "nonseparable"])
def test_rebar_relax_tuning_lowers_variance_and_stays_unbiased(name, problem, gen):
    p = HARD[problem]()
    est = sg.get_estimator(name, tune=False)
    before = sg.check_unbiased(est, p.f, p.logits, estimates=6000, batch=500, generator=gen)
    start = est.theta.clone()
    est.tune = True
    sample_gradients(est, p.f, p.logits, estimates=150 * 100, batch=100, generator=gen)   # 150 calls
    assert start.shape != est.theta.shape or not torch.equal(start, est.theta), "tuning moved nothing"
    # still unbiased while it keeps tuning during the measurement
    during = sg.check_unbiased(est, p.f, p.logits, estimates=6000, batch=100, generator=gen)
    assert during.passed, f"max |z| {during.max_abs_z:.2f}"
    est.tune = False
    after = sg.check_unbiased(est, p.f, p.logits, estimates=6000, batch=500, generator=gen)
    assert after.passed
    assert after.variance.sum() < before.variance.sum()


def test_gumbel_bias_falls_and_variance_grows_as_temperature_falls(gen):
    p = problems.decoder()
    runs = [sg.check_unbiased(sg.get_estimator("gumbel", temperature=t), p.f, p.logits, estimates=40000,
                              generator=gen) for t in (1.0, 0.5, 0.2)]
    bias = [r.bias.norm().item() for r in runs]
    var = [r.variance.sum().item() for r in runs]
    assert all(r.bias_detected for r in runs[:2])
    assert bias[0] > bias[1] > bias[2] and var[0] < var[1] < var[2], (bias, var)


def expected_finite_difference(p, c):
    """Exact mean of the finite-difference estimator: central differences of E[f] (enumeration)."""
    eye = torch.eye(p.n, dtype=p.logits.dtype)
    return (exact_expectation(p.f, p.logits + c * eye) - exact_expectation(p.f, p.logits - c * eye)) / (2 * c)


def expected_spsa(p, c):
    """Exact mean of SPSA: average over all 2^n Rademacher directions Δ of central differences along Δ."""
    delta = 2 * all_states(p.n, p.logits) - 1
    diff = exact_expectation(p.f, p.logits + c * delta) - exact_expectation(p.f, p.logits - c * delta)
    return (diff.unsqueeze(-1) * delta / (2 * c)).mean(0)


@pytest.mark.parametrize("name, expected", [("finite_difference", expected_finite_difference),
                                            ("spsa", expected_spsa)])
def test_perturbation_means_are_finite_differences_whose_bias_shrinks_with_the_step(name, expected, gen):
    p = problems.decoder()
    exact = exact_gradient(p.f, p.logits)[1]
    # the implementation's mean is the documented finite difference of E[f] ...
    r = sg.check_unbiased(sg.get_estimator(name, step=1.0), p.f, p.logits, estimates=40000, generator=gen)
    z = (r.mean - expected(p, 1.0)) / r.standard_error
    assert z.abs().max() < 4, z
    assert r.bias_detected
    # ... whose bias falls like c² as the step shrinks
    bias = [(expected(p, c) - exact).norm().item() for c in (1.0, 0.5, 0.25, 0.1)]
    assert bias[0] > bias[1] > bias[2] > bias[3]
    assert bias[2] / bias[3] == pytest.approx((0.25 / 0.1) ** 2, rel=0.15)


def test_node_perturbation_bias_shrinks_with_the_perturbation(gen):
    p = problems.decoder()
    big = sg.check_unbiased(sg.get_estimator("node_perturbation", step=1.0), p.f, p.logits, estimates=200000,
                            generator=gen)
    small = sg.check_unbiased(sg.get_estimator("node_perturbation", step=0.25), p.f, p.logits,
                              estimates=200000, generator=gen)
    assert big.bias_detected
    assert big.bias.norm() > 3 * small.bias.norm()
    assert small.variance.sum() > big.variance.sum()


@pytest.mark.parametrize("name", list(sg.estimators()))
def test_each_estimator_costs_the_evaluations_it_declares(name):
    p = problems.decoder()
    calls = []

    def counted(b):
        calls.append(b.shape[:-2].numel())  # points per example: every dim but (batch, n)
        return p.f(b)

    est = sg.get_estimator(name)
    S = max(3, est.min_samples)
    a = p.logits.expand(4, -1).clone().requires_grad_(True)
    est(counted, a, samples=S, generator=torch.Generator().manual_seed(0)).sum().backward()
    if name == "auto":   # its first call measures every candidate beside the chosen one; it counts what it spends
        assert sum(calls) == est.report()["evaluations_spent"] > est.evaluations(p.n, S) and est.evaluations(p.n, S) <= S
        return
    assert sum(calls) == est.evaluations(p.n, S)
    assert str(sg.estimators()[name].cost)
    expected = {"exact": 2 ** p.n, "finite_difference": 2 * p.n * S, "arm": 2 * S, "disarm": 2 * S, "spsa": 2 * S,
                "node_perturbation": 2 * S, "rebar": 3 * S, "relax": 3 * S}.get(name, S)
    assert sum(calls) == expected


def test_relax_state_dict_resumes_into_a_fresh_estimator(gen):
    p = problems.decoder()
    used = sg.get_estimator("relax")
    sample_gradients(used, p.f, p.logits, estimates=1000, batch=100, generator=gen)
    fresh = sg.get_estimator("relax")
    fresh.load_state_dict(used.state_dict())
    used.tune = fresh.tune = False
    g1 = sample_gradients(used, p.f, p.logits, 50, generator=torch.Generator().manual_seed(1))
    g2 = sample_gradients(fresh, p.f, p.logits, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("name", ["gumbel", "gumbel_st", "straight_through"])
def test_pathwise_estimators_reach_parameters_before_the_logits(name, gen):
    """Pathwise estimators need no L: the gradient flows by autograd into whatever made the logits."""
    lin = torch.nn.Linear(3, 4).double()
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    sg.expect(lambda b: (b - 0.3).square().sum(-1), lin(x), name, generator=gen).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def _total_variance(est, p, gen, n=6000):
    """Σ_i Var(ĝ_i) of one estimate, with its standard error (from the per-estimate squared deviations)."""
    g = sample_gradients(est, p.f, p.logits, estimates=n, batch=1000, generator=gen)
    d = (g - g.mean(0)).square().sum(-1) * n / (n - 1)
    return d.mean().item(), d.std().item() / n ** 0.5


@pytest.mark.parametrize("name", ["rebar", "relax"])
@pytest.mark.parametrize("problem", ["two_layer", "nonseparable"])
def test_tuning_every_few_calls_tunes_as_well_as_every_call(name, problem):
    """Defaults (rebar: tune every 8th call, lr 8e-2; relax: every 4th, 4e-2, 10 hidden units, its temperature every
    2nd step) against the former setting (every call, every term, lr 1e-2; relax with its former 16 hidden units),
    100 calls each."""
    p = HARD[problem]()
    result = []
    former = {"tune_every": 1, "temperature_every": 1, "lr": 1e-2, **({"hidden": 16} if name == "relax" else {})}
    for options in ({}, former):
        est = sg.get_estimator(name, **options)
        gen = torch.Generator().manual_seed(0)
        sample_gradients(est, p.f, p.logits, estimates=100 * 100, batch=100, generator=gen)
        est.tune = False
        result.append(_total_variance(est, p, torch.Generator().manual_seed(1)))
    (new, se_new), (old, se_old) = result
    assert new < old + 4 * (se_new ** 2 + se_old ** 2) ** 0.5, (new, old)


TUNED = {"rebar": 1, "relax": 1, "double_cv": 2, "rodeo": 2}   # every Tuned estimator: its samples per estimate


def test_every_tuned_estimator_is_listed_here():
    from stochgrad.estimators import REGISTRY
    from stochgrad.estimators.base import Tuned

    assert {n for n, cls in REGISTRY.items() if issubclass(cls, Tuned)} == set(TUNED)


@pytest.mark.parametrize("name", TUNED)
def test_tuned_state_is_not_a_model_parameter(name):
    """A user's optimiser never sees (nor steps) what the estimator tunes itself (issue 14.15)."""
    p = problems.decoder()
    est = sg.get_estimator(name)
    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(3, p.n).double(), "estimator": est})
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x = torch.randn(20, 3, dtype=torch.float64)
    start = est.theta.clone()
    for step in range(3):
        opt.zero_grad()
        est(p.f, model["encoder"](x), TUNED[name], torch.Generator().manual_seed(step)).sum().backward()
        before = est.theta.clone()
        opt.step()
        assert torch.equal(before, est.theta)
    assert start.shape != est.theta.shape or not torch.equal(start, est.theta), "the tuner moved nothing"
    assert list(est.parameters()) == [] and any(k.endswith("estimator.theta") for k in model.state_dict())
    assert {id(q) for q in model.parameters()} == {id(q) for q in model["encoder"].parameters()}


@pytest.mark.parametrize("name", TUNED)
def test_tuned_state_is_initialised_from_the_generator(name):
    """Same seed, same tuned state (RELAX's and RODEO's networks included), whatever the global RNG did."""
    p = problems.decoder()
    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        est = sg.get_estimator(name)
        sample_gradients(est, p.f, p.logits, estimates=300, batch=100, samples=TUNED[name],
                         generator=torch.Generator().manual_seed(0))
        states.append(est.theta.clone())
    assert torch.equal(states[0], states[1])
    if name in ("relax", "rodeo"):
        assert states[0].numel() > 2


@pytest.mark.parametrize("name", TUNED)
def test_a_nonfinite_loss_leaves_the_tuned_state_as_it_was(name):
    """Every Tuned estimator: a call with NaN/inf losses raises and changes nothing (its Adam moments and its
    call counter included); an empty batch changes nothing either."""
    p = problems.decoder()
    est = sg.get_estimator(name, tune_every=1)
    sample_gradients(est, p.f, p.logits, estimates=200, batch=100, samples=TUNED[name],
                     generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in est.state_dict().items()}

    def nan_first(b):
        out = p.f(b)
        return torch.cat([out[..., :1] * float("nan"), out[..., 1:]], -1)

    a = p.logits.expand(5, p.n).clone().requires_grad_(True)
    with pytest.raises(ValueError, match="NaN or inf"):
        est(nan_first, a, TUNED[name], torch.Generator().manual_seed(1))
    est(p.f, a[:0], TUNED[name], torch.Generator().manual_seed(1)).sum().backward()
    after = est.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]) if isinstance(before[k], torch.Tensor) else before[k] == after[k], k
    assert torch.isfinite(est.theta).all()


@pytest.mark.parametrize("name", TUNED)
def test_host_and_device_tuning_steps_keep_the_same_state(name, monkeypatch):
    """The CPU refuses a bad tuning step by reading it on the host and steps Adam in place; a device guards
    every buffer with a device-side flag. Same gradients, same tuned state."""
    from stochgrad import guard

    p = problems.decoder()

    def run():
        est, gen, grads = sg.get_estimator(name, tune_every=1), torch.Generator().manual_seed(0), []
        for _ in range(5):
            a = (p.logits + 0.1 * torch.randn(7, p.n, generator=gen, dtype=torch.float64)).requires_grad_(True)
            est(p.f, a, TUNED[name], gen).sum().backward()
            grads.append(a.grad)
        return torch.stack(grads), est.state_dict()

    host_grads, host_state = run()
    monkeypatch.setattr(guard, "HOST_READS", frozenset())
    device_grads, device_state = run()
    assert torch.allclose(host_grads, device_grads, rtol=1e-9, atol=1e-12)
    assert host_state.keys() == device_state.keys()
    for k, v in host_state.items():
        assert torch.allclose(v, device_state[k], rtol=1e-9, atol=1e-12) if torch.is_tensor(v) else v == device_state[k], k
    assert host_state["adam_steps"].item() == 5


@pytest.mark.parametrize("name", ["rebar", "relax"])
@pytest.mark.parametrize("samples, batch", [(1, 6), (3, 6), (1, 1)])
def test_the_hand_chained_bernoulli_path_is_autograds(name, samples, batch):
    """For Bernoulli units REBAR/RELAX chain ∂_a c by hand (rebar_hand: closed-form ∂z̃/∂a, σ' and RELAX's network derivative
    written out); the generic path differentiates the conditional sample's graph by autograd. Same noise, same
    tuned values (trained a little, so the network is not zero): same estimate, and the same gradient of
    mean ‖ĝ‖² in (η, log λ, ρ): written out by hand on the Bernoulli path (one Hessian-vector product through f),
    autograd's double backward through the generic formula. A batch of 1 takes RELAX's products in the other layout."""
    from stochgrad.distributions import BERNOULLI
    from stochgrad.guard import CheckedLoss

    p = problems.nonseparable()
    est = sg.get_estimator(name, tune_every=1, lr=0.2)
    gen = torch.Generator().manual_seed(0)
    sample_gradients(est, p.f, p.logits, estimates=400, batch=20, generator=gen)   # 20 tuning steps
    a0 = p.logits + torch.randn(batch, p.n, generator=gen, dtype=torch.float64)
    u, v = torch.rand(2, *([samples] if samples > 1 else []), batch, p.n, generator=gen, dtype=torch.float64)
    f = CheckedLoss(p.f, 1, 2)
    results = []
    for route in ("hand", "autograd"):
        est.begin(a0, p.n, None)
        if route == "hand":
            grad, f_b, g = rebar_hand.estimate(est, f, a0.clone(), u.clone(), v.clone(), samples, True)  # (writes u)
        else:
            grad, f_b, pieces = est.formula(f, a0.clone(), u, v, samples, True, BERNOULLI)
            g = torch.cat(torch.autograd.grad(grad.square().sum(-1).mean(), pieces))
        results.append((grad.detach(), g))
    (hand, g_hand), (auto, g_auto) = results
    assert torch.allclose(hand, auto, rtol=1e-9, atol=1e-12)
    assert torch.allclose(g_hand, g_auto, rtol=1e-8, atol=1e-12)
    assert g_hand.abs().min() > 0 or name == "rebar"


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_the_hand_tuning_step_with_f_linear_in_its_own_parameters(name):
    """f = b·w with w a parameter: ∂f/∂σ = w needs a graph but has no Hessian in σ. The hand-written tuning gradient
    is autograd's double backward through the generic formula (which finds no path to σ either)."""
    from stochgrad.distributions import BERNOULLI
    from stochgrad.guard import CheckedLoss

    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    f = CheckedLoss(lambda b: b @ w, 1, 2)
    est = sg.get_estimator(name, tune_every=1, lr=0.2)
    gen = torch.Generator().manual_seed(0)
    a0 = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    sample_gradients(est, f, a0[0], estimates=200, batch=20, generator=gen)   # 10 tuning steps
    u, v = torch.rand(2, 6, 3, generator=gen, dtype=torch.float64)
    est.begin(a0, 3, None)
    grad, _, g_hand = rebar_hand.estimate(est, f, a0.clone(), u.clone(), v.clone(), 1, True)
    grad_auto, _, pieces = est.formula(f, a0.clone(), u, v, 1, True, BERNOULLI)
    g_auto = torch.cat([torch.zeros_like(x) if g is None else g for x, g in zip(pieces, torch.autograd.grad(
        grad_auto.square().sum(-1).mean(), pieces, allow_unused=True))])
    assert torch.allclose(grad, grad_auto, rtol=1e-9, atol=1e-12)
    assert torch.allclose(g_hand, g_auto, rtol=1e-8, atol=1e-12) and g_hand[:2].abs().min() > 0


@pytest.mark.parametrize("name", ["rebar", "relax"])
@pytest.mark.parametrize("samples", [1, 3])
def test_a_tuning_step_without_the_temperature_is_the_full_step_with_its_gradient_zero(name, samples):
    """``temperature_every``: on the tuning steps that skip the temperature (no graph of ∂f, no Hessian-vector product),
    the hand-written gradient of mean ‖ĝ‖² is the full step's with the ``log λ`` entry 0, η's and ρ's exactly the
    same; the generic autograd path (``log λ`` a leaf that does not require grad) agrees. Same estimate either way."""
    from stochgrad.distributions import BERNOULLI
    from stochgrad.guard import CheckedLoss

    p = problems.nonseparable()
    est = sg.get_estimator(name, tune_every=1, lr=0.2)
    gen = torch.Generator().manual_seed(0)
    sample_gradients(est, p.f, p.logits, estimates=400, batch=20, generator=gen)   # 20 tuning steps
    a0 = p.logits + torch.randn(6, p.n, generator=gen, dtype=torch.float64)
    u, v = torch.rand(2, *([samples] if samples > 1 else []), 6, p.n, generator=gen, dtype=torch.float64)
    f = CheckedLoss(p.f, 1, 2)
    est.begin(a0, p.n, None)
    full = rebar_hand.estimate(est, f, a0.clone(), u.clone(), v.clone(), samples, True, True)
    part = rebar_hand.estimate(est, f, a0.clone(), u.clone(), v.clone(), samples, True, False)
    grad_auto, _, pieces = est.formula(f, a0.clone(), u, v, samples, True, BERNOULLI, False)
    assert not pieces[1].requires_grad and all(x.requires_grad for i, x in enumerate(pieces) if i != 1)
    wanted = [x for x in pieces if x.requires_grad]
    g_auto = iter(torch.autograd.grad(grad_auto.square().sum(-1).mean(), wanted))
    g_auto = torch.cat([next(g_auto) if x.requires_grad else torch.zeros_like(x) for x in pieces])
    expected = full[2].clone()
    expected[1] = 0
    assert full[2][1] != 0
    assert torch.equal(part[0], full[0]) and torch.equal(part[1], full[1])
    assert torch.allclose(part[2], expected, rtol=1e-12, atol=0)
    assert torch.allclose(g_auto, expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["rebar", "relax"])
@pytest.mark.parametrize("categorical", [False, True])
def test_a_step_without_the_temperature_leaves_its_gradient_zero_through_estimate(name, categorical, monkeypatch):
    """End to end, Bernoulli (hand-written step) and categorical units (autograd, ``log λ`` a leaf without grad):
    with ``tune_every=1, temperature_every=2`` the step's gradient has ``log λ``'s entry 0 on every 2nd call, and
    its other entries non-zero; on the others every entry is non-zero."""
    from stochgrad.estimators import base

    steps = []
    take = base.Tuned._step

    def spy(self, g, count):
        steps.append(g.clone())
        return take(self, g, count)

    monkeypatch.setattr(base.Tuned, "_step", spy)
    est = sg.get_estimator(name, tune_every=1, temperature_every=2)
    gen = torch.Generator().manual_seed(0)
    if categorical:
        a = torch.randn(8, 3, 4, generator=gen, dtype=torch.float64)
        kw = {"distribution": "categorical"}
    else:
        a = torch.randn(8, 5, generator=gen, dtype=torch.float64)
        kw = {}
    target = torch.randn(a.shape, generator=gen, dtype=torch.float64)
    dims = (-2, -1) if categorical else -1
    f = lambda b: (b - target.tanh()).square().sum(dims)  # noqa: E731
    for _ in range(4):
        sg.expect(f, a.clone().requires_grad_(True), est, generator=gen, **kw).sum().backward()
    assert len(steps) == 4
    for i, g in enumerate(steps):
        assert (g[1] != 0) == (i % 2 == 0), (i, g)
        assert g[0] != 0


@pytest.mark.parametrize("name, every, tune_every", [("relax", 2, 4), ("rebar", 1, 8)])
def test_the_temperature_takes_its_second_order_pass_every_temperature_every_tuning_steps(name, every, tune_every,
                                                                                             monkeypatch):
    """Defaults: RELAX tunes every 4th call and takes the temperature's Hessian-vector product through f on every 2nd
    of those steps (calls 0, 8, ...); REBAR on each of its steps (every 8th call). Counted at the engine call."""
    from stochgrad.estimators import rebar_hand

    hvps, graphs = [], []
    vjp = rebar_hand.vjp

    def counting(out, inp, grad_out, create_graph=False, allow_unused=False):
        if allow_unused:   # the Hessian-vector product is the only call that allows unused inputs
            hvps.append(est._calls)
        elif create_graph:   # the pass that makes ∂f/∂σ, with a graph for that product
            graphs.append(est._calls)
        return vjp(out, inp, grad_out, create_graph, allow_unused)

    monkeypatch.setattr(rebar_hand, "vjp", counting)
    p = problems.nonseparable()
    est = sg.get_estimator(name)
    assert (est.tune_every, est.temperature_every) == (tune_every, every)
    gen = torch.Generator().manual_seed(0)
    sample_gradients(est, p.f, p.logits, estimates=100, batch=20, generator=gen)   # 5 calls
    resumed = sg.get_estimator(name)   # the phase travels with state_dict
    resumed.load_state_dict(est.state_dict())
    est = resumed
    sample_gradients(est, p.f, p.logits, estimates=220, batch=20, generator=gen)   # 11 more: 16 calls
    assert est.adam_steps.item() == 16 // tune_every
    assert hvps == graphs == list(range(0, 16, tune_every * every))


def test_the_conditional_logistic_slope_is_its_derivative():
    """REBAR/RELAX chain ∂z̃/∂a by hand for Bernoulli units (one backward pass through f alone): the z̃ that
    conditional_and_slope returns must be the conditional sample of Tucker et al.'s formula, and its slope
    autograd's derivative of that sample (saturated units: the limit)."""
    from stochgrad.distributions import BERNOULLI
    from stochgrad.sampling import logistic_from_uniform

    g = torch.Generator().manual_seed(0)
    a = 4 * torch.randn(50, 7, generator=g, dtype=torch.float64)
    a[:5] = torch.tensor([-40.0, -12.0, 0.0, 12.0, 40.0], dtype=torch.float64).unsqueeze(-1)
    a.requires_grad_(True)
    u, v = torch.rand(2, 50, 7, generator=g, dtype=torch.float64)
    z = a.detach() + logistic_from_uniform(u)
    h = (z >= 0).double()
    zt = BERNOULLI.conditional(v, h, a)
    (auto,) = torch.autograd.grad(zt.sum(), a)
    closed_zt, neg_slope = BERNOULLI.conditional_and_slope(v, z, h - torch.sigmoid(a.detach()), torch.ones((), dtype=torch.float64))
    closed = -neg_slope
    assert torch.equal(closed_zt >= 0, h > 0)
    assert torch.allclose(closed_zt, zt.detach(), rtol=1e-10, atol=1e-12)
    live = torch.sigmoid(a.detach()) < 1      # at a = 40, 1 − σ(a) rounds to 0: autograd's clamp gives slope 0,
    assert torch.allclose(auto[live], closed[live], rtol=1e-10, atol=1e-12)
    assert torch.equal(closed[~live], torch.ones_like(closed[~live]))   # the true slope p(1 − e^{−z̃}) ≈ 1 there




@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_the_hand_form_is_the_formula_end_to_end(name):
    """``hand=True`` (Bernoulli units chained by hand, the default) and ``hand=False`` (Eq. 6 by autograd): over ten
    tuning steps the same estimates and the same tuned state, to float64 round-off."""
    p = problems.nonseparable()
    runs = []
    for hand in (True, False):
        est = sg.get_estimator(name, tune_every=1, lr=0.2, hand=hand)
        g = sample_gradients(est, p.f, p.logits, estimates=200, batch=20, generator=torch.Generator().manual_seed(0))
        runs.append((g, est.theta.clone()))
    assert torch.allclose(runs[0][0], runs[1][0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(runs[0][1], runs[1][1], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(runs[0][1][:2], torch.tensor([1.0, math.log(0.5)], dtype=runs[0][1].dtype))  # it tuned
