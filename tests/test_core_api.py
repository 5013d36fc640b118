"""The functional API: errors, state, dtypes, determinism, the registry."""
import math

import pytest
import torch

import stochgrad as sg
from stochgrad import problems


def quad(b):
    return (b - 0.3).square().sum(-1)


@pytest.mark.parametrize("bad, err, words", [
    (torch.tensor([0.0, float("nan")]), ValueError, "finite"),
    (torch.tensor([0.0, float("inf")]), ValueError, "finite"),
    (torch.tensor([1, 2]), TypeError, "floating"),
    (torch.tensor(0.5), ValueError, "n >= 1"),
    ([0.1, 0.2], TypeError, "torch.Tensor"),
])
def test_bad_logits_are_clear_errors(bad, err, words):
    with pytest.raises(err, match=words):
        sg.expect(quad, bad, "reinforce")


def test_bad_arguments_are_clear_errors():
    logits = torch.zeros(3)
    with pytest.raises(ValueError, match="unknown estimator 'nope'.*reinforce_optimal"):
        sg.expect(quad, logits, "nope")
    with pytest.raises(ValueError, match="n <= 20"):
        sg.expect(quad, torch.zeros(21), "exact")
    with pytest.raises(ValueError, match="samples must be >= 1"):
        sg.expect(quad, logits, "reinforce", samples=0)
    with pytest.raises(ValueError, match="reinforce_loo needs at least 2"):
        sg.expect(quad, logits, "reinforce_loo", samples=1)
    with pytest.raises(TypeError, match="samples must be an int"):
        sg.expect(quad, logits, "reinforce", samples=2.0)
    with pytest.raises(ValueError, match=r"f must return per-sample losses of shape \(\*lead, \*batch\)"):
        sg.expect(lambda b: b.sum(), logits, "reinforce")
    with pytest.raises(ValueError, match="f must return"):
        sg.expect(lambda b: b, logits, "straight_through")
    with pytest.raises(TypeError, match="f must be callable"):
        sg.expect(3, logits, "reinforce")
    with pytest.raises(TypeError, match="estimator must be"):
        sg.expect(quad, logits, 3)
    with pytest.raises(TypeError, match="bad options for estimator 'reinforce_ma'"):
        sg.get_estimator("reinforce_ma", nonsense=1)
    with pytest.raises(ValueError, match="decay"):
        sg.get_estimator("reinforce_optimal", decay=1.5)
    with pytest.raises(TypeError, match="generator"):
        sg.expect(quad, logits, "reinforce", generator=3)


def test_one_site_per_estimator_object():
    est = sg.get_estimator("reinforce_optimal")
    est(quad, torch.zeros(3, requires_grad=True))
    with pytest.raises(ValueError, match="tracks 3 units but got 4"):
        est(quad, torch.zeros(4, requires_grad=True))


def test_registry_lists_every_design_name_with_its_declarations():
    info = sg.estimators()
    for name in ["exact", "straight_through", "straight_through_sigmoid", "reinforce", "reinforce_ma",
                 "reinforce_optimal", "reinforce_loo"]:
        assert name in info and str(info[name])
        assert sg.get_estimator(name).name == name
    assert info["reinforce"].unbiased and not info["straight_through"].unbiased
    assert info["straight_through"].pathwise and not info["reinforce"].pathwise


@pytest.mark.parametrize("name", ["reinforce_ma", "reinforce_optimal"])
def test_state_dict_resumes_into_a_fresh_estimator(name):
    p = problems.decoder()
    used = sg.get_estimator(name)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        used(p.f, p.logits.expand(10, -1).clone().requires_grad_(True), generator=g)
    fresh = sg.get_estimator(name)
    fresh.load_state_dict(used.state_dict())

    def step(est, seed):
        a = p.logits.expand(10, -1).clone().requires_grad_(True)
        est(p.f, a, generator=torch.Generator().manual_seed(seed)).sum().backward()
        return a.grad

    for seed in range(3):
        assert torch.equal(step(used, seed), step(fresh, seed))
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in used.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [n for n in sg.estimators()])
def test_dtypes_and_determinism(name, dtype):
    est = sg.get_estimator(name)
    samples = max(2, est.min_samples)
    p = problems.nonseparable(dtype=dtype)

    def grad(seed):
        e = sg.get_estimator(name)
        a = p.logits.expand(7, -1).clone().requires_grad_(True)
        v = e(p.f, a, samples=samples, generator=torch.Generator().manual_seed(seed))
        assert v.shape == (7,) and v.dtype == dtype
        v.sum().backward()
        assert a.grad.dtype == dtype and torch.isfinite(a.grad).all()
        return a.grad

    assert torch.equal(grad(3), grad(3))


