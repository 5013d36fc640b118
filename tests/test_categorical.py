"""Categorical units (issue 10): the same estimators on one-hot samples, against exact enumeration of K^n states."""
import math

import pytest
import torch

import stochgrad as sg
from stochgrad import problems
from stochgrad.checks import sample_gradients
from stochgrad.exact import exact_gradient

CAT = "categorical"
PROBLEMS = {"separable": problems.categorical_separable, "nonseparable": problems.categorical_nonseparable,
            "decoder": problems.categorical_decoder}
UNBIASED = [n for n, info in sg.estimators().items() if info.unbiased and n != "exact" and CAT in info.distributions]


def test_unbiased_categorical_estimators_are_the_expected_ones():
    assert {"reinforce", "reinforce_ma", "reinforce_optimal", "reinforce_loo", "rebar", "relax", "carms"} <= set(UNBIASED)
    for name in ["exact", "straight_through", "gumbel", "gumbel_st", "gumbel_rao", "reinmax"]:
        assert CAT in sg.estimators()[name].distributions


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("name", UNBIASED)
def test_declared_unbiased_categorical_estimators_match_exact(name, problem, gen):
    p = PROBLEMS[problem]()
    est = sg.get_estimator(name)
    estimates = 3000 if name in ("rebar", "relax") else 8000
    r = sg.check_unbiased(est, p.f, p.logits, estimates=estimates, batch=400, samples=max(2, est.min_samples),
                          generator=gen, warmup=3, distribution=CAT)
    assert r.passed, f"{name} on {problem}: max |z| = {r.max_abs_z:.2f}, bias {r.bias}"
    assert torch.isfinite(r.variance).all() and (r.variance > 0).any()


@pytest.mark.parametrize("name", ["reinforce_ma", "reinforce_optimal"])
def test_moving_baselines_unbiased_at_batch_one_over_sequential_calls(name, gen):
    p = problems.categorical_decoder()
    r = sg.check_unbiased(name, p.f, p.logits, estimates=2000, batch=1, generator=gen, warmup=20, distribution=CAT)
    assert r.passed, f"{name}, batch 1: max |z| = {r.max_abs_z:.2f}"


def test_torch_distributions_at_the_door(gen):
    """OneHotCategorical and Bernoulli objects built from logits: the gradient reaches the tensor they came from."""
    p = problems.categorical_decoder()
    a = p.logits.clone().requires_grad_(True)
    sg.expect(p.f, torch.distributions.OneHotCategorical(logits=a), "exact").backward()
    assert torch.allclose(a.grad, exact_gradient(p.f, p.logits, CAT)[1])
    b = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    f = lambda h: (h - 0.2).square().sum(-1)
    v = sg.expect(f, torch.distributions.Bernoulli(logits=b), "exact")
    assert torch.allclose(v, sg.exact_expectation(f, b))
    v.backward()
    assert torch.allclose(b.grad, exact_gradient(f, b.detach())[1])


def k2(f, a):
    """The Bernoulli problem (f, a) as the K = 2 categorical one with logits (0, a)."""
    return (lambda h: f(h[..., 1])), torch.stack([torch.zeros_like(a), a], -1)


