"""The network view: layers, the broadcast, local learning, against exact enumeration of both layers."""
import math

import pytest
import torch
from torch import nn

import stochgrad as sg
from stochgrad.exact import all_states, log_prob

E, D_IN, N1, N2, K = 3, 4, 3, 3, 2


def make_net(estimator, seed=0, est2=None):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(D_IN, N1), sg.StochasticBinary(estimator, generator=torch.Generator().manual_seed(1)),
                        nn.Linear(N1, N2), sg.StochasticBinary(est2 or estimator, generator=torch.Generator().manual_seed(2)),
                        nn.Linear(N2, K)).double()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3)
    return net


def data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(E, D_IN, generator=g, dtype=torch.float64), torch.randn(E, K, generator=g, dtype=torch.float64)


def exact_param_grads(net, x, y):
    """Gradient of the mean over examples of E_{h1, h2}[L], enumerating both layers' 2^3 × 2^3 states."""
    lin1, lin2, out = net[0], net[2], net[4]
    s1, s2 = all_states(N1, x), all_states(N2, x)                     # (8, 3)
    a1 = lin1(x)                                                      # (E, N1)
    p1 = log_prob(s1.unsqueeze(1), a1).exp()                          # (8, E)
    a2 = lin2(s1).unsqueeze(1)                                        # (8, 1, N2)
    p2 = log_prob(s2.unsqueeze(1).unsqueeze(1), a2).exp()             # (8_h2, 8_h1, 1)
    L = (out(s2).unsqueeze(1) - y).square().sum(-1)                   # (8_h2, E)
    expected = (p1.unsqueeze(0) * p2 * L.unsqueeze(1)).sum((0, 1))    # (E,)
    params = list(net.parameters())
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(expected.mean(), params)])


def estimated_param_grads(net, x, y, calls, replicas, local=False):
    X, Y = x.repeat(replicas, 1), y.repeat(replicas, 1)
    out = []
    for _ in range(calls):
        net.zero_grad()
        with sg.broadcast(local=local) as graph:
            loss = (net(X) - Y).square().sum(-1)
        graph.backward(loss)
        out.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    return torch.stack(out)


def zscores(est, exact):
    return (est.mean(0) - exact) / (est.std(0) / math.sqrt(est.shape[0])).clamp_min(1e-12)


@pytest.mark.parametrize("local", [False, True])
def test_reinforce_optimal_layers_give_unbiased_parameter_gradients(local):
    net = make_net("reinforce_optimal")
    x, y = data()
    exact = exact_param_grads(net, x, y)
    est = estimated_param_grads(net, x, y, calls=600, replicas=40, local=local)
    z = zscores(est, exact)
    assert z.abs().max() < 4, z


def test_straight_through_layers_show_their_bias():
    net = make_net("straight_through")
    x, y = data()
    exact = exact_param_grads(net, x, y)
    est = estimated_param_grads(net, x, y, calls=300, replicas=40)
    assert zscores(est, exact).abs().max() > 6


def test_mixed_estimators_in_one_network_are_unbiased_where_declared():
    """A reinforce layer below a straight-through layer: the reinforce layer's own weights stay unbiased."""
    net = make_net("reinforce", est2="reinforce_optimal")
    x, y = data()
    exact = exact_param_grads(net, x, y)
    est = estimated_param_grads(net, x, y, calls=600, replicas=40)
    assert zscores(est, exact).abs().max() < 4


def test_learned_layer_beats_straight_through_in_the_network():
    x, y = data()
    net = make_net("learned")
    exact = exact_param_grads(net, x, y)
    estimated_param_grads(net, x, y, calls=300, replicas=40)         # train the predictors
    learned = estimated_param_grads(net, x, y, calls=300, replicas=40)
    st = estimated_param_grads(make_net("straight_through"), x, y, calls=300, replicas=40)
    mse = lambda g: (g - exact).square().sum(1).mean().item()  # noqa: E731
    bias = lambda g: (g.mean(0) - exact).norm().item()  # noqa: E731
    assert mse(learned) < mse(st) and bias(learned) < bias(st)