def test_float32_reinforce_optimal_unbiased(gen):
    p = problems.decoder(dtype=torch.float32)
    r = sg.check_unbiased("reinforce_optimal", p.f, p.logits, estimates=8000, batch=400, generator=gen)
    assert r.passed


def test_exact_value_and_gradient_closed_form():
    """Separable toy: E[f] = Σ σ(a)Δ + const and ∂/∂a_i = σ'(a_i)·Δ, Δ = f(1) − f(0) per unit."""
    a = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    value, grad = sg.exact_gradient(lambda b: (b - 0.45).square().sum(-1), a)
    s = torch.sigmoid(a)
    d = 0.55 ** 2 - 0.45 ** 2
    assert math.isclose(value.item(), (s * 0.55 ** 2 + (1 - s) * 0.45 ** 2).sum().item(), rel_tol=1e-12)
    assert torch.allclose(grad, s * (1 - s) * d)


def test_a_name_is_stateless_and_warns_for_stateful_estimators():
    """expect(f, logits, name): stateless names share one object; stateful ones start afresh and say so."""
    from stochgrad.estimators import resolve

    assert resolve("reinforce") is resolve("reinforce") and not resolve("disarm").stateful
    with pytest.warns(UserWarning, match="keeps no state between calls"):
        first = resolve("reinforce_ma")
    with pytest.warns(UserWarning):
        assert first.stateful and resolve("reinforce_ma") is not first
    est = sg.get_estimator("reinforce_ma")
    assert resolve(est) is est