def test_two_classes_are_a_bernoulli_unit_with_logit_a1_minus_a0(gen):
    """Expectation, exact gradient, and the score-function gradient sample by sample (same noise)."""
    p = problems.nonseparable()
    a2 = torch.stack([0.4 * torch.ones_like(p.logits), p.logits + 0.4], -1)      # a1 − a0 = logits
    f2 = lambda h: p.f(h[..., 1])
    v_b, g_b = exact_gradient(p.f, p.logits)
    v_c, g_c = exact_gradient(f2, a2, CAT)
    assert torch.allclose(v_b, v_c) and torch.allclose(g_c[..., 1], g_b) and torch.allclose(g_c[..., 0], -g_b)
    for name in ["reinforce", "reinforce_loo"]:
        gb = sample_gradients(name, p.f, p.logits, 50, samples=2, generator=torch.Generator().manual_seed(7))
        gc = sample_gradients(name, f2, a2, 50, samples=2, generator=torch.Generator().manual_seed(7), distribution=CAT)
        assert torch.allclose(gc[..., 1], gb) and torch.allclose(gc[..., 0], -gb), name
    # straight-through: the categorical one goes back through softmax(a), i.e. it is already the scaled
    # variant, the K = 2 case of straight_through_sigmoid (∂h/∂a := σ'(a)), not of straight_through (:= 1)
    gb = sample_gradients("straight_through_sigmoid", p.f, p.logits, 50, generator=torch.Generator().manual_seed(7))
    gc = sample_gradients("straight_through", f2, a2, 50, generator=torch.Generator().manual_seed(7), distribution=CAT)
    assert torch.allclose(gc[..., 1], gb) and torch.allclose(gc[..., 0], -gb)
    gu = sample_gradients("straight_through", p.f, p.logits, 50, generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(gu, gb)


def test_gumbel_rao_has_gumbel_st_mean_and_lower_variance(gen):
    p = problems.categorical_nonseparable()
    st = sample_gradients("gumbel_st", p.f, p.logits, 20000, generator=gen, distribution=CAT)
    rao = sample_gradients("gumbel_rao", p.f, p.logits, 20000, generator=gen, distribution=CAT)
    se = (st.var(0) / st.shape[0] + rao.var(0) / rao.shape[0]).sqrt()
    assert ((st.mean(0) - rao.mean(0)).abs() / se).max() < 4
    assert rao.var(0).sum() < 0.8 * st.var(0).sum()


@pytest.mark.parametrize("dist", [sg.distributions.BERNOULLI, sg.distributions.CATEGORICAL], ids=str)
def test_gumbel_rao_backward_is_autograd_through_the_mean_relaxation_on_the_same_noise(dist):
    """Eq. 9 as written: the gradient of ``mean_m soften(a + G_m)``, ``G_m`` the noise given the sample, taken by
    autograd on the same draws, equals the estimator's one-node backward."""
    shape = (5, 3, 4) if dist is sg.distributions.CATEGORICAL else (5, 3)
    a = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    g = torch.randn((2, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    est = sg.get_estimator("gumbel_rao", temperature=0.7, draws=6)
    h = est.sample(a, (2,), torch.Generator().manual_seed(2), dist)
    (grad,) = torch.autograd.grad((h * g).sum(), a)
    gen = torch.Generator().manual_seed(2)
    p = dist.probs(a.detach())
    h_ref = dist.sample(p, (2,), gen)
    noise = dist.conditional_noise(dist.uniform((6, 2, *shape), a, gen), h_ref, a.detach(), p)
    (ref,) = torch.autograd.grad((dist.soften(a + noise, 0.7).mean(0) * g).sum(), a)
    assert torch.equal(h, h_ref)
    torch.testing.assert_close(grad, ref, rtol=1e-12, atol=1e-12)


def test_conditional_gumbel_noise_is_the_closed_form_in_value_and_gradient():
    """``−log E_b − log p_b`` at the sampled class, ``−log(E_j + E_b p_j)`` elsewhere (Paulus et al. 2021, Alg. 2),
    written with ``where`` on the one-hot sample, against the in-place form; a masked class gets ``−log E_j``."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 2, 5, dtype=torch.float64, generator=gen)
    logits[0, 1, 2] = -math.inf
    probs = torch.softmax(logits, -1).requires_grad_(True)
    h = sg.distributions.CATEGORICAL.sample(probs.detach(), (3,), gen)
    v = torch.rand(3, 4, 2, 5, dtype=torch.float64, generator=gen)
    v_before = v.clone()
    e = -torch.log(v)
    e_b = (h * e).sum(-1, keepdim=True)
    ref = torch.where(h > 0, -torch.log(e_b * (h * probs).sum(-1, keepdim=True)), -torch.log(e + e_b * probs))
    out = sg.distributions.conditional_gumbel_noise(v, h, probs)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(out[:, 0, 1, 2], e[:, 0, 1, 2].log().neg()) and torch.equal(v, v_before)
    w = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(torch.autograd.grad((out * w).sum(), probs)[0],
                               torch.autograd.grad((ref * w).sum(), probs)[0], rtol=1e-12, atol=1e-12)


def test_reinmax_is_less_biased_than_straight_through_on_a_smooth_problem(gen):
    """Quadratic in h (Liu et al. 2023, §4: ReinMax is second-order accurate, straight-through first-order)."""
    p = problems.categorical_separable()
    exact = exact_gradient(p.f, p.logits, CAT)[1]
    bias = {}
    for name in ["straight_through", "reinmax"]:
        g = sample_gradients(name, p.f, p.logits, 20000, generator=gen, distribution=CAT)
        bias[name] = (g.mean(0) - exact).norm().item()
        se = (g.var(0).sum() / g.shape[0]).sqrt().item()
        if name == "straight_through":
            assert bias[name] > 6 * se          # its bias is real, not noise
    assert bias["reinmax"] < 0.5 * bias["straight_through"]


def test_gumbel_bias_falls_with_the_temperature(gen):
    p = problems.categorical_decoder()
    exact = exact_gradient(p.f, p.logits, CAT)[1]
    bias = []
    for t in [2.0, 1.0, 0.3]:
        g = sample_gradients(sg.get_estimator("gumbel", temperature=t), p.f, p.logits, 20000, generator=gen,
                             distribution=CAT)
        bias.append(((g.mean(0) - exact).norm().item(), (g.var(0).sum() / g.shape[0]).sqrt().item()))
    assert bias[0][0] > bias[1][0] + 3 * bias[1][1] and bias[1][0] > bias[2][0] + 3 * bias[2][1], bias


def test_optimal_baseline_is_never_worse_than_the_moving_average(gen):
    for p in problems.categorical_suite():
        var = {n: sg.check_unbiased(n, p.f, p.logits, estimates=4000, batch=200, generator=gen, warmup=5,
                                    distribution=CAT).variance.sum() for n in ["reinforce_ma", "reinforce_optimal"]}
        assert var["reinforce_optimal"] < var["reinforce_ma"], (p.name, var)   # measured: 0.73-0.90 of it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [n for n, i in sg.estimators().items() if CAT in i.distributions])
def test_dtypes_shapes_and_determinism(name, dtype):
    p = problems.categorical_decoder(dtype=dtype)
    samples = max(2, sg.get_estimator(name).min_samples)

    def grad(seed):
        a = p.logits.expand(5, -1, -1).clone().requires_grad_(True)
        v = sg.get_estimator(name)(p.f, a, samples, torch.Generator().manual_seed(seed), distribution=CAT)
        assert v.shape == (5,) and v.dtype == dtype
        v.sum().backward()
        assert a.grad.dtype == dtype and torch.isfinite(a.grad).all()
        return a.grad

    assert torch.equal(grad(3), grad(3))


def test_samples_are_one_hot_with_the_right_frequencies(gen):
    a = torch.tensor([[0.0, 1.0, -1.0, 2.0]], dtype=torch.float64)
    seen = []
    sg.expect(lambda h: seen.append(h) or h.sum((-2, -1)) * 0, a, "reinforce", 40000, gen, distribution=CAT)
    h = seen[0]
    assert ((h == 0) | (h == 1)).all() and (h.sum(-1) == 1).all()
    freq = h.mean(0)[0]
    assert ((freq - a.softmax(-1)[0]).abs() < 4 * (0.25 / 40000) ** 0.5).all()


def test_bad_categorical_input_is_a_clear_error():
    f = lambda h: h.sum((-2, -1))
    with pytest.raises(ValueError, match="K >= 2"):
        sg.expect(f, torch.zeros(3, 1), distribution=CAT)
    with pytest.raises(ValueError, match=r"\(\*batch, n, K\)"):
        sg.expect(lambda h: h.sum(-1), torch.zeros(4), distribution=CAT)
    with pytest.raises(ValueError, match="per-sample losses"):
        sg.expect(lambda h: h.sum(-1), torch.zeros(3, 4), distribution=CAT)     # (.., n): not one-hot aware
    with pytest.raises(ValueError, match="does not support categorical.*reinforce_optimal"):
        sg.expect(f, torch.zeros(3, 4), "disarm", distribution=CAT)
    with pytest.raises(ValueError, match="finite"):
        sg.expect(f, torch.tensor([[0.0, float("nan")]]), distribution=CAT)
    with pytest.raises(ValueError, match="finite"):
        sg.expect(f, torch.tensor([[0.0, float("inf")]]).expand(2, 2, 2), "exact", distribution=CAT)
    with pytest.raises(ValueError, match="distribution must be one of"):
        sg.expect(f, torch.zeros(3, 4), distribution="poisson")
    with pytest.raises(TypeError, match="torch.distributions"):
        sg.expect(f, torch.distributions.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="K\\^n <= 2\\^20"):
        sg.exact_expectation(f, torch.zeros(11, 4), CAT)


def test_a_stateful_estimator_is_unchanged_by_a_rejected_call():
    est = sg.get_estimator("reinforce_optimal")
    p = problems.categorical_decoder()
    a = p.logits.clone().requires_grad_(True)
    est(p.f, a, distribution=CAT)
    before = {k: v.clone() for k, v in est.state_dict().items()}
    with pytest.raises(ValueError):
        est(p.f, torch.full_like(a, float("nan")), distribution=CAT)
    assert all(torch.equal(v, est.state_dict()[k]) for k, v in before.items())


def test_categorical_vae_trains_and_reports(tmp_path, capsys):
    import json

    from stochgrad.cli import main
    args = ["train", "vae", "--dataset", "digits", "--categories", "4", "--latents", "3", "--batch-size", "16",
            "--samples", "2", "--steps", "30", "--test-samples", "5", "--test-examples", "40", "--log-every", "10",
            "--quiet"]
    assert main([*args, "--estimator", "carms", "--out", str(tmp_path / "carms")]) == 0
    s = json.loads((tmp_path / "carms" / "summary.json").read_text())
    assert s["categories"] == 4 and s["latents"] == 3 and s["steps"] == 30
    assert -200 < s["test_elbo_5_samples"] < 0 and -200 < s["train_elbo_5_samples"] < 0
    with pytest.raises(SystemExit):
        main([*args, "--estimator", "disarm", "--out", str(tmp_path / "disarm")])
    assert "does not support categorical" in capsys.readouterr().err


def test_categorical_vae_bound_and_kl_are_exact_on_a_tiny_model(gen):
    """The IW bound's pieces: log q and KL of the categorical latents against enumeration."""
    from stochgrad.distributions import CATEGORICAL
    from stochgrad.studies.vae import VAE
    q, p = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64), torch.randn(3, 4, generator=gen, dtype=torch.float64)
    kl = sg.exact_expectation(lambda h: CATEGORICAL.log_prob(h, q) - CATEGORICAL.log_prob(h, p.expand_as(q)), q, CAT)
    assert torch.allclose(kl, CATEGORICAL.kl(q, p))
    with pytest.raises(ValueError, match="categories >= 2"):
        VAE(10, 3, distribution="categorical", categories=1)


# --- the network view: a categorical layer under a binary one, against enumeration of both ---------------
NC, KC, NB = 2, 3, 2


def categorical_net(est1, est2="reinforce_optimal", seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, NC * KC),
                              sg.StochasticCategorical(est1, categories=KC, generator=torch.Generator().manual_seed(1)),
                              torch.nn.Linear(NC * KC, NB),
                              sg.StochasticBinary(est2, generator=torch.Generator().manual_seed(2)),
                              torch.nn.Linear(NB, 2)).double()
    with torch.no_grad():
        for m in net:
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(2)
    return net


def net_data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)