def test_noisy_rectifier_gradient_matches_the_closed_form():
    """E[max(0, a + z)] = aΦ(a/σ) + σφ(a/σ), whose derivative is Φ(a/σ); of E[h²]: 2E[h]."""
    sigma = 0.7
    a = torch.tensor([-1.0, -0.2, 0.0, 0.5, 1.5], dtype=torch.float64)
    layer = sg.NoisyRectifier(sigma, generator=torch.Generator().manual_seed(0))
    A = a.expand(20000, -1).clone().requires_grad_(True)
    h = layer(A)
    (g1,) = torch.autograd.grad(h.sum(), A, retain_graph=True)
    (g2,) = torch.autograd.grad(h.square().sum(), A)
    u = a / sigma
    Phi, phi = 0.5 * (1 + torch.erf(u / math.sqrt(2))), torch.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    for g, want in [(g1, Phi), (g2, 2 * (a * Phi + sigma * phi))]:
        z = (g.mean(0) - want) / (g.std(0) / math.sqrt(g.shape[0]))
        assert z.abs().max() < 4, z
    layer.eval()
    assert torch.equal(layer(a), torch.relu(a))


@pytest.mark.parametrize("make", [lambda: sg.StochasticBinary("straight_through", generator=torch.Generator().manual_seed(0)),
                                  lambda: sg.NoisyRectifier(1.0, generator=torch.Generator().manual_seed(0)),
                                  lambda: sg.StochasticTimesSmooth(generator=torch.Generator().manual_seed(0))])
def test_firing_rate_control_revives_dead_units(make):
    torch.manual_seed(0)
    lin = nn.Linear(10, 30)
    nn.init.constant_(lin.bias, -12.0)
    x = torch.randn(200, 10)
    controlled, free = sg.FiringRateControl(make(), target=0.1), make()
    for _ in range(300):
        controlled(lin(x))
        free(lin(x))
    with torch.no_grad():
        assert (free(lin(x)) != 0).float().mean() < 0.01          # without the control, dead stays dead
        # each unit's rate over 20 more passes (4000 samples: binomial SE ≈ 0.005), still under control
        rates = torch.stack([(controlled(lin(x)) != 0).float().mean(0) for _ in range(20)]).mean(0)
    assert (rates - 0.1).abs().max() < 0.2 * 0.1, rates              # within ±20% of the target
    assert (controlled.firing_rate() - 0.1).abs().max() < 0.2 * 0.1