@pytest.mark.parametrize("name", ["reinforce", "reinforce_loo", "disarm", "straight_through", "gumbel_st"])
def test_torch_func_grad_gives_the_eager_gradient(name):
    """Under torch.func transforms the replace-gradient node (an autograd.Function with setup_context) gives the
    same gradient as eager autograd, same noise."""
    f = lambda b: (b - 0.45).square().sum(-1)  # noqa: E731
    a = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    samples = 2 if name == "reinforce_loo" else 1
    g = torch.func.grad(lambda x: sg.expect(f, x, name, samples, torch.Generator().manual_seed(0)).sum())(a)
    b = a.clone().requires_grad_(True)
    sg.expect(f, b, name, samples, torch.Generator().manual_seed(0)).sum().backward()
    assert g.abs().sum() > 0 and torch.allclose(g, b.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("units", [4, 2 ** 13], ids=["idiom", "node"])
def test_the_replace_gradient_keeps_f_parameters_gradient_and_its_value(units):
    """attach_gradient: the value is the losses' mean bitwise, f's parameters get their pathwise gradient, and
    the logits get ∂L/∂value ⊗ grad, for Bernoulli (n,) and categorical (n, K) events: below NODE_MIN elements as the
    idiom's surrogate, from it on as one node; a masked class (−inf logit, grad 0) gets gradient 0 either way."""
    from stochgrad.gradient import NODE_MIN, attach_gradient

    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for event in [(units,), (units, 3)]:
        logits = torch.randn(5, *event, dtype=torch.float64)
        grad = torch.randn(5, *event, dtype=torch.float64)
        if len(event) == 2:   # a masked class
            logits[:, 1, 2], grad[:, 1, 2] = -math.inf, 0.0
        logits.requires_grad_(True)
        value = w.square()
        out = attach_gradient(value, logits, grad)
        node = type(out.grad_fn).__name__ == "ReplaceGradientBackward"
        assert torch.equal(out, value) and node == (grad.numel() >= NODE_MIN)
        up = torch.randn(5, dtype=torch.float64)
        w.grad = None
        out.backward(up)
        torch.testing.assert_close(logits.grad, up.view(5, *[1] * len(event)) * grad, rtol=1e-15, atol=1e-15)
        assert torch.allclose(w.grad, 2 * w.detach() * up)


@pytest.mark.parametrize("lead", [(), (3,)], ids=["one sample", "three"])
def test_straight_through_is_the_idiom_below_node_min_and_one_node_from_it(lead):
    """``h`` forward; the surrogate's gradient backward, summed over the sample dimension; both forms the same."""
    from stochgrad.gradient import NODE_MIN, straight_through

    for n in (10, NODE_MIN):
        s = torch.randn(n, dtype=torch.float64, requires_grad=True)
        h = (torch.rand(*lead, n, dtype=torch.float64) < 0.5).double()
        g = torch.randn(*lead, n, dtype=torch.float64)
        out = straight_through(h, s)
        assert torch.equal(out, h) and (type(out.grad_fn).__name__ == "PassThroughBackward") == (n >= NODE_MIN)
        (out * g).sum().backward()
        torch.testing.assert_close(s.grad, g.sum(0) if lead else g, rtol=0, atol=0)


def test_the_overhead_benchmarks_references_compute_the_librarys_gradients():
    """benchmarks/overhead.py's hand-written references (the common idioms of section 1 and the dispatch-saving ones of
    section 1b) compute the gradient stochgrad computes, with the same noise, for every core estimator (three calls:
    the moving baselines hold past losses): the ratios compare the same work."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "overhead.py")
    spec = importlib.util.spec_from_file_location("overhead_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in bench.CORE:
        grads = []
        for kind in ("ours", "common", "tuned"):
            gen = torch.Generator().manual_seed(0)
            a = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
            step = bench.ours(name, gen) if kind == "ours" else bench.reference(name, gen, tuned=kind == "tuned")
            for _ in range(3):
                a.grad = None
                step(a)
            grads.append(a.grad)
        assert grads[0].abs().sum() > 0, name
        for g in grads[1:]:
            torch.testing.assert_close(g, grads[0], rtol=1e-12, atol=1e-12, msg=name)


def test_expect_without_a_named_estimator_uses_the_documented_default():
    """DisARM for Bernoulli units (unbiased, stateless, the least variance per f-evaluation of those), REINFORCE
    for categorical ones (the one stateless unbiased estimator with a single sample)."""
    from stochgrad.expect import DEFAULT_ESTIMATOR

    assert DEFAULT_ESTIMATOR == {"bernoulli": "disarm", "categorical": "reinforce"}
    f = lambda b: (b - 0.45).square().sum(-1)   # noqa: E731
    f_cat = lambda h: (h - 0.45).square().sum((-2, -1))   # noqa: E731
    for logits, dist, name, loss in ((torch.randn(4, 3), None, "disarm", f),
                                     (torch.randn(4, 3, 5), "categorical", "reinforce", f_cat)):
        grads = []
        for est in (None, name):
            a = logits.clone().requires_grad_(True)
            sg.expect(loss, a, est, generator=torch.Generator().manual_seed(0), distribution=dist).sum().backward()
            grads.append(a.grad)
        assert torch.equal(*grads), name
    seen = []
    sg.expect(lambda b: seen.append(b.shape) or f(b), torch.zeros(4, 3, requires_grad=True))
    assert seen[0][0] == 2            # DisARM: one antithetic pair per example


def test_a_misspelt_name_gets_a_suggestion_and_layers_list_what_they_take():
    with pytest.raises(ValueError, match=r"unknown estimator 'disarmm' \(did you mean 'disarm'\?\)"):
        sg.get_estimator("disarmm")
    with pytest.raises(ValueError, match=r"'DisARM' \(did you mean 'disarm'\?\)"):
        sg.expect(lambda b: b.sum(-1), torch.zeros(2, 3, requires_grad=True), "DisARM")
    with pytest.raises(ValueError) as err:
        sg.StochasticCategorical("disarm", categories=4)
    takes = str(err.value).split("takes ")[1]
    assert "learned" not in takes and "reinforce_optimal" in takes and "gumbel_rao" in takes


def test_an_estimator_class_takes_the_distribution_of_the_call():
    """One calling convention: ``estimate(self, f, logits, samples, generator, dist)``, for every estimator; a subclass
    written without ``dist`` is refused when it is defined, with the signature to write."""
    with pytest.raises(TypeError, match=r"estimate\(self, f, logits, samples, generator, dist=BERNOULLI\)"):
        class Old(sg.Estimator):   # noqa: F841
            name = "old"

            def estimate(self, f, logits, samples, generator):
                return f(logits)
    seen = []

    class Probe(sg.Estimator):
        name = "probe"
        distributions = ("bernoulli", "categorical")

        def estimate(self, f, logits, samples, generator, dist=sg.distributions.BERNOULLI):
            seen.append(dist.name)
            return f(dist.sample(dist.probs(logits), (), generator))

    Probe()(lambda h: h.sum(-1), torch.zeros(2, 3))
    Probe()(lambda h: h.sum((-2, -1)), torch.zeros(2, 3, 4), distribution="categorical")
    Probe()(lambda h: h.sum(-1), torch.zeros(2, 3, dtype=torch.bfloat16))
    assert seen == ["bernoulli", "categorical", "bernoulli"]