def exact_net_grads(net, x, y):
    """Gradient of the mean over examples of E[L], enumerating the 3^2 categorical × 2^2 binary states."""
    from stochgrad.distributions import CATEGORICAL, all_states, log_prob
    s1 = CATEGORICAL.states(torch.zeros(NC, KC, dtype=x.dtype))                # (9, NC, KC)
    a1 = net[0](x).unflatten(-1, (NC, KC))                                       # (E, NC, KC)
    p1 = CATEGORICAL.log_prob(s1.unsqueeze(1), a1).exp()                        # (9, E)
    s2 = all_states(NB, x)                                                       # (4, NB)
    p2 = log_prob(s2.unsqueeze(1), net[2](s1.flatten(-2)).unsqueeze(0)).exp()   # (4, 9)
    L = (net[4](s2).unsqueeze(1) - y).square().sum(-1)                          # (4, E)
    expected = (p1.unsqueeze(0) * p2.unsqueeze(-1) * L.unsqueeze(1)).sum((0, 1))
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(expected.mean(), list(net.parameters()))])


def net_grads(net, x, y, calls, replicas, local=False):
    X, Y, out = x.repeat(replicas, 1), y.repeat(replicas, 1), []
    for _ in range(calls):
        net.zero_grad()
        with sg.broadcast(local=local) as graph:
            loss = (net(X) - Y).square().sum(-1)
        graph.backward(loss)
        out.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    return torch.stack(out)