def test_firing_rates_hold_while_the_network_trains():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    y = (x[:, :2].sum(-1) > 0).long()
    torch.manual_seed(0)
    hidden = sg.FiringRateControl(sg.StochasticBinary("straight_through", generator=g), target=0.2)
    net = nn.Sequential(nn.Linear(8, 40), hidden, nn.Linear(40, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    first = None
    for step in range(400):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (hidden.firing_rate() - 0.2).abs().max() < 0.2 * 0.2 + 0.02
    assert loss.item() < first


def test_errors_in_the_network_view():
    lin = nn.Linear(3, 4)
    layer = sg.StochasticBinary("reinforce")
    with pytest.raises(RuntimeError, match="needs the loss broadcast"):
        layer(lin(torch.randn(5, 3)))
    with sg.broadcast() as graph:
        out = layer(lin(torch.randn(5, 3))).sum(-1)
    with pytest.raises(ValueError, match="per-example losses of shape \\(batch,\\), got a scalar"):
        graph.backward(out.mean())
    with pytest.raises(ValueError, match="do not match the batch"):
        graph.backward(torch.ones(4))
    with pytest.raises(ValueError, match="cannot be a layer"):
        sg.StochasticBinary("disarm")
    with pytest.raises(ValueError, match="a layer draws one"):
        sg.StochasticBinary("reinforce_loo")
    with pytest.raises(ValueError, match="local=True"):
        with sg.broadcast(local=True):
            sg.StochasticBinary("straight_through")(lin(torch.randn(5, 3)))
    layer.eval()
    assert set(layer(lin(torch.randn(5, 3))).unique().tolist()) <= {0.0, 1.0}
    assert sg.StochasticBinary("reinforce", eval_output="probability").eval()(torch.zeros(2, 3)).eq(0.5).all()


def test_local_learning_is_the_broadcast_formula_alone():
    """local=True: layer 1's weight gradient is exactly mean_k (h_k − σ(a_k)) L_k x_kᵀ, nothing from above."""
    net = make_net("reinforce")
    x, y = data()
    seen = {}
    net[1].register_forward_hook(lambda m, inp, out: seen.update(a=inp[0].detach(), h=out.detach()))
    with sg.broadcast(local=True) as graph:
        loss = (net(x) - y).square().sum(-1)
    graph.backward(loss)
    g = (seen["h"] - torch.sigmoid(seen["a"])) * loss.detach().unsqueeze(-1)
    assert torch.allclose(net[0].weight.grad, g.T @ x / E)
    assert torch.allclose(net[0].bias.grad, g.mean(0))


def local_reference_steps(estimator, steps=4, batch=7, widths=(6, 5, 4, 3), decay=0.9):
    """Per step: the parameter gradients ``broadcast(local=True)`` gives, and those of the autograd route written
    out by hand from the same samples (the same generators): each stochastic layer's logits ``a`` get
    ``(h − σ(a))·(L − c)/B`` by ``autograd.grad``, the output layer the gradient of the mean loss, with ``c`` the
    baseline kept here from past steps alone (0; Corollary 1's bias-corrected moving average; Eq. 7's per-unit
    ``E[(h − σ)² L] / E[(h − σ)²]``)."""
    def build():
        torch.manual_seed(0)
        mods = []
        for i, (n_in, n_out) in enumerate(zip(widths[:-2], widths[1:-1])):
            mods += [nn.Linear(n_in, n_out), sg.StochasticBinary(estimator, generator=torch.Generator().manual_seed(10 + i))]
        return nn.Sequential(*mods, nn.Linear(widths[-2], widths[-1])).double()

    net, ref = build(), build()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(batch, widths[0], generator=g, dtype=torch.float64)
    y = torch.randn(batch, widths[-1], generator=g, dtype=torch.float64)
    units = widths[1:-1]
    ma, weight = 0.0, 0.0
    num, den = [torch.zeros(n, dtype=torch.float64) for n in units], [torch.zeros(n, dtype=torch.float64) for n in units]
    seen = []
    for m in ref:
        if isinstance(m, sg.StochasticBinary):
            m.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out.detach())))
    out = []
    for _ in range(steps):
        net.zero_grad()
        with sg.broadcast(local=True) as graph:
            loss = (net(x) - y).square().sum(-1)
        graph.backward(loss)
        got = [p.grad.clone() for p in net.parameters()]

        seen.clear()
        with sg.broadcast(local=True) as graph:
            L = (ref(x) - y).square().sum(-1)
        graph.discard()
        Ld = L.detach()
        surrogate = L.mean()
        for k, (a, h) in enumerate(seen):
            score = h - torch.sigmoid(a.detach())
            if estimator == "reinforce":
                c = 0.0
            elif estimator == "reinforce_ma":
                c = ma / weight if weight else 0.0
            else:
                c = torch.where(den[k] > 0, num[k] / den[k].clamp_min(1e-300), 0.0)
            grad = score * (Ld.unsqueeze(-1) - c) / batch
            surrogate = surrogate + (grad * a).sum()
            num[k] = decay * num[k] + (1 - decay) * (score.square() * Ld.unsqueeze(-1)).mean(0)
            den[k] = decay * den[k] + (1 - decay) * score.square().mean(0)
        ma, weight = decay * ma + (1 - decay) * Ld.mean().item(), decay * weight + (1 - decay)
        want = torch.autograd.grad(surrogate, list(ref.parameters()))
        out.append((got, want))
    return out