@pytest.mark.parametrize("local", [False, True])
def test_categorical_layer_reinforce_optimal_is_unbiased_in_a_two_layer_net(local):
    net = categorical_net("reinforce_optimal")
    x, y = net_data()
    exact = exact_net_grads(net, x, y)
    g = net_grads(net, x, y, calls=300, replicas=40, local=local)
    z = (g.mean(0) - exact) / (g.std(0) / g.shape[0] ** 0.5).clamp_min(1e-12)
    assert z.abs().max() < 4, z
    assert net[1].estimator.baseline.numerator.shape == (NC * KC,)   # per unit and class, in a buffer
    assert "1.estimator.baseline.numerator" in net.state_dict()


def test_categorical_layer_straight_through_shows_its_bias_and_delayed_broadcast_works():
    x, y = net_data()
    net = categorical_net("straight_through")
    exact = exact_net_grads(net, x, y)
    g = net_grads(net, x, y, calls=200, replicas=40)
    z = (g.mean(0) - exact) / (g.std(0) / g.shape[0] ** 0.5).clamp_min(1e-12)
    assert z.abs().max() > 6
    net = categorical_net("reinforce", "reinforce")
    delayed = sg.DelayedBroadcast(delay=1)
    pending = []
    for step in range(3):
        with delayed.step() as handle:
            loss = (net(x) - y).square().sum(-1).detach()
        pending.append((loss, handle))
        if step >= 1:   # one step late: the oldest step's own loss, named by its handle
            net.zero_grad()
            delayed.deliver(*pending.pop(0))
            assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