@pytest.mark.parametrize("estimator", ["reinforce", "reinforce_ma", "reinforce_optimal"])
def test_local_gradients_equal_the_autograd_route_written_out(estimator):
    """broadcast(local=True)'s parameter gradients are exactly the broadcast formula through autograd (float64,
    same generators, four steps so that the baselines hold past losses): the fused score (one buffer, multiplied
    in place) and the in-place division by the batch change no number beyond rounding."""
    for got, want in local_reference_steps(estimator):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_plain_local_reference_of_the_benchmark_follows_the_library():
    """benchmarks/local_vs_backprop.py's hand-written local step (the reference its ratios compare against) fills
    the same gradients as broadcast(local=True) with reinforce_optimal layers: same weights, same generators,
    float64, four steps (the baselines hold past losses)."""
    import importlib.util
    import os
    import sys

    here = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
    sys.path.insert(0, here)
    try:
        spec = importlib.util.spec_from_file_location("local_vs_backprop", os.path.join(here, "local_vs_backprop.py"))
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(here)
    gens = lambda: [torch.Generator().manual_seed(20 + i) for i in range(3)]  # noqa: E731
    lib = bench.net("reinforce_optimal", 3, 6, 4, "cpu", gens()).double()
    ref = bench.net("reinforce_optimal", 3, 6, 4, "cpu").double()
    plain = bench.PlainLocal(ref, gens())
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(9, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (9,), generator=g)
    for _ in range(4):
        lib.zero_grad()
        ref.zero_grad()
        with sg.broadcast(local=True) as graph:
            loss = nn.functional.cross_entropy(lib(x), y, reduction="none")
        graph.backward(loss)
        torch.testing.assert_close(plain.loss_and_gradients(x, y), loss.detach(), rtol=1e-12, atol=1e-12)
        for a, b in zip(lib.parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lead", [(), (3,)])
def test_the_sampler_writes_the_threshold_of_its_own_noise(dtype, lead):
    """sampling.bernoulli writes ``1[u < p]`` over its fresh noise (issue 13: one pass, no boolean buffer): the same
    values as the threshold of the same draw (same generator), a buffer of its own, and with a Sharded generator each
    rank's rows of the one-process draw without holding the whole draw."""
    from stochgrad.sampling import Sharded, bernoulli, bernoulli_from_uniform, uniform

    probs = torch.rand(4, 6, generator=torch.Generator().manual_seed(1), dtype=dtype)
    probs[0, :3] = torch.tensor([0.0, 1.0, 0.5], dtype=dtype)
    h = bernoulli(probs, lead, torch.Generator().manual_seed(2))
    want = (uniform((*lead, *probs.shape), probs, torch.Generator().manual_seed(2)) < probs).to(dtype)
    assert h.dtype == dtype and torch.equal(h, want) and h.untyped_storage().nbytes() == h.numel() * h.element_size()
    assert not torch.equal(want, torch.zeros_like(want)) and not torch.equal(want, torch.ones_like(want))
    halves = [bernoulli(probs[2 * r:2 * (r + 1)], lead, Sharded(torch.Generator().manual_seed(2), r, 2)) for r in range(2)]
    assert torch.equal(torch.cat(halves, -2), want)
    assert all(x.untyped_storage().nbytes() == x.numel() * x.element_size() for x in halves)
    assert torch.equal(bernoulli_from_uniform(torch.full_like(probs, 0.5), probs), (0.5 < probs).to(dtype))
    # under torch.func.vmap (no out= there) the same draw and threshold, in a buffer of their own
    torch.manual_seed(7)
    mapped = torch.func.vmap(lambda q: bernoulli(q, lead), randomness="different")(probs)
    torch.manual_seed(7)
    want = torch.func.vmap(lambda q: bernoulli_from_uniform(uniform((*lead, *q.shape), q), q), randomness="different")(probs)
    assert torch.equal(mapped, want)


@pytest.mark.parametrize("name", ["reinforce", "reinforce_ma", "reinforce_optimal", "reinforce_loo"])
def test_a_scale_folded_into_the_centred_loss_is_the_scaled_gradient(name):
    """score_gradient(..., scale=s) (the network view's 1/B, folded into the vectors of L − c instead of a pass over
    the result) equals s·score_gradient(...), and leaves the baseline's state exactly as the unscaled call does."""
    g = torch.Generator().manual_seed(3)
    S = 2 if name == "reinforce_loo" else 1
    probs = torch.rand(5, 4, generator=g, dtype=torch.float64)
    scaled, plain = sg.get_estimator(name), sg.get_estimator(name)
    for _ in range(3):
        h = (torch.rand(S, 5, 4, generator=g, dtype=torch.float64) < probs).double()
        L = torch.randn(S, 5, generator=g, dtype=torch.float64) + 2
        if S == 1:
            h, L = h[0], L[0]
        got = scaled.score_gradient(h, probs, L, scale=1 / 5)
        want = plain.score_gradient(h, probs, L) / 5
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)
        for a, b in zip(scaled.state_dict().values(), plain.state_dict().values()):
            assert torch.equal(a, b)