def test_categorical_layer_shapes_eval_and_errors():
    layer = sg.StochasticCategorical("gumbel_st")
    a = torch.randn(5, 4, 3, requires_grad=True)
    h = layer(a)
    assert h.shape == a.shape and (h.sum(-1) == 1).all()
    (h * torch.randn(5, 4, 3)).sum().backward()
    assert a.grad.abs().sum() > 0
    layer.eval()
    assert torch.equal(layer(a).argmax(-1), a.argmax(-1))
    flat = sg.StochasticCategorical("reinmax", categories=3, eval_output="probability").eval()
    assert torch.allclose(flat(a.flatten(-2)), a.softmax(-1).flatten(-2))
    with pytest.raises(ValueError, match="does not support categorical"):
        sg.StochasticCategorical("learned")
    with pytest.raises(ValueError, match="cannot be a layer"):
        sg.StochasticCategorical("carms")
    with pytest.raises(ValueError, match="K = 3"):
        sg.StochasticCategorical("gumbel_st", categories=3)(torch.randn(2, 7))
    with pytest.raises(ValueError, match="K >= 2"):
        sg.StochasticCategorical("gumbel_st")(torch.randn(2, 7, 1))
    with pytest.raises(ValueError, match="local=True"):
        with sg.broadcast(local=True):
            sg.StochasticCategorical("straight_through")(torch.randn(2, 3, 3))


def test_compare_categorical_section(tmp_path):
    from stochgrad.studies import compare
    for K in (2, 5):   # the scaling losses' closed forms against enumeration
        a = torch.linspace(-1, 1, K, dtype=torch.float64).expand(3, K).contiguous()
        for f, mean in compare.scaling_losses("categorical", K).values():
            assert torch.allclose(sg.exact_expectation(f, a, CAT), mean(a))
    a = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)   # and the Bernoulli ones
    for f, mean in compare.scaling_losses("bernoulli").values():
        assert torch.allclose(sg.exact_expectation(f, a), mean(a))
    cfg = compare.Config.make(quick=True, estimators=["reinforce", "gumbel_st", "disarm"], problem_estimates=300,
                              scaling_D=(1, 4), scaling_estimates=100, race_steps=3, categorical_units=(1, 2, 4),
                              categorical_classes=(2, 4), timing_repeats=1)
    res = compare.run(cfg, str(tmp_path), progress=False)["categorical"]
    assert set(res["units"]) == {"reinforce", "gumbel_st"}                     # disarm: Bernoulli only
    assert set(res["problems"]["reinforce"]) == {"cat_separable", "cat_nonseparable", "cat_decoder"}
    assert res["problems"]["reinforce"]["cat_decoder"]["verdict"] == "unbiased: ok"
    text = (tmp_path / "report.md").read_text()
    assert "## Categorical units" in text and "exponent in K" in text and "issue" not in text
    assert (tmp_path / "categorical_scaling.png").stat().st_size > 5000


@pytest.mark.parametrize("flag", [["--categorical"], ["--distribution", "categorical"]], ids=["short", "long"])
def test_check_command_on_categorical_problems(capsys, flag):
    from stochgrad.cli import main
    assert main(["check", *flag, "--estimators", "reinforce,disarm,straight_through", "--estimates", "1000",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "cat_decoder" in out and "reinforce " in out and "disarm" not in out.split("problems:")[0]
    assert "biased, as declared" in out
    assert "skipped, no categorical units: disarm" in captured.err


@pytest.mark.parametrize("name", ["gumbel_st", "gumbel_rao", "rebar", "reinforce", "carms"])
def test_sharded_noise_splits_categorical_units_along_the_batch(name):
    """Two ranks with half the batch each and a Sharded generator see the noise one process sees."""
    from stochgrad.sampling import Sharded
    p = problems.categorical_decoder()
    a = p.logits.expand(6, -1, -1).clone()
    est = sg.get_estimator(name, tune=False) if name == "rebar" else sg.get_estimator(name)
    S = max(2, est.min_samples)

    def grad(logits, generator):
        x = logits.clone().requires_grad_(True)
        est(p.f, x, S, generator, distribution=CAT).sum().backward()
        return x.grad

    whole = grad(a, torch.Generator().manual_seed(5))
    halves = [grad(a[3 * r:3 * (r + 1)], Sharded(torch.Generator().manual_seed(5), r, 2)) for r in range(2)]
    assert torch.allclose(torch.cat(halves), whole)


@pytest.mark.parametrize("samples, K", [(4, 4), (3, 6)])
def test_carms_is_unbiased_for_more_samples_and_classes(samples, K, gen):
    """Beyond the S = 2 of the shared test: the copula's pair law for S > 2, and more orderings (K = 6: 15)."""
    p = problems.categorical_decoder(n=2, K=K)
    r = sg.check_unbiased("carms", p.f, p.logits, estimates=8000, batch=400, samples=samples, generator=gen,
                          distribution=CAT)
    assert r.passed, f"S={samples}, K={K}: max |z| = {r.max_abs_z:.2f}"


@pytest.mark.parametrize("rotations", [1, 4])
def test_carms_orderings_stack_the_classes_as_stated(rotations):
    """Every pair of classes at the two ends; the probability below each class in each ordering, from the closed form,
    equals the sum over the classes before it in the ordering written out."""
    from stochgrad.estimators.carms import lower_edges, orderings
    K = 6
    a, b, r = orderings(K, rotations, "cpu")
    assert {(x, y) for x, y in zip(a.tolist(), b.tolist())} == {(x, y) for x in range(K) for y in range(x + 1, K)}
    assert len(a) == rotations * K * (K - 1) // 2
    p = torch.softmax(torch.randn(1, 1, K, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    for c in range(K):
        got = lower_edges(p, torch.tensor([[[c]]]), a, b, r)[0, 0]
        for k, (x, y, s) in enumerate(zip(a.tolist(), b.tolist(), r.tolist())):
            order = [x, *[d for d in [(s + m) % K for m in range(K)] if d not in (x, y)], y]
            assert got[k].item() == pytest.approx(p[0, 0, order[:order.index(c)]].sum().item(), abs=1e-12)


def test_carms_with_more_arrangements_is_unbiased(gen):
    p = problems.categorical_decoder(n=2, K=6)
    r = sg.check_unbiased(sg.get_estimator("carms", rotations=4), p.f, p.logits, estimates=8000, batch=400,
                          samples=2, generator=gen, distribution=CAT)
    assert r.passed, f"max |z| = {r.max_abs_z:.2f}"


def test_carms_is_invariant_to_a_constant_added_to_f():
    """CARMS's signal is a weighted difference f(z_i) − f(z_j): a constant added to f cancels sample by sample."""
    p = problems.categorical_decoder()
    grads = []
    for shift in [0.0, 1e3]:
        a = p.logits.expand(50, -1, -1).clone().requires_grad_(True)
        sg.expect(lambda h: p.f(h) + shift, a, "carms", 4, torch.Generator().manual_seed(7), distribution=CAT).sum().backward()
        grads.append(a.grad)
    assert grads[0].abs().max() > 0.1 and torch.allclose(grads[0], grads[1], rtol=0, atol=1e-9)


def test_carms_pair_weight_for_two_classes_is_the_arms_factor():
    """K = 2: a pair of different classes has weight p(1−p)/(q − C(q, q)), ARMS's debiasing factor."""
    from stochgrad.estimators.arms import copula_cdf
    from stochgrad.estimators.carms import pair_law
    p1 = torch.tensor([0.1, 0.3, 0.5, 0.8], dtype=torch.float64)
    probs = torch.stack([1 - p1, p1], -1).unsqueeze(-2)                   # (4 examples, 1 unit, 2)
    for S in [2, 3, 5]:
        z = torch.tensor([0, 1] + [0] * (S - 2)).view(S, 1, 1).expand(S, 4, 1)
        i, j, q_pairs = pair_law(probs, z, S)
        assert (i[0], j[0]) == (0, 1)
        w = probs[..., 0, 0] * probs[..., 0, 1] / q_pairs[0, :, 0]
        q = torch.minimum(p1, 1 - p1)
        assert torch.allclose(w, p1 * (1 - p1) / (q - copula_cdf(q, S))), S


@pytest.mark.parametrize("name, samples", [("reinforce", 1), ("reinforce_ma", 1), ("reinforce_optimal", 1),
                                           ("reinforce_loo", 4), ("reinforce", 3), ("reinforce_optimal", 2)])
def test_index_samples_give_the_one_hot_estimate(name, samples):
    """``distribution="categorical_index"``: ``f`` reads class indices; the same noise draws the same classes as the
    one-hot law, so the estimate, its gradient and the baseline's state equal the one-hot path's with ``f`` of the
    one-hot (proven unbiased against ``exact``), also with a masked class (gradient 0 there, nothing NaN)."""
    p = problems.categorical_decoder(n=3, K=5)
    logits = p.logits.expand(40, -1, -1).clone()
    logits[:, 1, 2] = -math.inf
    runs = {}
    for law, f in [(CAT, p.f), ("categorical_index", lambda z: p.f(torch.nn.functional.one_hot(z, 5).double()))]:
        est = sg.get_estimator(name)
        a = logits.clone().requires_grad_(True)
        for seed in range(3):   # the baselines' state carries from call to call
            a.grad = None
            value = sg.expect(f, a, est, samples, torch.Generator().manual_seed(seed), distribution=law)
            value.sum().backward()
        runs[law] = (value.detach(), a.grad, {k: v.clone() for k, v in est.state_dict().items()})
    (v1, g1, s1), (v2, g2, s2) = runs[CAT], runs["categorical_index"]
    assert torch.isfinite(g2).all() and (g2[:, 1, 2] == 0).all() and g2.abs().sum() > 0
    torch.testing.assert_close(v2, v1)
    torch.testing.assert_close(g2, g1, rtol=1e-12, atol=1e-12)
    assert s1.keys() == s2.keys() and all(torch.allclose(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize("name, samples", [("reinforce", 1), ("reinforce_loo", 3)])
def test_index_samples_are_unbiased_against_exact(name, samples, gen):
    p = problems.categorical_decoder(n=2, K=4)
    f = lambda z: p.f(torch.nn.functional.one_hot(z, 4).double())   # noqa: E731
    r = sg.check_unbiased(name, f, p.logits, estimates=4000, batch=200, samples=samples, generator=gen,
                          distribution="categorical_index")
    assert r.passed, f"max |z| = {r.max_abs_z:.2f}"


@pytest.mark.parametrize("samples", [1, 3])
def test_index_samples_of_low_precision_logits_and_integer_losses(samples):
    """bfloat16 logits are sampled and scored in float32, the indices handed to f as they are; f may count (int64
    losses): the estimate equals float32 logits' on the same noise (to bfloat16 rounding of the logits)."""
    logits = torch.randn(50, 4, 6, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    target = torch.tensor([0, 2, 5, 1])
    runs = []
    for dtype in [torch.bfloat16, torch.float32]:
        a = logits.to(dtype).clone().requires_grad_(True)
        value = sg.expect(lambda z: (z == target).sum(-1), a, "reinforce_loo" if samples > 1 else "reinforce",
                          samples, torch.Generator().manual_seed(2), distribution="categorical_index")
        value.float().sum().backward()
        runs.append((value, a.grad))
    (v16, g16), (v32, g32) = runs
    assert v16.dtype == torch.bfloat16 and v32.dtype == torch.float32 and (v32 != v32.round()).any() == (samples > 1)
    torch.testing.assert_close(v16.float(), v32, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(g16.float(), g32, rtol=2e-2, atol=2e-2)


def test_index_samples_are_what_f_receives_and_refused_where_f_must_be_differentiated():
    seen = []
    logits = torch.zeros(6, 2, 7, requires_grad=True)
    sg.expect(lambda z: seen.append(z) or z.sum(-1).double(), logits, "reinforce", distribution="categorical_index")
    assert seen[0].dtype == torch.int64 and seen[0].shape == (6, 2) and 0 <= seen[0].min() and seen[0].max() < 7
    with pytest.raises(ValueError, match="categorical_index"):
        sg.expect(lambda z: z.sum(-1).double(), logits, "gumbel_st", distribution="categorical_index")


# one unit of a trained categorical VAE's encoder (10 classes) where CARMS once drew classes 0 and 6 together: their
# pair probability q is about 5e-9, a difference of copula terms near 1
SATURATED = [3.7317e-4, 1.4099e-3, 1.5029e-7, 3.1501e-4, 8.3641e-5, 0.99780, 5.2257e-7, 1.3702e-5, 7.5893e-7, 3.0064e-8]


def test_carms_pair_law_of_rare_classes_needs_float64():
    """At the saturated unit with S = 4, float32 cancels q(0, 6) below zero (the weight p p'/q was then clamped to
    1e28 and the VAE diverged); float64 agrees with the same four copula terms summed in 40-digit decimals."""
    from decimal import Decimal, getcontext
    from stochgrad.estimators.carms import lower_edges, orderings, pair_law
    getcontext().prec = 40
    S, k = 4, 3
    p64 = torch.tensor(SATURATED, dtype=torch.float64)
    p64 = (p64 / p64.sum()).view(1, 1, 10)
    z = torch.tensor([0, 6, 5, 5]).view(S, 1, 1)
    _, _, q32 = pair_law(p64.float(), z, S)
    _, _, q64 = pair_law(p64, z, S)
    a, b, r = orderings(10, 1, "cpu")
    pc = p64[0, 0, [0, 6]].view(2, 1)
    lo = lower_edges(p64, torch.tensor([0, 6]).view(2, 1, 1, 1), a, b, r)[:, 0, 0]      # (2, P)
    lo = torch.where(p64[0, 0, a] > p64[0, 0, b], 1 - lo - pc, lo).clamp(0, 1)          # the rarer end first

    def cdf(x, y):   # the copula's bivariate CDF, max(x^(1/k) + y^(1/k) − 1, 0)^k
        t = x ** (Decimal(1) / k) + y ** (Decimal(1) / k) - 1
        return t ** k if t > 0 else Decimal(0)

    total = Decimal(0)
    w0, w1 = (Decimal(x) for x in pc.flatten().tolist())
    for l0, l1 in zip(lo[0].tolist(), lo[1].tolist()):
        l0, l1 = Decimal(l0), Decimal(l1)
        h0, h1 = min(l0 + w0, Decimal(1)), min(l1 + w1, Decimal(1))
        total += cdf(h0, h1) - cdf(l0, h1) - cdf(h0, l1) + cdf(l0, l1)
    exact = float(total / len(a))
    assert q64[0].item() == pytest.approx(exact, rel=1e-6) and exact > 0
    assert q32[0].item() <= 0                                                   # float32 cannot resolve it


def test_carms_estimates_float32_logits_in_float64():
    """CARMS draws and weighs in float64 whatever the logits' dtype: float32 logits get the float64 logits' estimate
    on the same noise, to float32 rounding, also at saturated probabilities; every gradient finite and moderate."""
    logits = torch.tensor(SATURATED, dtype=torch.float64).log().expand(2000, 3, 10).contiguous()
    def f(h):   # a loss that weighs the classes unevenly, in the samples' dtype
        w = torch.linspace(-3, 5, 10, dtype=h.dtype)
        return (h * w).sum(-1).sin().sum(-1)

    grads = {}
    for dtype in [torch.float64, torch.float32]:
        a = logits.to(dtype).clone().requires_grad_(True)
        sg.expect(f, a, "carms", 4, torch.Generator().manual_seed(3), distribution=CAT).sum().backward()
        grads[dtype] = a.grad.double()
    assert torch.isfinite(grads[torch.float32]).all() and grads[torch.float64].abs().max() < 1e3
    assert torch.allclose(grads[torch.float32], grads[torch.float64], rtol=1e-4, atol=1e-5)


def paper_toy(alpha: float, seed: int = 0):
    """Dimitriev & Zhou 2021's toy (official ``toy.py``): 3 units of 3 classes, f = Σ_{i,k} 3(3i + k + 1)·h_ik,
    probabilities drawn from Dirichlet(α, α, α)."""
    g = torch.Generator().manual_seed(seed)
    probs = torch._standard_gamma(torch.full((3, 3), alpha, dtype=torch.float64), generator=g)
    weights = 3 * torch.arange(1, 10, dtype=torch.float64).view(3, 3)
    return (lambda h: (h * weights).sum((-2, -1))), (probs / probs.sum(-1, keepdim=True)).log()


def test_carms_has_lower_variance_than_reinforce_loo_on_the_papers_toy(gen):
    """The paper's toy (α = 10) at its M = 3 samples: CARMS's total variance is below leave-one-out's by more
    than 4 standard errors of the difference (each variance's SE from the spread of ‖g − ḡ‖² over N = 20000
    estimates). Measured: ratio 0.88, the difference about 14 SE."""
    f, logits = paper_toy(10.0)
    exact = exact_gradient(f, logits, CAT)[1]
    stats = {}
    for name in ["reinforce_loo", "carms"]:
        g = sample_gradients(sg.get_estimator(name), f, logits, 20000, samples=3, generator=gen, distribution=CAT)
        dev = (g - g.mean(0)).square().flatten(1).sum(-1)
        stats[name] = (dev.mean().item(), dev.std().item() / len(dev) ** 0.5)
        z = (g.mean(0) - exact) / (g.var(0) / len(g)).sqrt()
        assert z.abs().max() < 4, (name, z)
    (v_loo, se_loo), (v_carms, se_carms) = stats["reinforce_loo"], stats["carms"]
    assert v_carms + 4 * (se_loo ** 2 + se_carms ** 2) ** 0.5 < v_loo, stats


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_categorical_logits_are_sampled_in_float32(dtype):
    """Logits (0, 0, −7): P(class 2) = e^−7/(2 + e^−7) ≈ 4.6e-4, which sampling on bfloat16's own grid never
    draws (its 1 − P rounds to 1). Functional view and layer sample in float32 and answer in the logits' dtype."""
    B = 400000
    p = math.exp(-7) / (2 + math.exp(-7))
    se = math.sqrt(p * (1 - p) / B)
    logits = torch.tensor([0.0, 0.0, -7.0]).expand(B, 1, 3).to(dtype).requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    value = sg.expect(lambda h: h[..., 0, 2], logits, "reinforce", generator=gen, distribution=CAT)
    assert value.dtype == dtype and abs(value.float().mean().item() - p) < 5 * se
    value.sum().backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad.float()).all()
    for name in ["straight_through", "reinforce_optimal"]:
        a = logits.detach().clone().requires_grad_(True)
        layer = sg.StochasticCategorical(name, generator=gen)
        if layer.estimator.pathwise:
            out = layer(a)
            out[..., 0, 2].float().sum().backward()
        else:
            with sg.broadcast() as graph:
                out = layer(a)
            graph.backward(out[..., 0, 2].float())
        assert out.dtype == dtype and abs(out[..., 0, 2].float().mean().item() - p) < 5 * se, name
        assert a.grad.dtype == dtype and torch.isfinite(a.grad.float()).all() and a.grad.float().abs().sum() > 0, name
